from eventkit.runner import serve

from billing_service.main import create_app
from billing_service.settings import Settings

serve(create_app, Settings)
