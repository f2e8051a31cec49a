"""Wires one service together: database, broker, outbox relay, subscribers and the HTTP app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import broker
from eventkit.consumer import Consumer, Pipeline, RetryPolicy
from eventkit.db import Database
from eventkit.envelope import Envelope
from eventkit.events import PRODUCERS
from eventkit.logs import configure_logging
from eventkit.migrations import upgrade_async
from eventkit.outbox import OutboxRelay
from eventkit.settings import ServiceSettings
from eventkit.transport import Transport

log = logging.getLogger(__name__)


class ServiceKit:
    """What a running service holds; reachable from routes as `request.app.state.kit`."""

    def __init__(
        self,
        settings: ServiceSettings,
        consumer: Consumer | None = None,
        transport: Transport | None = None,
        replay_consumer: Consumer | None = None,
        read_models: Sequence[type[Any]] = (),
        migrations: Path | None = None,
    ) -> None:
        self.settings = settings
        self.migrations = migrations
        self.db = Database(settings.database_url)
        self.transport: Transport = transport or broker.BrokerTransport(
            broker.config_from_settings(settings)
        )
        self.relay = OutboxRelay(self.db, self.transport, settings.OUTBOX_POLL_SECONDS)
        retry = RetryPolicy(
            settings.MAX_RETRIES, settings.RETRY_BACKOFF_SECONDS, settings.RETRY_BACKOFF_MAX_SECONDS
        )
        self.pipeline = Pipeline(consumer, self.db, self.transport, retry) if consumer else None
        replay_consumer = replay_consumer or consumer
        self.replay_pipeline = (
            Pipeline(replay_consumer, self.db, self.transport, retry) if replay_consumer else None
        )
        self.read_models = list(read_models)
        for stream, producer in PRODUCERS.items():
            if producer == settings.SERVICE_NAME:
                self.transport.declare_publisher(stream)
        self.connected = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work; events added to the outbox in it leave right after the commit."""
        async with self.db.transaction() as session:
            yield session
        self.relay.wake()

    async def publish_message(self, stream: str, event: Envelope, *, key: str = "") -> None:
        """Publish directly, bypassing the outbox (replays and tools; services use the outbox)."""
        await self.transport.publish(stream, event.to_bytes(), key=key, event_type=event.type)

    async def start(self) -> None:
        if self.migrations is not None:
            await upgrade_async(self.settings.database_url, self.migrations)
        else:  # no migration history (eventkit's own tests): create the tables directly
            await self.db.create_all()
        if self.pipeline is not None:
            self.pipeline.attach()
        self._connector = asyncio.create_task(self._connect(), name="broker-connect")

    async def _connect(self) -> None:
        """Keep trying the broker so HTTP comes up (and /ready explains) while it is down."""
        delay = 0.5
        while True:
            try:
                await self.transport.start()
                break
            except Exception as exc:  # the broker is not there yet
                log.warning("broker not reachable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.connected.set()
        self.relay.start()
        log.info("connected to the %s broker", broker.BROKER_KIND)
        self._watchdog = asyncio.create_task(self._watch_broker(), name="broker-watchdog")

    async def _watch_broker(self, every: float = 1.0) -> None:
        """Notice outages; when the broker is back, let it recover, then resend recent events."""
        down_since: datetime | None = None
        while True:
            await asyncio.sleep(every)
            try:
                up = await self.transport.ping()
            except Exception:
                up = False
            if not up and down_since is None:
                down_since = datetime.now(UTC)
                log.warning("broker unreachable; events wait in the outbox")
            elif up and down_since is not None:
                try:
                    await self.transport.recover()
                except Exception:
                    log.warning("broker back but not recovered yet", exc_info=True)
                    continue
                since = down_since - timedelta(seconds=self.settings.OUTBOX_RESEND_SECONDS)
                resent = await self.relay.resend_since(since)
                log.info("broker back; resending %d events sent since %s", resent, since)
                # A send that was stuck in the outage may complete after that: once more.
                await asyncio.sleep(5 * every)
                await self.relay.resend_since(down_since)
                down_since = None

    async def stop(self) -> None:
        for task in (self._connector, self._watchdog):
            if task is not None:
                task.cancel()
        await self.relay.stop()
        if self.connected.is_set():
            await self.transport.stop()
        await self.db.dispose()

    async def readiness(self) -> list[str]:
        """Names of the dependencies that do not answer."""
        failed = []
        try:
            await asyncio.wait_for(self.db.ping(), timeout=2.0)
        except Exception:
            failed.append("database")
        if not self.connected.is_set() or not await self.transport.ping():
            failed.append("broker")
        return failed


def create_service(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[APIRouter] = (),
    consumer: Consumer | None = None,
    transport: Transport | None = None,
    replay_consumer: Consumer | None = None,
    read_models: Sequence[type[Any]] = (),
    event_feed: bool = False,
    migrations: Path | None = None,
) -> FastAPI:
    """The service's app. A consumer gets /dlq and /admin/rebuild; a publisher gets /events."""
    from eventkit import admin, feed, middleware, tracing  # they import Kit from here

    configure_logging(settings.SERVICE_NAME, settings.LOG_LEVEL)
    tracing.setup(settings.SERVICE_NAME, settings.TRACES_FILE)
    kit = ServiceKit(settings, consumer, transport, replay_consumer, read_models, migrations)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await kit.start()
        yield
        await kit.stop()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.kit = kit
    middleware.install(app)
    app.include_router(_platform_routes(title))
    if consumer is not None:
        app.include_router(admin.router)
    if event_feed:
        app.include_router(feed.router)
    for router in routers:
        app.include_router(router)
    return app


def get_kit(request: Request) -> ServiceKit:
    kit: ServiceKit = request.app.state.kit
    return kit


Kit = Annotated[ServiceKit, Depends(get_kit)]
"""Route parameter type that gives a handler its service's kit."""


def _platform_routes(title: str) -> APIRouter:
    router = APIRouter(tags=["platform"])

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        failed = await get_kit(request).readiness()
        if failed:
            return JSONResponse(
                {"detail": f"not ready: {', '.join(failed)} not answering", "failed": failed},
                status_code=503,
            )
        return JSONResponse({"status": "ready"})

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/asyncapi")
    async def asyncapi(request: Request) -> dict[str, Any]:
        return get_kit(request).transport.asyncapi(title)

    return router
