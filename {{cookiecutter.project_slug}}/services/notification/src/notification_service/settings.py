from eventkit import ServiceSettings


class Settings(ServiceSettings):
    SERVICE_NAME: str = "notification"
    PORT: int = 8002
    # Unset: messages go to the log. Docker compose points this at Mailpit.
    SMTP_HOST: str | None = None
    SMTP_PORT: int = 1025
    SMTP_FROM: str = "notifications@example.com"
