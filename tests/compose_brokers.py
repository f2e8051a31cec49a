"""Each broker as the generated compose file runs it: one place for what the compose tests
(test_compose, test_compose_run) know a broker's container by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComposeBroker:
    service: str  # its compose service, which every app service depends on
    image: str  # its image repository (a key of tests/standin_images.py's KINDS)
    broker_url: str  # the services' BROKER_URL, as a regular expression
    extras: frozenset[str]  # what profile observability adds for it beside Prometheus, Grafana
    ui: tuple[str, int] | None  # the compose service and port of its browser UI
    backlog: tuple[str, str] | None  # the target of Prometheus' job `broker` (host, port)
    # Whatever image runs it, a restart of its container loses its topics and queues.
    in_memory: bool


COMPOSE_BROKERS = {
    "kafka": ComposeBroker(
        service="kafka",
        image="apache/kafka",
        broker_url="kafka:9092",
        extras=frozenset({"kafka-exporter", "kafka-ui"}),
        ui=("kafka-ui", 8080),
        backlog=("kafka-exporter", "9308"),
        in_memory=False,
    ),
    "rabbitmq": ComposeBroker(
        service="rabbitmq",
        image="rabbitmq",
        broker_url=r"amqp://[^:]+:[^@]+@rabbitmq:5672/",
        extras=frozenset(),
        ui=("rabbitmq", 15672),
        backlog=("rabbitmq", "15692"),
        in_memory=False,
    ),
    # moto (motoserver/moto) stands for SNS + SQS: no metrics (a queue's depth is CloudWatch's
    # on AWS), everything in memory; docs/broker.md lists its endpoint, published on 4566.
    "sqs": ComposeBroker(
        service="moto",
        image="motoserver/moto",
        broker_url="http://moto:4566",
        extras=frozenset(),
        ui=("moto", 4566),
        backlog=None,
        in_memory=True,
    ),
}
