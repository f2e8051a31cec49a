from eventkit import ServiceSettings


class Settings(ServiceSettings):
    SERVICE_NAME: str = "billing"
    PORT: int = 8004
