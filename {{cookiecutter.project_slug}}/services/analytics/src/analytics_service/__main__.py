from analytics_service.main import create_app
from analytics_service.settings import Settings
from eventkit.runner import serve

serve(create_app, Settings)
