"""`python -m <name>_service` runs the service with uvicorn on its configured port."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from eventkit.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


def serve(create_app: Callable[[S], FastAPI], settings_class: type[S]) -> None:
    settings = settings_class()
    uvicorn.run(create_app(settings), host=settings.HOST, port=settings.PORT, log_config=None)
