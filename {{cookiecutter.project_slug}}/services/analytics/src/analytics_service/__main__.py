from eventkit.runner import serve

from analytics_service.main import create_app
from analytics_service.settings import Settings

serve(create_app, Settings)
