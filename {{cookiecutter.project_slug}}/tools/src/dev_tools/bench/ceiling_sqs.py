"""The ceiling phase (ceiling.py) on SNS + SQS, with aiobotocore: the scratch FIFO topic and
a FIFO queue per consumer subscribed to it with raw delivery, the publisher (PublishBatch of
10), and the no-op consumer, which runs as a process of its own:

    python -m dev_tools.bench.ceiling_sqs BROKER_URL TOPIC QUEUE EVENTS TIMEOUT

TOPIC and QUEUE are eventkit names; SNS and SQS know them as `sqs_name(...)`
(`bench.ceiling.<run>` -> `bench-ceiling-<run>.fifo`). The consumer long-polls QUEUE for 10
messages at a time and deletes each batch in one request. It prints `ready` once it has the
queue, then, after EVENTS deliveries or TIMEOUT seconds,
`done <time.monotonic()> <CPU seconds since ready> <deliveries>`. Of the project it imports
only eventkit's SNS/SQS module (the naming rule, the message ids and the settings), as the
services name and publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig

from eventkit.transports.sqs import (
    EVENT_TYPE_ATTRIBUTE,
    KEY_ATTRIBUTE,
    MAX_BATCH_ENTRIES,
    SqsSettings,
    deduplication_id,
    endpoint_of,
    group_id,
    sqs_name,
)

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sns.type_defs import PublishBatchRequestEntryTypeDef
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

    from eventkit.settings import ServiceSettings

CLIENT = "aiobotocore"
RUNS_ON = ("botocore",)  # its version goes beside the client's in the report


@contextlib.asynccontextmanager
async def clients(url: str, connections: int = 10) -> AsyncIterator[tuple[SNSClient, SQSClient]]:
    """SNS and SQS clients on BROKER_URL `url`, as the transport makes them: the region of
    the settings, and a placeholder key pair for a local endpoint when the standard AWS chain
    has none. `connections`: requests that may be open at once. A slow answer is waited for
    (two minutes), not sent again: on a loaded machine moto_server may take long to answer a
    PublishBatch, and a retry would only add to its work."""
    sqs_settings = SqsSettings()
    session = get_session()
    options: dict[str, Any] = {
        "region_name": sqs_settings.AWS_REGION,
        "config": BotoConfig(
            read_timeout=max(120, sqs_settings.SQS_WAIT_TIME_SECONDS + 10),
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=connections,
        ),
    }
    if endpoint := endpoint_of(url):
        options["endpoint_url"] = endpoint
        if await session.get_credentials() is None:
            options.update(aws_access_key_id="local", aws_secret_access_key="local")
    async with (
        session.create_client("sns", **options) as sns,
        session.create_client("sqs", **options) as sqs,
    ):
        yield sns, sqs


async def topic_arn(sns: SNSClient, topic: str) -> str:
    """The scratch topic's ARN: CreateTopic makes it, or names the one that exists."""
    answer = await sns.create_topic(
        Name=sqs_name(topic),
        Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
    )
    return answer["TopicArn"]


async def declare(config: ServiceSettings, topic: str, queues: list[str]) -> None:
    """The scratch FIFO topic, and a FIFO queue for each consumer, subscribed to it with raw
    delivery (the body as published, its attributes as SQS message attributes)."""
    visibility = str(SqsSettings().SQS_VISIBILITY_TIMEOUT_SECONDS)
    async with clients(config.broker_url) as (sns, sqs):
        arn = await topic_arn(sns, topic)
        for name in queues:
            url = (
                await sqs.create_queue(
                    QueueName=sqs_name(name),
                    Attributes={"FifoQueue": "true", "VisibilityTimeout": visibility},
                )
            )["QueueUrl"]
            attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            queue_arn = attributes["Attributes"]["QueueArn"]
            # AWS delivers to a queue only if its policy lets the topic send (moto does not check).
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": arn}},
                    }
                ],
            }
            await sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
            await sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
            )


async def publish(
    config: ServiceSettings, topic: str, messages: list[tuple[bytes, str, str]], in_flight: int
) -> None:
    """Every message in PublishBatch requests of 10, with `in_flight` messages (that many
    tenths of requests, at least one) awaiting SNS at a time. Each message's group is its key,
    its deduplication id the event's id, its type the `event-type` attribute: as eventkit
    publishes (whose relay sends a stream's batches one after another)."""
    requests = max(1, math.ceil(in_flight / MAX_BATCH_ENTRIES))
    async with clients(config.broker_url, connections=requests) as (sns, _):
        arn = await topic_arn(sns, topic)
        gate = asyncio.Semaphore(requests)

        async def batch(chunk: list[tuple[bytes, str, str]]) -> None:
            entries: list[PublishBatchRequestEntryTypeDef] = [
                {
                    "Id": str(n),
                    "Message": body.decode(),
                    "MessageGroupId": group_id(key),
                    "MessageDeduplicationId": deduplication_id(),
                    "MessageAttributes": {
                        EVENT_TYPE_ATTRIBUTE: {"DataType": "String", "StringValue": event_type},
                        KEY_ATTRIBUTE: {"DataType": "String", "StringValue": key},
                    },
                }
                for n, (body, key, event_type) in enumerate(chunk)
            ]
            async with gate:
                answer = await sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)
            if failed := answer.get("Failed"):
                raise RuntimeError(f"SNS refused {len(failed)} of a batch: {failed[0]}")

        await asyncio.gather(
            *(
                batch(messages[start : start + MAX_BATCH_ENTRIES])
                for start in range(0, len(messages), MAX_BATCH_ENTRIES)
            )
        )


async def remove(config: ServiceSettings, topic: str, queues: list[str]) -> list[str]:
    """Unsubscribe and delete the queues and the topic; the SNS/SQS names still there."""
    left: list[str] = []
    async with clients(config.broker_url) as (sns, sqs):
        arn = await topic_arn(sns, topic)  # made again if it never was, and deleted below
        with contextlib.suppress(Exception):  # none, or gone: the topic's deletion takes them
            listed = await sns.list_subscriptions_by_topic(TopicArn=arn)
            for subscription in listed.get("Subscriptions", []):
                await sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
        for name in queues:
            with contextlib.suppress(Exception):  # never made, or gone: checked below
                url = (await sqs.get_queue_url(QueueName=sqs_name(name)))["QueueUrl"]
                await sqs.delete_queue(QueueUrl=url)
        with contextlib.suppress(Exception):
            await sns.delete_topic(TopicArn=arn)
        # AWS may take up to a minute to forget a deleted queue; moto forgets at once.
        for name in queues:
            with contextlib.suppress(Exception):
                await sqs.get_queue_url(QueueName=sqs_name(name))
                left.append(sqs_name(name))
        with contextlib.suppress(Exception):
            topics = (await sns.list_topics()).get("Topics", [])
            left += [sqs_name(topic) for t in topics if t.get("TopicArn") == arn]
    return left


def say(line: str) -> None:
    print(line, flush=True)


async def consume(url: str, queue: str, events: int, timeout: float) -> None:
    """Long-poll for 10 at a time; delete each batch in one request, while the next
    receive waits. Counts distinct messages (one handed out again is not counted twice)."""
    wait = SqsSettings().SQS_WAIT_TIME_SECONDS
    async with clients(url) as (_, sqs):
        queue_url = (await sqs.get_queue_url(QueueName=sqs_name(queue)))["QueueUrl"]
        say("ready")
        cpu = time.process_time()
        seen: set[str] = set()
        deleting: set[asyncio.Task[Any]] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < events and (left := deadline - time.monotonic()) > 0:
            answer = await sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=MAX_BATCH_ENTRIES,
                WaitTimeSeconds=max(0, min(wait, int(left))),
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                continue
            seen.update(message["MessageId"] for message in messages)
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]}
                for n, message in enumerate(messages)
            ]
            deleted = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            task = asyncio.create_task(deleted)
            deleting.add(task)
            task.add_done_callback(deleting.discard)
        finished = time.monotonic()
        await asyncio.gather(*deleting, return_exceptions=True)
        say(f"done {finished} {time.process_time() - cpu} {len(seen)}")


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    url, _topic, queue, events, timeout = argv
    asyncio.run(consume(url, queue, int(events), float(timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
