"""The shape of a roster: the services of a system, their ports and the streams they use.

The project's `contracts` package fills one in; everything that needs to know which
services exist (the services, scripts, tests, generated deployment files) reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from eventkit.registry import EventRegistry


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int  # where it listens on the host; in containers every service listens on 8000
    publishes: tuple[str, ...] = ()
    subscribes: tuple[str, ...] = ()

    @property
    def url_setting(self) -> str:
        """The one setting that says where this service answers: `<NAME>_URL`."""
        return f"{self.name.upper()}_URL"


@dataclass(frozen=True)
class Roster:
    services: tuple[ServiceSpec, ...]
    events: EventRegistry

    def __post_init__(self) -> None:
        for stream in {s for spec in self.services for s in spec.subscribes}:
            self.producer(stream)  # every subscribed stream has exactly one publisher

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.services]

    @property
    def streams(self) -> list[str]:
        return [stream for spec in self.services for stream in spec.publishes]

    @property
    def consumers(self) -> list[ServiceSpec]:
        return [spec for spec in self.services if spec.subscribes]

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(f"no service {name!r} in the roster; known: {', '.join(self.names)}")

    def producer(self, stream: str) -> ServiceSpec:
        """The one service that publishes `stream` (and serves its feed)."""
        found = [spec for spec in self.services if stream in spec.publishes]
        if len(found) != 1:
            raise ValueError(f"stream {stream!r} needs exactly one publisher, has {len(found)}")
        return found[0]

    def subscribers(self, stream: str) -> list[ServiceSpec]:
        return [spec for spec in self.services if stream in spec.subscribes]

    def url(self, name: str, environ: Mapping[str, str] = os.environ) -> str:
        """Where service `name` answers: `<NAME>_URL`, else localhost on its roster port."""
        spec = self.service(name)
        return (environ.get(spec.url_setting) or f"http://127.0.0.1:{spec.port}").rstrip("/")


def dead_letter_stream(service: str) -> str:
    """Where `service` parks what it gave up on: a Kafka topic or RabbitMQ queue."""
    return f"dlq.{service}"


def stream_subscription(service: str, stream: str) -> str:
    """What `service` reads `stream` through: its RabbitMQ queue, or its Kafka consumer group
    (one group per stream, so each group's members all read the same topic)."""
    return f"{service}.{stream}"


def retry_stream(service: str, delay: float) -> str:
    """Where `service`'s failed events wait `delay` seconds: a Kafka topic or RabbitMQ queue."""
    return f"retry.{service}.{round(delay * 1000)}ms"


def retry_subscription(service: str) -> str:
    """The Kafka consumer group that reads all of `service`'s retry topics (`retry_stream`)."""
    return f"{service}.retries"
