"""Helpers for tests and scripts that drive a service or a running stack."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import httpx
from fastapi import FastAPI

from eventkit.envelope import Envelope
from eventkit.kit import ServiceKit
from eventkit.transports import Outgoing, Transport

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what or probe}")
        time.sleep(interval)


async def async_wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what or probe}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running(app: FastAPI, timeout: float = 10.0) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan, wait until it reaches its broker, and give an HTTP client for it."""
    kit: ServiceKit = app.state.kit
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(kit.connected.wait(), timeout)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def under_test(transport: Transport) -> AbstractAsyncContextManager[object]:
    """FastStream's test broker (TestKafkaBroker, TestRabbitBroker) for a broker's transport:
    what is published goes through the real subscribers and handlers, with no broker
    process. The in-process transport needs none."""
    broker_under_test: Callable[[], AbstractAsyncContextManager[None]] | None = getattr(
        transport, "under_test", None
    )
    return broker_under_test() if broker_under_test else contextlib.nullcontext()


async def deliver(transport: Transport, stream: str, event: Envelope) -> None:
    """Publish `event` on `stream`, as the producing service's relay would."""
    await transport.publish(Outgoing.of(stream, event))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
