"""`python -m <name>_service` runs the service with uvicorn on its configured port."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from eventkit.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

# How long an idle HTTP connection stays open: longer than the idle gaps of clients and of
# the proxies in front (load balancers keep theirs 60 s). With uvicorn's 5 s, a client that
# reused a connection just as the server closed it lost that request (a POST is not retried).
KEEP_ALIVE_SECONDS = 65


def serve(create_app: Callable[[S], FastAPI], settings_class: type[S]) -> None:
    settings = settings_class()
    uvicorn.run(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        log_config=None,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
