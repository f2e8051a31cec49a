"""Builds one service's FastAPI app from its settings, the roster and its parts."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from faststream.specification import get_asyncapi_html
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventkit import admin, feed, middleware, tracing
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

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.kit = kit
    middleware.install(app)
    app.include_router(_platform_routes(title))
    if kit.consumer is not None:
        app.include_router(admin.router)
    if kit.spec.publishes:
        app.include_router(feed.router)
    for router in routers:
        app.include_router(router)
    return app


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
        return JSONResponse({"status": "ready", **states})

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
