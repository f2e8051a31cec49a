from contracts import ROSTER
from eventkit import ServiceSettings

SERVICE = "user"


class Settings(ServiceSettings):
    SERVICE_NAME: str = SERVICE
    PORT: int = ROSTER.service(SERVICE).port
