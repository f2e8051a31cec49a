from eventkit import ServiceSettings


class Settings(ServiceSettings):
    SERVICE_NAME: str = "notification"
    PORT: int = 8002
