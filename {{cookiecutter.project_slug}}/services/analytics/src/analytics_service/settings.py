from eventkit import ServiceSettings


class Settings(ServiceSettings):
    SERVICE_NAME: str = "analytics"
    PORT: int = 8003
