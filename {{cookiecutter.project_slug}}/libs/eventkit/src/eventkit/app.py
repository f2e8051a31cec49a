"""Builds one service's FastAPI app from its settings, the roster and its parts."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from faststream.specification import get_asyncapi_html
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from eventkit import admin, feed, middleware, pause, tracing
from eventkit.db import database_unavailable
from eventkit.deps import Kit
from eventkit.kit import ServiceKit, Worker
from eventkit.logs import configure_logging
from eventkit.roster import Roster
from eventkit.settings import ServiceSettings
from eventkit.subscriptions import Subscriptions
from eventkit.transports import Transport


def create_service(
    settings: ServiceSettings,
    roster: Roster,
    routers: Sequence[APIRouter] = (),
    subscriptions: Subscriptions | None = None,
    *,
    title: str | None = None,
    transport: Transport | None = None,
    replay_subscriptions: Subscriptions | None = None,
    migrations: Path | None = None,
    workers: Sequence[Worker] = (),
) -> FastAPI:
    """The service's app. A consumer gets /dlq and /admin/rebuild; a publisher gets /events.

    By default the title is "<name> service" and the migrations are the `migrations`
    folder beside the module of the settings class (`<name>_service/migrations`); with no
    such folder (eventkit's own tests), the tables are created directly.
    """
    configure_logging(settings.SERVICE_NAME, settings.LOG_LEVEL)
    tracing.setup(
        settings.SERVICE_NAME,
        settings.TRACES_FILE,
        otlp_endpoint=settings.OTEL_EXPORTER_OTLP_ENDPOINT,
        sample_ratio=settings.TRACE_SAMPLE_RATIO,
    )
    title = title or f"{settings.SERVICE_NAME} service"
    kit = ServiceKit(
        settings,
        roster,
        subscriptions,
        transport,
        replay_subscriptions,
        migrations or migrations_beside(settings),
        workers,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await kit.start()
        yield
        await kit.stop()

    # The request span and metrics are eventkit's (middleware.py): FastAPI's own would be a
    # second set, at about a sixth of a request's CPU.
    app = FastAPI(title=title, lifespan=lifespan, telemetry=NO_NATIVE_TELEMETRY)
    app.state.kit = kit
    middleware.install(app, settings.MAX_REQUEST_BODY_BYTES)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.include_router(_platform_routes(title))
    if kit.consumer is not None:
        app.include_router(admin.router)
    if kit.spec.publishes:
        app.include_router(feed.router)
    for router in routers:
        app.include_router(router)
    return app


# Where a database that does not answer shows: SQLAlchemy's errors, or the socket's own.
DATABASE_ERRORS = (SQLAlchemyError, OSError)
NO_NATIVE_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A database that does not answer (eventkit.db.database_unavailable) is not the
    request's fault, nor a bug: 503, so clients and load balancers retry. Anything else
    goes on to be a 500."""
    if not database_unavailable(exc):
        raise exc
    detail = f"the database does not answer ({type(exc).__name__}); try again shortly"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})


def migrations_beside(settings: ServiceSettings) -> Path | None:
    module = sys.modules[type(settings).__module__]
    folder = Path(module.__file__ or ".").parent / "migrations"
    return folder if (folder / "env.py").exists() else None


def _platform_routes(title: str) -> APIRouter:
    router = APIRouter(tags=["platform"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(kit: Kit) -> JSONResponse:
        states = await kit.readiness()
        failed = kit.needs(states)
        if failed:
            detail = f"not ready: {', '.join(failed)} not answering"
            return JSONResponse({"detail": detail, "failed": failed, **states}, status_code=503)
        # Said, not failed on: every replica shares it, and a rebuild must reach one to cure it.
        read_model = {"read_model": await _read_model_state(kit)} if kit.consumer else {}
        return JSONResponse({"status": "ready", **states, **read_model})

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/asyncapi")
    async def asyncapi(kit: Kit) -> dict[str, Any]:
        return kit.transport.asyncapi(title)

    @router.get("/asyncapi.html", response_class=HTMLResponse, include_in_schema=False)
    async def asyncapi_html(kit: Kit) -> HTMLResponse:
        """FastStream's page for the same document (its script renders it in the browser)."""
        document = AsyncAPIDocument(kit.transport.asyncapi(title))
        return HTMLResponse(get_asyncapi_html(document, try_it_out_path=None))

    return router


async def _read_model_state(kit: ServiceKit) -> str:
    """`whole`, or why the read routes answer 503 (a rebuild running, or one that failed)."""
    try:
        return await pause.unavailable(kit.db) or pause.WHOLE
    except Exception:  # the database went away since readiness looked
        return "unknown: the database did not answer"


@dataclass(frozen=True)
class AsyncAPIDocument:
    """A transport's AsyncAPI document as FastStream's Specification protocol: what
    get_asyncapi_html reads (`title`, `to_json`)."""

    document: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.document["info"]["title"])

    def to_jsonable(self) -> Any:
        return self.document

    def to_json(self) -> str:
        return json.dumps(self.document)

    def to_yaml(self) -> str:
        return self.to_json()  # JSON is YAML
