from eventkit.runner import serve
from notification_service.main import create_app
from notification_service.settings import Settings

serve(create_app, Settings)
