from eventkit import ServiceSettings


class Settings(ServiceSettings):
    SERVICE_NAME: str = "user"
    PORT: int = 8001
