from contracts import ROSTER
from eventkit import ServiceSettings

SERVICE = "notification"


class Settings(ServiceSettings):
    SERVICE_NAME: str = SERVICE
    PORT: int = ROSTER.service(SERVICE).port
    # Unset: messages go to the log. Docker compose points this at Mailpit.
    SMTP_HOST: str | None = None
    SMTP_PORT: int = 1025
    SMTP_FROM: str = "notifications@example.com"
