"""Amazon SNS + SQS transport on aiobotocore.

Topology (all FIFO, all declared by `start()`, idempotently):

* a stream is an SNS FIFO topic `sqs_name(stream)` (`orders.events` -> `orders-events.fifo`);
  a message's MessageGroupId is its key (aggregate id), its MessageDeduplicationId fresh
  for each publish (`deduplication_id`), and its event type travels as the `event-type`
  message attribute;
* each consuming service has one SQS FIFO queue per stream it reads,
  `sqs_name(stream_subscription(service, stream))`, subscribed to the topic with raw
  message delivery (the body arrives as published, the headers as SQS message
  attributes) and, when the handler names event types, a filter policy on `event-type`
  (as RabbitMQ binds by type);
* each service has one retry queue `sqs_name("retry.<service>")` and one dead-letter
  queue `sqs_name(dlq.<service>)`; every queue of the service redrives into the latter
  after `delivery_limit` receives (RabbitMQ's DELIVERY_LIMIT).

Consumption: one task per queue long-polls (WaitTimeSeconds, 5 s by default: an idle
queue costs one request per 5 s) for up to 10 messages (more, without waiting, up to
`batch_size` while full), hands them to the handler, keeps them invisible while it runs,
and deletes them in a batch once it returns. If it raises, the messages are kept hidden
for `handback_seconds`, then made visible at once (`_hand_back` says why not by a timeout),
and come back in order: a FIFO queue hands out none of a message group's later messages
while one is in flight, which also keeps an aggregate's order when several replicas poll
the same queue (no single active consumer is needed, unlike RabbitMQ; moto 5.2.6 does not
hold to this when two receives overlap).

Retries: `publish_retry` sends the message, with its new headers, to the service's retry
queue with the stream and the time it is due as attributes. The retry poller hands due
messages to their stream's handler; one not yet due is made invisible until it is
(ChangeMessageVisibility): SQS holds it meanwhile, and FIFO queues take no per-message
DelaySeconds. (The original message's visibility is not used: `publish_retry` gets no
receipt handle, is called for messages never received here, and its headers change each
time while SQS message attributes cannot.)

Where it answers: BROKER_URL is the one endpoint of SNS and SQS (moto_server or LocalStack;
unset: LOCAL_URL); BROKER_URL=aws means AWS's own endpoints in AWS_REGION. Credentials are
never settings: the standard AWS chain (environment, profile, web identity, instance or task
role) supplies them; a local endpoint with none in the chain gets a placeholder pair.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from pydantic import Field
from pydantic_settings import BaseSettings

from eventkit.roster import dead_letter_stream, stream_subscription
from eventkit.settings import SETTINGS_SOURCES, ServiceSettings, default
from eventkit.transports import (
    BatchHandler,
    Delivery,
    DeliveryConfig,
    EventTypes,
    Outcome,
    Outgoing,
    delivery_from_settings,
)
from eventkit.transports.memory import MemoryConfig, MemoryTransport

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sns.type_defs import (
        MessageAttributeValueTypeDef as SnsAttribute,
    )
    from types_aiobotocore_sns.type_defs import PublishBatchRequestEntryTypeDef
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        MessageAttributeValueTypeDef as SqsAttribute,
    )
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

# Message attributes this transport sets (headers keep their own names).
EVENT_TYPE_ATTRIBUTE = "event-type"  # what filter policies match; eventkit's consumer reads it
KEY_ATTRIBUTE = "aggregate-id"  # the key, as RabbitMQ's adapter sends it
STREAM_ATTRIBUTE = "x-stream"  # the stream a message belongs to: retries and replays use it
DUE_ATTRIBUTE = "x-retry-due"  # a retry's due time, seconds since the epoch
ENCODING_ATTRIBUTE = "x-body-encoding"  # "base64" for a body SNS/SQS cannot carry as text
PACKED_ATTRIBUTE = "x-headers"  # headers past the 10-attribute limit, as one JSON object
# Not handed to handlers: only this transport reads them.
INTERNAL_ATTRIBUTES = {DUE_ATTRIBUTE, ENCODING_ATTRIBUTE, PACKED_ATTRIBUTE}
# Kept as attributes of their own when a message has more headers than fit.
FIRST_ATTRIBUTES = (
    EVENT_TYPE_ATTRIBUTE,
    STREAM_ATTRIBUTE,
    DUE_ATTRIBUTE,
    ENCODING_ATTRIBUTE,
    "x-attempts",
    "x-error",
    KEY_ATTRIBUTE,
)

MAX_ATTRIBUTES = 10  # SNS and SQS: message attributes per message
MAX_BATCH_ENTRIES = 10  # PublishBatch, SendMessageBatch, DeleteMessageBatch, ReceiveMessage
MAX_PAYLOAD_BYTES = 256 * 1024  # one message, and one PublishBatch request in all
MAX_VISIBILITY_SECONDS = 43_200  # 12 h
NO_KEY_GROUP = "no-key"  # the MessageGroupId of messages without a key
NAME_LIMIT = 80  # SQS queue names (SNS topics allow 256); both with the .fifo suffix
ATTRIBUTE_NAME = re.compile(r"^(?!aws\.|amazon\.)[A-Za-z0-9_\-.]{1,256}$", re.IGNORECASE)
# What SNS and SQS accept in a text body (XML 1.0's characters)
TEXT_BODY = re.compile(r"^[\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")
MESSAGE_GROUP_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # alphanumerics and punctuation


def sqs_name(name: str) -> str:
    """The SNS topic or SQS queue name of an eventkit stream, queue or dead-letter name.

    The one naming rule: FIFO names end in `.fifo`, and SNS and SQS allow only
    alphanumerics, hyphens and underscores before it, so every other character becomes a
    hyphen (`orders.events` -> `orders-events.fifo`, `dlq.shipping` -> `dlq-shipping.fifo`).
    `orders.events` and `orders-events` therefore share a topic: a roster must not hold both.
    A name past SQS's 80 characters is cut and ends in a hash of the whole.
    """
    base = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    room = NAME_LIMIT - len(".fifo")
    if len(base) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        base = f"{base[: room - 9]}-{digest}"
    return f"{base}.fifo"


def retry_queue_name(service: str) -> str:
    """`service`'s one retry queue (Kafka and RabbitMQ have one per delay)."""
    return sqs_name(f"retry.{service}")


def group_id(key: str) -> str:
    """The MessageGroupId of `key`: the key itself when SQS allows it, else its hash."""
    if not key:
        return NO_KEY_GROUP
    if MESSAGE_GROUP_ID.match(key):
        return key
    return "sha256-" + hashlib.sha256(key.encode()).hexdigest()[:64]


def deduplication_id() -> str:
    """A MessageDeduplicationId of its own for each publish, never the event id.

    The relay sends an event again only on purpose: its confirm was lost, or the broker
    lost what it had. A FIFO topic drops a publish whose id it took in the last 5 minutes,
    so a resend under the event id is lost where it is needed: a read model rebuilt
    meanwhile left that event to the broker, and its aggregate's later events waited for it
    until they were dead-lettered (simulation seed 572377254). Consumers drop duplicates
    by the event id (the inbox); a request botocore sends again keeps its id.
    """
    return uuid.uuid4().hex


def encode_body(body: bytes) -> tuple[str, dict[str, str]]:
    """A body as SNS/SQS text: as it is when it is text they take, else base64 (and an
    attribute saying so)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and TEXT_BODY.match(text):
        return text, {}
    return base64.b64encode(body).decode(), {ENCODING_ATTRIBUTE: "base64"}


def encode_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as at most 10 message attributes (the limit of SNS and SQS).

    Each header is an attribute of its own while they fit and its name and value are ones
    SQS takes (non-empty); otherwise the `FIRST_ATTRIBUTES` keep theirs and the rest go,
    as one JSON object, into `x-headers`.
    """
    plain = {k: v for k, v in headers.items() if ATTRIBUTE_NAME.match(k) and v}
    if len(plain) == len(headers) and len(plain) <= MAX_ATTRIBUTES:
        return dict(plain)
    kept = {k: plain[k] for k in FIRST_ATTRIBUTES if k in plain}
    rest = {k: v for k, v in headers.items() if k not in kept}
    return {**kept, PACKED_ATTRIBUTE: json.dumps(rest, separators=(",", ":"))}


def decode_message(message: MessageTypeDef) -> tuple[bytes, dict[str, str]]:
    """A received message's body and all its headers (internal ones included)."""
    headers = {
        name: value.get("StringValue", "")
        for name, value in message.get("MessageAttributes", {}).items()
    }
    if PACKED_ATTRIBUTE in headers:
        headers = {**json.loads(headers.pop(PACKED_ATTRIBUTE)), **headers}
    text = message.get("Body", "")
    if headers.get(ENCODING_ATTRIBUTE) == "base64":
        return base64.b64decode(text), headers
    return text.encode(), headers


def _sns_attributes(headers: Mapping[str, str]) -> dict[str, SnsAttribute]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in headers.items()}


def _sqs_attributes(headers: Mapping[str, str]) -> dict[str, SqsAttribute]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in headers.items()}


def _public(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in INTERNAL_ATTRIBUTES}


def _through_codec(handler: BatchHandler) -> BatchHandler:
    """`handler`, given each message as SQS would: encoded as attributes and decoded."""

    async def decoded(batch: Sequence[Delivery]) -> None:
        received: list[Delivery] = []
        for body, headers in batch:
            text, extra = encode_body(body)
            attributes = encode_headers({**headers, **extra})
            message: MessageTypeDef = {
                "Body": text,
                "MessageAttributes": {
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                },
            }
            decoded_body, decoded_headers = decode_message(message)
            received.append((decoded_body, _public(decoded_headers)))
        await handler(received)

    return decoded


# Where SNS and SQS answer on a developer's machine when BROKER_URL is unset: a moto_server
# (or LocalStack) that `make local-up` starts. 4566 is LocalStack's edge port, so either
# emulator answers on the same URL; moto's own default, 5000, is often taken by other dev
# servers (Flask's default, macOS's AirPlay receiver).
LOCAL_URL = "http://localhost:4566"
# BROKER_URL's value for AWS itself: the regional endpoints of SNS and SQS (two hosts, which
# one URL cannot name).
AWS = "aws"


class SqsSettings(BaseSettings):
    """SNS and SQS settings, read where ServiceSettings reads its own (the environment, .env).

    Credentials are not among them: the standard AWS chain supplies those.
    """

    model_config = SETTINGS_SOURCES

    AWS_REGION: str = Field(
        "us-east-1",
        description="SNS/SQS: the AWS region of the service's topics and queues (AWS's own "
        "variable; any value does for moto_server or LocalStack).",
    )
    SQS_VISIBILITY_TIMEOUT_SECONDS: int = Field(
        30,
        ge=1,
        le=43_200,
        description="SNS/SQS: how long a received message stays hidden from other receivers; "
        "renewed every half of it while its handler runs.",
    )
    SQS_WAIT_TIME_SECONDS: int = Field(
        5,
        ge=0,
        le=20,
        description="SNS/SQS: long-poll wait of each receive; an idle queue costs one request "
        "per wait, and a service that stops waits for its receives to end.",
    )
    DELIVERY_LIMIT: int = Field(
        20,
        ge=1,
        description="SNS/SQS: receives of a message handed back unapplied (its consumer "
        "crashed on it) before SQS moves it to the dead-letter queue (maxReceiveCount).",
    )
    SQS_HANDBACK_SECONDS: int = Field(
        1,
        ge=0,
        le=43_200,
        description="SNS/SQS: a batch whose handler raised is received again after this many "
        "seconds.",
    )
    DEAD_LETTER_RETENTION_SECONDS: int = Field(
        1_209_600,
        ge=60,
        le=1_209_600,
        description="SNS/SQS: how long the dlq-<service>.fifo queue keeps a dead letter "
        "(SQS's longest: 14 days).",
    )


BROKER_SETTINGS = SqsSettings  # this adapter's settings, under the name every adapter uses


@dataclass
class SqsConfig(DeliveryConfig):
    """`SqsConfig(service="shipping", endpoint_url="http://127.0.0.1:4566")`.

    Credentials come from the standard AWS chain (environment, profile, instance role).
    """

    service: str
    region: str = default("AWS_REGION", SqsSettings)
    # Empty: AWS's own endpoints. Else one URL for SNS and SQS (moto, LocalStack).
    endpoint_url: str = ""
    # How long a received message stays hidden before it is handed out again; renewed
    # while its handler runs.
    visibility_timeout: int = default("SQS_VISIBILITY_TIMEOUT_SECONDS", SqsSettings)
    # Long-poll wait of each ReceiveMessage (0-20 s): an idle queue costs one request each.
    wait_time_seconds: int = default("SQS_WAIT_TIME_SECONDS", SqsSettings)
    # Receives of one message after which SQS moves it to the dead letters (maxReceiveCount).
    delivery_limit: int = default("DELIVERY_LIMIT", SqsSettings)
    # After a handler raised, its batch is handed out again after this many seconds.
    handback_seconds: int = default("SQS_HANDBACK_SECONDS", SqsSettings)
    # Dead letters are kept this long (SQS's maximum, 14 days).
    dead_letter_retention_seconds: int = default("DEAD_LETTER_RETENTION_SECONDS", SqsSettings)
    # Each hand-back counts towards delivery_limit, as on RabbitMQ: hold batches long.
    batch_hold_seconds: float = field(default=600.0, kw_only=True)

    @property
    def dead_letters(self) -> str:
        """eventkit's name (`dlq.<service>`); the queue is `sqs_name(dead_letters)`."""
        return self.dead_letter_topic or dead_letter_stream(self.service)


def endpoint_of(broker_url: str) -> str:
    """SqsConfig.endpoint_url for BROKER_URL: "" (AWS's own endpoints) for `aws`."""
    return "" if broker_url.strip().lower() == AWS else broker_url.strip()


def config_from_settings(settings: ServiceSettings, sqs: SqsSettings | None = None) -> SqsConfig:
    """`sqs`: unset, read from the environment."""
    sqs = sqs or SqsSettings()
    return SqsConfig(
        service=settings.SERVICE_NAME,
        region=sqs.AWS_REGION,
        endpoint_url=endpoint_of(settings.broker_url),
        visibility_timeout=sqs.SQS_VISIBILITY_TIMEOUT_SECONDS,
        wait_time_seconds=sqs.SQS_WAIT_TIME_SECONDS,
        delivery_limit=sqs.DELIVERY_LIMIT,
        handback_seconds=sqs.SQS_HANDBACK_SECONDS,
        dead_letter_retention_seconds=sqs.DEAD_LETTER_RETENTION_SECONDS,
        **delivery_from_settings(settings),
    )


def from_settings(settings: ServiceSettings) -> SqsTransport:
    return SqsTransport(config_from_settings(settings))


@dataclass(frozen=True)
class DeadLetter:
    """A message in the service's dead-letter queue, as `list_dead_letters` shows it."""

    body: bytes
    headers: dict[str, str]
    stream: str  # "" when unknown
    reason: str  # the consumer's x-error, or why SQS moved it
    attempts: int  # the consumer's x-attempts, else SQS's receive count
    receive_count: int


@dataclass
class _Subscription:
    stream: str
    handler: BatchHandler
    types: tuple[str, ...] | None
    description: str


@dataclass
class _Publication:
    stream: str
    description: str
    subscribers: tuple[str, ...]


class SqsTransport:
    """eventkit's Transport on SNS FIFO topics and SQS FIFO queues (module docstring)."""

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self._subscriptions: dict[str, _Subscription] = {}
        self._publications: dict[str, _Publication] = {}
        self._topic_arns: dict[str, str] = {}
        self._queue_urls: dict[str, str] = {}
        self._exit = contextlib.AsyncExitStack()
        self._sns: SNSClient | None = None
        self._sqs: SQSClient | None = None
        self._pollers: list[asyncio.Task[None]] = []
        self._receiving: set[asyncio.Task[Any] | None] = set()  # pollers in a long poll
        self._handbacks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._inline: MemoryTransport | None = None  # under_test(): no endpoint

    # --- declaring -----------------------------------------------------------------------

    def subscribe(
        self, stream: str, handler: BatchHandler, *, types: EventTypes = None, description: str = ""
    ) -> None:
        """Read `stream` (of `types`, if given) into `handler`; before start()."""
        self._subscriptions[stream] = _Subscription(
            stream, handler, tuple(sorted(types)) if types else None, description
        )

    def declare_publisher(
        self, stream: str, *, description: str = "", subscribers: Collection[str] = ()
    ) -> None:
        """Publish `stream`; `subscribers` get their queues now, so SNS (which drops what no
        subscription takes) keeps what is published before they first start."""
        self._publications[stream] = _Publication(stream, description, tuple(subscribers))

    @property
    def sns(self) -> SNSClient:
        if self._sns is None:
            raise RuntimeError("SqsTransport is not started")
        return self._sns

    @property
    def sqs(self) -> SQSClient:
        if self._sqs is None:
            raise RuntimeError("SqsTransport is not started")
        return self._sqs

    @contextlib.asynccontextmanager
    async def under_test(self) -> AsyncIterator[None]:
        """For unit tests, as FastStream's test brokers are for the other adapters: no
        endpoint; what is published goes inline, through this adapter's message encoding
        and its filter by type, to the subscribed handlers. SNS and SQS themselves are
        tested against moto_server (test_transport_sqs.py and the contract test)."""
        self._inline = MemoryTransport(MemoryConfig(service=self.config.service))
        try:
            yield
        finally:
            self._inline = None

    async def start(self) -> None:
        """Connect, declare the topology (idempotent), then start polling."""
        self._stopping = False
        if self._inline:
            for subscription in self._subscriptions.values():
                self._inline.subscribe(
                    subscription.stream,
                    _through_codec(subscription.handler),
                    types=subscription.types,
                )
            return await self._inline.start()
        session = get_session()
        options: dict[str, Any] = {
            "region_name": self.config.region,
            # Long polls must outlast WaitTimeSeconds; a few quick retries on throttling.
            "config": BotoConfig(
                read_timeout=self.config.wait_time_seconds + 10,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        }
        if self.config.endpoint_url:
            options["endpoint_url"] = self.config.endpoint_url
            if await session.get_credentials() is None:
                # A local endpoint (moto_server, LocalStack) takes any key; AWS never sees these.
                options.update(aws_access_key_id="local", aws_secret_access_key="local")
        try:
            self._sns = await self._exit.enter_async_context(
                session.create_client("sns", **options)
            )
            self._sqs = await self._exit.enter_async_context(
                session.create_client("sqs", **options)
            )
            await self._declare()
        except BaseException:
            await self.stop()
            raise
        for stream, subscription in self._subscriptions.items():
            url = self._queue_urls[sqs_name(stream_subscription(self.config.service, stream))]
            self._poll(url, self._stream_batch(subscription.handler))
        if self._subscriptions:
            self._poll(self._queue_urls[retry_queue_name(self.config.service)], self._retry_batch)

    async def _declare(self) -> None:
        service = self.config.service
        for stream in {*self._publications, *self._subscriptions}:
            await self._topic(stream)
        dead_letters = await self._ensure_queue(
            sqs_name(self.config.dead_letters),
            {"MessageRetentionPeriod": str(self.config.dead_letter_retention_seconds)},
        )
        redrive = json.dumps(
            {
                "deadLetterTargetArn": await self._queue_arn(dead_letters),
                "maxReceiveCount": self.config.delivery_limit,
            }
        )
        own = {"VisibilityTimeout": str(self.config.visibility_timeout), "RedrivePolicy": redrive}
        for stream, subscription in self._subscriptions.items():
            await self._ensure_subscribed(
                stream, stream_subscription(service, stream), own, subscription.types
            )
        if self._subscriptions:
            url = await self._ensure_queue(retry_queue_name(service), own)
            self._queue_urls[retry_queue_name(service)] = url
        for stream, publication in self._publications.items():
            for reader in publication.subscribers:
                if reader != service or stream not in self._subscriptions:
                    # The reader's own start() sets its queue's redrive and filter.
                    await self._ensure_subscribed(
                        stream, stream_subscription(reader, stream), None, None
                    )

    async def _topic(self, stream: str) -> str:
        """The ARN of `stream`'s FIFO topic, created if missing (CreateTopic is idempotent
        for the same attributes)."""
        if stream not in self._topic_arns:
            answer = await self.sns.create_topic(
                Name=sqs_name(stream),
                Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
            )
            self._topic_arns[stream] = answer["TopicArn"]
        return self._topic_arns[stream]

    async def _ensure_queue(self, name: str, attributes: Mapping[str, str] | None) -> str:
        """A FIFO queue's URL, created if missing; `attributes` (None: leave an existing
        queue as it is) are set on an existing queue too, since CreateQueue refuses a
        name that exists with other attributes."""
        try:
            url = (await self.sqs.get_queue_url(QueueName=name))["QueueUrl"]
        except ClientError as exc:
            if "NonExistentQueue" not in exc.response["Error"]["Code"]:
                raise
            try:
                answer = await self.sqs.create_queue(
                    QueueName=name,
                    Attributes={"FifoQueue": "true", **(attributes or {})},  # type: ignore[dict-item]
                )
                url = answer["QueueUrl"]
            except ClientError as again:  # another replica was quicker
                if again.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
                    raise
                url = (await self.sqs.get_queue_url(QueueName=name))["QueueUrl"]
                if attributes:
                    await self.sqs.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))  # type: ignore[arg-type]
        else:
            if attributes:
                await self.sqs.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))  # type: ignore[arg-type]
        self._queue_urls[name] = url
        return url

    async def _queue_arn(self, url: str) -> str:
        answer = await self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return answer["Attributes"]["QueueArn"]

    async def _ensure_subscribed(
        self,
        stream: str,
        queue: str,
        attributes: Mapping[str, str] | None,
        types: tuple[str, ...] | None,
    ) -> None:
        """`queue` exists and takes `stream`'s topic: with raw delivery, and filtered by
        type if `types`. `attributes` None: a reader's queue declared by its publisher,
        whose subscription (if any) is left as its reader set it."""
        topic_arn = await self._topic(stream)
        url = await self._ensure_queue(sqs_name(queue), attributes)
        queue_arn = await self._queue_arn(url)
        existing = await self._subscription_of(topic_arn, queue_arn)
        if existing is not None and attributes is None:
            return
        # AWS delivers to a queue only if its policy lets the topic send (moto does not check).
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "from-" + sqs_name(stream).removesuffix(".fifo"),
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        await self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        # "{}" removes a filter policy (AWS's documented way; moto does the same).
        filter_policy = json.dumps({EVENT_TYPE_ATTRIBUTE: list(types)}) if types else "{}"
        if existing is None:
            wanted = {"RawMessageDelivery": "true"}
            if types:
                wanted["FilterPolicy"] = filter_policy
            await self.sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes=wanted,
                ReturnSubscriptionArn=True,
            )
            return
        # A restart: the types may have changed (SNS refuses Subscribe with other attributes).
        for name, value in (("RawMessageDelivery", "true"), ("FilterPolicy", filter_policy)):
            await self.sns.set_subscription_attributes(
                SubscriptionArn=existing, AttributeName=name, AttributeValue=value
            )

    async def _subscription_of(self, topic_arn: str, queue_arn: str) -> str | None:
        paginator = self.sns.get_paginator("list_subscriptions_by_topic")
        async for page in paginator.paginate(TopicArn=topic_arn):
            for subscription in page.get("Subscriptions", []):
                if (
                    subscription.get("Endpoint") == queue_arn
                    and subscription.get("Protocol") == "sqs"
                ):
                    return str(subscription["SubscriptionArn"])
        return None

    async def recover(self) -> None:
        """After an outage: declare again (SNS and SQS lose nothing; this re-creates what
        someone deleted meanwhile)."""
        await self._declare()

    async def stop(self) -> None:
        """Stop polling (a batch being handled is handed back at once) and disconnect."""
        self._stopping = True
        if self._inline:
            await self._inline.stop()
        pollers, self._pollers = self._pollers, []
        # A receive cancelled in flight stays open at the endpoint, which may hand it the
        # next message: seen only after its visibility timeout. So a long poll is let end
        # (it hands back what it brings); a batch being handled is handed back at once.
        receiving = [task for task in pollers if task in self._receiving]
        for task in pollers:
            if task not in self._receiving:
                task.cancel()
        if receiving:
            await asyncio.wait(receiving, timeout=self.config.wait_time_seconds + 2)
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        handbacks = list(self._handbacks)  # cancelled, each hands its batch back at once
        for task in handbacks:
            task.cancel()
        await asyncio.gather(*handbacks, return_exceptions=True)
        await self._exit.aclose()
        self._sns = self._sqs = None
        self._topic_arns.clear()
        self._queue_urls.clear()

    # --- publishing ----------------------------------------------------------------------

    def _entry(self, message: Outgoing) -> tuple[str, dict[str, str]]:
        text, extra = encode_body(message.body)
        headers = {
            **(message.headers or {}),
            EVENT_TYPE_ATTRIBUTE: message.event_type,
            KEY_ATTRIBUTE: message.key,
            STREAM_ATTRIBUTE: message.stream,
            **extra,
        }
        return text, encode_headers(headers)

    async def publish(self, message: Outgoing) -> None:
        """Publish one message; SNS has it once this returns. A topic no queue subscribes
        to takes it and drops it (unlike RabbitMQ's mandatory publish, nothing fails)."""
        if self._inline:
            return await self._inline.publish(message)
        text, headers = self._entry(message)
        await self.sns.publish(
            TopicArn=await self._topic(message.stream),
            Message=text,
            MessageGroupId=group_id(message.key),
            MessageDeduplicationId=deduplication_id(),
            MessageAttributes=_sns_attributes(headers),
        )

    async def publish_batch(self, messages: Sequence[Outgoing], *, timeout: float) -> list[Outcome]:
        """PublishBatch per stream, 10 entries and 256 KiB at most per request.

        A stream's requests go one after another, so a key's messages reach SNS in order;
        streams go at once. An entry SNS refuses fails alone; the later messages of its key
        are then not sent (they fail the same way, and the caller sends them again). A
        request refused as a whole (one entry too large makes AWS refuse the request:
        BatchRequestTooLong) is sent again one message at a time, so only that one fails.
        """
        if self._inline:
            return await self._inline.publish_batch(messages, timeout=timeout)
        outcomes: list[Outcome] = [TimeoutError(f"no answer within {timeout}s")] * len(messages)
        by_stream: dict[str, list[int]] = {}
        for index, message in enumerate(messages):
            by_stream.setdefault(message.stream, []).append(index)

        async def publish_stream(indexes: list[int]) -> None:
            failed: dict[str, BaseException] = {}
            for chunk in self._chunks([(i, self._entry(messages[i])) for i in indexes]):
                entries: list[tuple[int, PublishBatchRequestEntryTypeDef]] = []
                for index, (text, headers) in chunk:
                    message = messages[index]
                    if message.key and message.key in failed:
                        outcomes[index] = failed[message.key]
                        continue
                    entries.append(
                        (
                            index,
                            {
                                "Id": str(index),
                                "Message": text,
                                "MessageGroupId": group_id(message.key),
                                "MessageDeduplicationId": deduplication_id(),
                                "MessageAttributes": _sns_attributes(headers),
                            },
                        )
                    )
                for index, outcome in await self._publish_entries(
                    messages[indexes[0]].stream, entries
                ):
                    outcomes[index] = outcome
                    if outcome is not None and messages[index].key:
                        failed.setdefault(messages[index].key, outcome)

        tasks = [asyncio.create_task(publish_stream(ix)) for ix in by_stream.values()]
        try:
            await asyncio.wait(tasks, timeout=timeout)
        finally:  # past the timeout: what has no answer stays failed
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes

    @staticmethod
    def _chunks(
        entries: list[tuple[int, tuple[str, dict[str, str]]]],
    ) -> list[list[tuple[int, tuple[str, dict[str, str]]]]]:
        """Consecutive runs of at most 10 entries and 256 KiB (bodies and attributes)."""
        chunks: list[list[tuple[int, tuple[str, dict[str, str]]]]] = []
        size = 0
        for entry in entries:
            text, headers = entry[1]
            entry_size = len(text.encode()) + sum(len(k) + len(v) + 6 for k, v in headers.items())
            if (
                not chunks
                or len(chunks[-1]) == MAX_BATCH_ENTRIES
                or size + entry_size > MAX_PAYLOAD_BYTES
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += entry_size
        return chunks

    async def _publish_entries(
        self, stream: str, entries: list[tuple[int, PublishBatchRequestEntryTypeDef]]
    ) -> list[tuple[int, Outcome]]:
        if not entries:
            return []
        topic = await self._topic(stream)
        try:
            answer = await self.sns.publish_batch(
                TopicArn=topic, PublishBatchRequestEntries=[entry for _, entry in entries]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BatchRequestTooLong", "InvalidParameter"):
                return [(index, exc) for index, _ in entries]
            return [(index, await self._publish_alone(topic, entry)) for index, entry in entries]
        except Exception as exc:
            return [(index, exc) for index, _ in entries]
        ok = {item["Id"] for item in answer.get("Successful", [])}
        refused = {item["Id"]: item for item in answer.get("Failed", [])}
        outcomes: list[tuple[int, Outcome]] = []
        for index, entry in entries:
            if entry["Id"] in ok:
                outcomes.append((index, None))
            elif entry["Id"] in refused:
                item = refused[entry["Id"]]
                outcomes.append(
                    (index, PublishRefused(f"{item['Code']}: {item.get('Message', '')}"))
                )
            else:  # neither (moto drops some errors so): not known to be taken
                outcomes.append((index, PublishRefused("no outcome in the PublishBatch answer")))
        return outcomes

    async def _publish_alone(self, topic: str, entry: PublishBatchRequestEntryTypeDef) -> Outcome:
        try:
            await self.sns.publish(
                TopicArn=topic,
                Message=entry["Message"],
                MessageGroupId=entry["MessageGroupId"],
                MessageDeduplicationId=entry["MessageDeduplicationId"],
                MessageAttributes=entry["MessageAttributes"],
            )
        except Exception as exc:
            return exc
        return None

    async def publish_retry(
        self, stream: str, body: bytes, headers: Mapping[str, str], *, key: str, delay: float
    ) -> None:
        """To this service's retry queue, due in `delay` seconds, for `stream`'s handler.

        Its own MessageDeduplicationId each time (the same event is retried many times,
        sometimes with the same headers), and a group per key and delay, as Kafka has a
        retry topic per delay: a key's retries of one delay come back in the order sent,
        and one held for long (an unknown type, for hours) keeps no shorter retry waiting
        (a dead letter replayed, an event without a key: their key is "").
        """
        if self._inline:
            return await self._inline.publish_retry(stream, body, headers, key=key, delay=delay)
        text, extra = encode_body(body)
        attributes = encode_headers(
            {
                **headers,
                KEY_ATTRIBUTE: key,
                STREAM_ATTRIBUTE: stream,
                DUE_ATTRIBUTE: f"{time.time() + delay:.3f}",
                **extra,
            }
        )
        url = self._queue_urls.get(retry_queue_name(self.config.service))
        if url is None:
            url = await self._ensure_queue(retry_queue_name(self.config.service), None)
        await self.sqs.send_message(
            QueueUrl=url,
            MessageBody=text,
            MessageGroupId=group_id(f"{stream}/{key}/{delay:g}"),
            MessageDeduplicationId=deduplication_id(),
            MessageAttributes=_sqs_attributes(attributes),
        )

    async def publish_dead_letter(
        self, body: bytes, headers: Mapping[str, str], *, key: str = ""
    ) -> None:
        """Into `sqs_name(dlq.<service>)`, its headers (x-error, x-attempts, ...) as
        attributes. Each dead letter is a group of its own: nothing waits behind it."""
        if self._inline:
            return await self._inline.publish_dead_letter(body, headers, key=key)
        text, extra = encode_body(body)
        name = sqs_name(self.config.dead_letters)
        url = self._queue_urls.get(name) or await self._ensure_queue(name, None)
        attributes = encode_headers({**headers, KEY_ATTRIBUTE: key, **extra})
        dedup = deduplication_id()
        await self.sqs.send_message(
            QueueUrl=url,
            MessageBody=text,
            MessageGroupId=dedup,
            MessageDeduplicationId=dedup,
            MessageAttributes=_sqs_attributes(attributes),
        )

    # --- dead letters: list and replay -----------------------------------------------------

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters, left in the queue.

        SQS has no peek: each is received and made visible again at once. Messages SQS
        moved there keep their message group, so of one group only the first few may show.
        """
        received = await self._take_dead_letters(limit)
        await self._change_visibility(self._dead_letter_url(), [m for m, _ in received], 0)
        return [letter for _, letter in received]

    async def replay_dead_letters(self, limit: int = 100) -> int:
        """Give up to `limit` dead letters back to this service's handlers (through the
        retry queue, so the stream's other readers do not get them again), their attempts
        reset; each leaves the dead letters once it is in the retry queue."""
        received = await self._take_dead_letters(limit)
        replayed: list[MessageTypeDef] = []
        skipped: list[MessageTypeDef] = []
        for message, letter in received:
            if letter.stream not in self._subscriptions:
                skipped.append(message)  # no handler here for it: leave it
                continue
            headers = {
                k: v
                for k, v in letter.headers.items()
                if k
                not in ("x-error", "x-attempts", "x-failed-at", STREAM_ATTRIBUTE, KEY_ATTRIBUTE)
            }
            await self.publish_retry(
                letter.stream,
                letter.body,
                headers,
                key=letter.headers.get(KEY_ATTRIBUTE, ""),
                delay=0,
            )
            replayed.append(message)
        await self._change_visibility(self._dead_letter_url(), skipped, 0)
        await self._delete(self._dead_letter_url(), replayed)
        return len(replayed)

    def _dead_letter_url(self) -> str:
        return self._queue_urls[sqs_name(self.config.dead_letters)]

    async def _take_dead_letters(self, limit: int) -> list[tuple[MessageTypeDef, DeadLetter]]:
        taken: list[tuple[MessageTypeDef, DeadLetter]] = []
        while len(taken) < limit:
            messages = await self._receive(
                self._dead_letter_url(), min(MAX_BATCH_ENTRIES, limit - len(taken)), wait=0
            )
            if not messages:
                break
            for message in messages:
                body, headers = decode_message(message)
                count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "0"))
                reason = headers.get("x-error") or (
                    f"received {count - 1} times unacknowledged (SQS redrive, delivery limit "
                    f"{self.config.delivery_limit})"
                )
                attempts = headers.get("x-attempts")
                letter = DeadLetter(
                    body=body,
                    headers=_public(headers),
                    stream=headers.get(STREAM_ATTRIBUTE, headers.get("x-original-topic", "")),
                    reason=reason,
                    attempts=int(attempts) if attempts and attempts.isdigit() else count - 1,
                    receive_count=count,
                )
                taken.append((message, letter))
        return taken

    # --- consuming -------------------------------------------------------------------------

    def _poll(
        self,
        url: str,
        deliver: Callable[[str, list[MessageTypeDef]], Awaitable[list[MessageTypeDef]]],
    ) -> None:
        self._pollers.append(asyncio.create_task(self._poll_loop(url, deliver)))

    async def _poll_loop(
        self,
        url: str,
        deliver: Callable[[str, list[MessageTypeDef]], Awaitable[list[MessageTypeDef]]],
    ) -> None:
        """Receive, hand over, delete; forever. `deliver` returns the messages to delete."""
        failures = 0
        while not self._stopping:
            try:
                self._receiving.add(asyncio.current_task())
                try:
                    messages = await self._receive(
                        url, MAX_BATCH_ENTRIES, wait=self.config.wait_time_seconds
                    )
                finally:
                    self._receiving.discard(asyncio.current_task())
                if self._stopping:  # what a stop let this receive finish with goes back
                    with contextlib.suppress(Exception):
                        await self._change_visibility(url, messages, 0)
                    return
                # While receives come back full, take more at once, up to batch_size.
                while (
                    len(messages) % MAX_BATCH_ENTRIES == 0
                    and 0 < len(messages) < self.config.batch_size
                ):
                    more = await self._receive(
                        url, min(MAX_BATCH_ENTRIES, self.config.batch_size - len(messages)), wait=0
                    )
                    messages += more
                    if len(more) < MAX_BATCH_ENTRIES:
                        break
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("receiving from %s failed", url)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if not messages:
                continue
            back: list[MessageTypeDef] = []
            try:
                done = await deliver(url, messages)
            except asyncio.CancelledError:  # stopping: hand the batch back at once
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._change_visibility(url, messages, 0))
                raise
            except Exception:
                log.warning(
                    "a batch of %d from %s failed: handed back", len(messages), url, exc_info=True
                )
                done, back = [], messages
            try:
                if back:
                    await self._hand_back(url, back)
                await self._delete(url, done)
            except asyncio.CancelledError:
                raise
            except Exception:
                # SQS did not answer: what is not deleted comes back once its visibility
                # timeout runs out (the inbox drops what was applied), and polling goes on.
                log.exception("settling a batch from %s failed; it comes back later", url)

    def _stream_batch(
        self, handler: BatchHandler
    ) -> Callable[[str, list[MessageTypeDef]], Awaitable[list[MessageTypeDef]]]:
        async def deliver(url: str, messages: list[MessageTypeDef]) -> list[MessageTypeDef]:
            batch: list[Delivery] = []
            for message in messages:
                body, headers = decode_message(message)
                batch.append((body, _public(headers)))
            async with self._kept_invisible(url, messages):
                await handler(batch)
            return messages

        return deliver

    async def _retry_batch(self, url: str, messages: list[MessageTypeDef]) -> list[MessageTypeDef]:
        """Due retries to their streams' handlers (in order, a run per stream); the others
        hidden until due, a group's later messages with its first that is not due yet.

        Returns what to delete: the runs handled. If a run's handler raises, that run and
        the later ones are handed back (after `handback_seconds`) and the rest deleted.
        """
        now = time.time()
        due: list[tuple[MessageTypeDef, bytes, dict[str, str]]] = []
        hidden: dict[int, list[MessageTypeDef]] = {}
        blocked: dict[str, int] = {}  # group -> seconds its first waiting message waits
        for message in messages:
            body, headers = decode_message(message)
            group = message.get("Attributes", {}).get("MessageGroupId", "")
            left = float(headers.get(DUE_ATTRIBUTE, "0") or 0) - now
            if left > 0 or group in blocked:
                seconds = min(
                    MAX_VISIBILITY_SECONDS, max(1, math.ceil(left), blocked.get(group, 0))
                )
                blocked.setdefault(group, seconds)
                hidden.setdefault(seconds, []).append(message)
            else:
                due.append((message, body, headers))
        for seconds, waiting in hidden.items():
            await self._change_visibility(url, waiting, seconds)
        runs: list[tuple[str, list[MessageTypeDef], list[Delivery]]] = []
        for message, body, headers in due:
            stream = headers.get(STREAM_ATTRIBUTE, "")
            if not runs or runs[-1][0] != stream:
                runs.append((stream, [], []))
            runs[-1][1].append(message)
            runs[-1][2].append((body, _public(headers)))
        done: list[MessageTypeDef] = []
        for place, (stream, run, batch) in enumerate(runs):
            subscription = self._subscriptions.get(stream)
            try:
                if subscription is None:
                    raise LookupError(
                        f"a retry of stream {stream!r}, which this service does not read"
                    )
                async with self._kept_invisible(url, run):
                    await subscription.handler(batch)
            except Exception:
                log.warning("retries of %s failed: handed back", stream, exc_info=True)
                rest = [m for _, later, _ in runs[place:] for m in later]
                await self._hand_back(url, rest)
                break
            done += run
        return done

    async def _hand_back(self, url: str, messages: list[MessageTypeDef]) -> None:
        """Make `messages` visible again in `handback_seconds`: hidden that long (and a
        visibility timeout more, in case this process goes), then visible at once.

        Not ChangeMessageVisibility(handback_seconds) alone: when several messages of one
        group become visible by timing out, moto hands the group's last one out first and
        holds the others behind it (AWS keeps the order); made visible at once, moto too
        hands them out in order.
        """
        delay = self.config.handback_seconds
        if delay <= 0:
            await self._change_visibility(url, messages, 0)
            return
        hold = min(MAX_VISIBILITY_SECONDS, delay + self.config.visibility_timeout)
        await self._change_visibility(url, messages, hold)

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
            finally:  # stop() cancels it: the batch goes back at once
                with contextlib.suppress(Exception):
                    await self._change_visibility(url, messages, 0)

        task = asyncio.create_task(later())
        self._handbacks.add(task)
        task.add_done_callback(self._handbacks.discard)

    async def _receive(self, url: str, count: int, *, wait: int) -> list[MessageTypeDef]:
        answer = await self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            AttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
            MessageAttributeNames=["All"],
        )
        return list(answer.get("Messages", []))

    @contextlib.asynccontextmanager
    async def _kept_invisible(
        self, url: str, messages: list[MessageTypeDef]
    ) -> AsyncIterator[None]:
        """While the handler runs, renew the messages' visibility every half timeout, so a
        slow batch (a rebuild's pause, a database outage) is not handed out twice."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.config.visibility_timeout / 2)
                with contextlib.suppress(Exception):
                    await self._change_visibility(url, messages, self.config.visibility_timeout)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _change_visibility(
        self, url: str, messages: Sequence[MessageTypeDef], seconds: int
    ) -> None:
        for start in range(0, len(messages), MAX_BATCH_ENTRIES):
            chunk = messages[start : start + MAX_BATCH_ENTRIES]
            await self.sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {
                        "Id": str(n),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": seconds,
                    }
                    for n, m in enumerate(chunk)
                ],
            )

    async def _delete(self, url: str, messages: Sequence[MessageTypeDef]) -> None:
        """DeleteMessageBatch, 10 at a time; one not deleted comes back (the consumer's
        inbox drops it as a duplicate)."""
        for start in range(0, len(messages), MAX_BATCH_ENTRIES):
            chunk = messages[start : start + MAX_BATCH_ENTRIES]
            answer = await self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)
                ],
            )
            for failed in answer.get("Failed", []):
                log.warning(
                    "not deleted from %s: %s %s", url, failed["Code"], failed.get("Message")
                )

    # --- health and documentation ------------------------------------------------------------

    async def ping(self) -> bool:
        """SQS answers (the dead-letter queue's attributes, within 2 s)."""
        if self._inline:
            return await self._inline.ping()
        try:
            async with asyncio.timeout(2.0):
                await self.sqs.get_queue_url(QueueName=sqs_name(self.config.dead_letters))
        except Exception:
            return False
        return True

    def asyncapi(self, title: str) -> dict[str, Any]:
        """An AsyncAPI 3 document: a channel per SNS topic (SNS binding 0.1.0), with the
        service's SQS queue (SQS binding 0.2.0) on what it reads."""
        channels: dict[str, Any] = {}
        operations: dict[str, Any] = {}
        for stream in sorted({*self._publications, *self._subscriptions}):
            topic = sqs_name(stream)
            channel: dict[str, Any] = {
                "address": topic,
                "bindings": {
                    "sns": {"name": topic, "ordering": {"type": "FIFO"}, "bindingVersion": "0.1.0"}
                },
            }
            publication = self._publications.get(stream)
            subscription = self._subscriptions.get(stream)
            if publication is not None:
                channel["description"] = publication.description
                operations[f"{stream}:publish"] = {
                    "action": "send",
                    "channel": {"$ref": f"#/channels/{stream}"},
                    "description": "MessageGroupId: the aggregate id; deduplicated by event id",
                }
            if subscription is not None:
                queue = sqs_name(stream_subscription(self.config.service, stream))
                channel.setdefault("description", subscription.description)
                operations[f"{self.config.service}:{stream}"] = {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/{stream}"},
                    "description": subscription.description,
                    "bindings": {
                        "sqs": {
                            "queues": [
                                {
                                    "name": queue,
                                    "fifoQueue": True,
                                    "visibilityTimeout": self.config.visibility_timeout,
                                    "receiveMessageWaitTime": self.config.wait_time_seconds,
                                    "redrivePolicy": {
                                        "deadLetterQueue": {
                                            "name": sqs_name(self.config.dead_letters)
                                        },
                                        "maxReceiveCount": self.config.delivery_limit,
                                    },
                                    **(
                                        {
                                            # the SQS binding has no field for it
                                            "x-filterPolicy": {
                                                EVENT_TYPE_ATTRIBUTE: list(subscription.types)
                                            }
                                        }
                                        if subscription.types
                                        else {}
                                    ),
                                }
                            ],
                            "bindingVersion": "0.2.0",
                        }
                    },
                }
            channels[stream] = channel
        return {
            "asyncapi": "3.0.0",
            "info": {"title": title, "version": "0"},
            "channels": channels,
            "operations": operations,
        }


class PublishRefused(Exception):
    """SNS refused one entry of a PublishBatch (its code and message)."""
