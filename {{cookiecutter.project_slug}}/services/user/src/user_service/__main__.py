from eventkit.runner import serve
from user_service.main import create_app
from user_service.settings import Settings

serve(create_app, Settings)
