from pydantic import Field

from contracts import ROSTER
from eventkit import ServiceSettings

SERVICE = "notification"


class Settings(ServiceSettings):
    SERVICE_NAME: str = SERVICE
    PORT: int = ROSTER.service(SERVICE).port
    SMTP_HOST: str | None = Field(
        None, description="Unset: emails go to the log. Docker compose points it at Mailpit."
    )
    SMTP_PORT: int = Field(1025, description="The SMTP server's port.")
    SMTP_FROM: str = Field("notifications@example.com", description="The sender of every email.")
