from contracts import ROSTER
from eventkit import ServiceSettings

SERVICE = "analytics"


class Settings(ServiceSettings):
    SERVICE_NAME: str = SERVICE
    PORT: int = ROSTER.service(SERVICE).port
