"""Probe how moto_server behaves for the SNS/SQS features SqsTransport relies on.

Run: .venv/bin/python probes/moto_probe.py   (starts and stops its own moto_server)
Each check prints `[name] observation`; FINDINGS.md quotes them.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, ParamValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from motoserver import MotoServer  # noqa: E402

RESULTS: list[str] = []


def note(name: str, text: str) -> None:
    line = f"[{name}] {text}"
    RESULTS.append(line)
    print(line, flush=True)


def error_of(call: Callable[[], Any]) -> str:
    try:
        call()
    except ClientError as exc:
        return f"{exc.response['Error']['Code']}: {exc.response['Error']['Message'][:140]}"
    except ParamValidationError as exc:
        return f"refused by botocore before sending: {str(exc).splitlines()[-1][:140]}"
    return "accepted"


class Env:
    def __init__(self, url: str) -> None:
        self.sns = boto3.client("sns", endpoint_url=url, region_name="us-east-1")
        self.sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1")

    def topic(self, name: str, cbd: bool = False) -> str:
        attrs = {"FifoTopic": "true", "ContentBasedDeduplication": str(cbd).lower()}
        return str(self.sns.create_topic(Name=name, Attributes=attrs)["TopicArn"])

    def queue(self, name: str, **attrs: str) -> tuple[str, str]:
        url = self.sqs.create_queue(
            QueueName=name, Attributes={"FifoQueue": "true", **attrs}
        )["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, arn["Attributes"]["QueueArn"]

    def subscribe(self, topic: str, queue_arn: str, **attrs: str) -> str:
        sub = self.sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true", **attrs},
            ReturnSubscriptionArn=True,
        )
        return str(sub["SubscriptionArn"])

    def receive(self, url: str, n: int = 10, wait: int = 0, **kw: Any) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=n,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            **kw,
        )
        return list(got.get("Messages", []))


def probe_names(env: Env) -> None:
    note("names", "topic 'a.b.fifo': " + error_of(lambda: env.topic("a.b.fifo")))
    note("names", "topic 'a-b' with FifoTopic: " + error_of(lambda: env.topic("a-b")))
    note("names", "queue 'a.b.fifo': " + error_of(lambda: env.queue("a.b.fifo")))
    note("names", "queue of 81 chars: " + error_of(lambda: env.queue("q" * 76 + ".fifo")))
    note("names", "queue of 80 chars: " + error_of(lambda: env.queue("q" * 75 + ".fifo")))
    topic = env.topic("names-t.fifo")
    note(
        "names",
        "publish to FIFO topic without MessageGroupId: "
        + error_of(lambda: env.sns.publish(TopicArn=topic, Message="x")),
    )
    note(
        "names",
        "publish without dedup id (CBD off): "
        + error_of(lambda: env.sns.publish(TopicArn=topic, Message="x", MessageGroupId="g")),
    )
    std = env.sns.create_topic(Name="names-std")["TopicArn"]
    _, qarn = env.queue("names-q.fifo")
    note(
        "names",
        "FIFO queue subscribed to a standard topic: "
        + error_of(lambda: env.subscribe(std, qarn)),
    )


def probe_filter_and_raw(env: Env) -> None:
    topic = env.topic("filter-t.fifo")
    wanted_url, wanted_arn = env.queue("filter-wanted.fifo")
    all_url, all_arn = env.queue("filter-all.fifo")
    env.subscribe(topic, wanted_arn, FilterPolicy=json.dumps({"type": ["A", "C"]}))
    env.subscribe(topic, all_arn)
    for n, kind in enumerate("ABCB"):
        env.sns.publish(
            TopicArn=topic,
            Message=f"body-{kind}",
            MessageGroupId="g",
            MessageDeduplicationId=f"d{n}",
            MessageAttributes={
                "type": {"DataType": "String", "StringValue": kind},
                "traceparent": {"DataType": "String", "StringValue": "00-abc"},
            },
        )
    wanted = env.receive(wanted_url)
    everything = env.receive(all_url)
    note(
        "filter",
        f"FIFO subscription with FilterPolicy type in [A,C] got {[m['Body'] for m in wanted]}; "
        f"unfiltered got {[m['Body'] for m in everything]}",
    )
    attrs = wanted[0].get("MessageAttributes", {})
    note(
        "raw",
        "raw delivery: body is the bare message: "
        f"{wanted[0]['Body']!r}; SQS MessageAttributes: "
        + json.dumps({k: v.get("StringValue") for k, v in attrs.items()}),
    )
    note(
        "raw",
        "SQS system attrs: MessageGroupId="
        f"{wanted[0]['Attributes'].get('MessageGroupId')!r}, MessageDeduplicationId="
        f"{wanted[0]['Attributes'].get('MessageDeduplicationId')!r}",
    )
    # A filter policy on a subscription set later (as start() does on restart)
    sub = env.subscribe(topic, all_arn)  # same endpoint again: same subscription?
    subs = env.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    note(
        "subscribe",
        f"subscribing the same queue again returns the same ARN: "
        f"{sub in [s['SubscriptionArn'] for s in subs]} ({len(subs)} subscriptions on the topic)",
    )
    note(
        "subscribe",
        "subscribing again with another FilterPolicy: "
        + error_of(
            lambda: env.subscribe(topic, all_arn, FilterPolicy=json.dumps({"type": ["B"]}))
        ),
    )
    env.sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue=json.dumps({"type": ["B"]})
    )
    env.receive(all_url)  # drain
    env.sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue="{}"
    )
    env.sns.publish(
        TopicArn=topic, Message="after-removal", MessageGroupId="g3", MessageDeduplicationId="d8",
        MessageAttributes={"type": {"DataType": "String", "StringValue": "Z"}},
    )
    note("subscribe", "after FilterPolicy='{}' (AWS: removes the policy), a Z reaches it: "
         f"{[m['Body'] for m in env.receive(all_url)]}")
    env.sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue=json.dumps({"type": ["B"]})
    )
    env.sns.publish(
        TopicArn=topic, Message="after-change", MessageGroupId="g2", MessageDeduplicationId="d9",
        MessageAttributes={"type": {"DataType": "String", "StringValue": "A"}},
    )
    note(
        "subscribe",
        "after SetSubscriptionAttributes FilterPolicy=[B], an A reaches it: "
        f"{[m['Body'] for m in env.receive(all_url)]}",
    )


def probe_dedup(env: Env) -> None:
    topic = env.topic("dedup-t.fifo")
    url, arn = env.queue("dedup-q.fifo")
    env.subscribe(topic, arn)
    for body in ("first", "second-same-id"):
        env.sns.publish(
            TopicArn=topic, Message=body, MessageGroupId="g", MessageDeduplicationId="event-1"
        )
    env.sns.publish(TopicArn=topic, Message="other", MessageGroupId="g", MessageDeduplicationId="event-2")
    first = env.receive(url)
    note("dedup", f"3 publishes, two with one MessageDeduplicationId -> {[m['Body'] for m in first]}")
    for m in first:
        env.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    env.sns.publish(TopicArn=topic, Message="third-same-id", MessageGroupId="g", MessageDeduplicationId="event-1")
    again = env.receive(url)
    note("dedup", "same MessageDeduplicationId published again after the first was deleted "
         f"(AWS: dropped within 5 min) -> {[m['Body'] for m in again]}")
    for m in again:
        env.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    cbd = env.topic("dedup-cbd.fifo", cbd=True)
    url2, arn2 = env.queue("dedup-cbd-q.fifo")
    env.subscribe(cbd, arn2)
    note("dedup", "CBD topic -> queue without CBD, publish with no dedup id: " + error_of(
        lambda: env.sns.publish(TopicArn=cbd, Message="same", MessageGroupId="g")))
    url3, arn3 = env.queue("dedup-cbd-q2.fifo", ContentBasedDeduplication="true")
    cbd2 = env.topic("dedup-cbd2.fifo", cbd=True)
    env.subscribe(cbd2, arn3)
    for _ in range(2):
        env.sns.publish(TopicArn=cbd2, Message="same", MessageGroupId="g")
    note("dedup", f"CBD topic -> CBD queue, same body twice -> {len(env.receive(url3))} message(s)")
    # SQS FIFO queue dedup directly
    env.sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g9", MessageDeduplicationId="x")
    env.sqs.send_message(QueueUrl=url, MessageBody="b", MessageGroupId="g9", MessageDeduplicationId="x")
    note("dedup", f"SQS FIFO SendMessage twice with one dedup id -> {len(env.receive(url))}")


def probe_publish_batch(env: Env) -> None:
    topic = env.topic("batch-t.fifo")
    url, arn = env.queue("batch-q.fifo")
    env.subscribe(topic, arn)
    entries: list[dict[str, Any]] = [
        {"Id": f"e{n}", "Message": f"m{n}", "MessageGroupId": "g", "MessageDeduplicationId": f"d{n}"}
        for n in range(10)
    ]
    del entries[4]["MessageDeduplicationId"]
    answer = env.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    note(
        "publish_batch",
        f"10 entries, #4 without dedup id: Successful={len(answer['Successful'])} "
        f"Failed={[(f['Id'], f['Code']) for f in answer['Failed']]}",
    )
    bodies = [m["Body"] for m in env.receive(url)]
    note("publish_batch", f"queue got (in order) {bodies}")
    big = [dict(e, Id=f"b{n}", MessageDeduplicationId=f"b{n}") for n, e in enumerate(entries[:3])]
    big[1]["Message"] = "x" * (256 * 1024 + 1)
    note(
        "publish_batch",
        "3 entries, #1 of 256 KiB+1: "
        + error_of(lambda: note("publish_batch", "  answer: " + json.dumps(
            {k: v for k, v in env.sns.publish_batch(
                TopicArn=topic, PublishBatchRequestEntries=big).items() if k in ("Successful", "Failed")}
        )[:300])),
    )
    eleven = [dict(e, Id=f"x{n}", MessageDeduplicationId=f"x{n}") for n, e in enumerate(entries + [entries[0]])]
    note("publish_batch", "11 entries: " + error_of(
        lambda: env.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=eleven)))
    # Total size of several entries below the limit each but above 256 KiB together
    parts = [dict(e, Id=f"s{n}", MessageDeduplicationId=f"s{n}", Message="y" * 100_000)
             for n, e in enumerate(entries[:3])]
    note("publish_batch", "3 x 100 kB entries (300 kB in all): " + error_of(
        lambda: env.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=parts)))
    env.receive(url)


def probe_groups_and_visibility(env: Env) -> None:
    url, _ = env.queue("groups-q.fifo", VisibilityTimeout="30")
    for n in range(3):
        env.sqs.send_message(QueueUrl=url, MessageBody=f"g1-{n}", MessageGroupId="g1", MessageDeduplicationId=f"a{n}")
    env.sqs.send_message(QueueUrl=url, MessageBody="g2-0", MessageGroupId="g2", MessageDeduplicationId="b0")
    first = env.receive(url, n=1)
    second = env.receive(url, n=10)
    note(
        "groups",
        f"receive(1) -> {[m['Body'] for m in first]}; then receive(10) while g1-0 in flight -> "
        f"{[m['Body'] for m in second]} (g1 blocked)",
    )
    env.sqs.delete_message(QueueUrl=url, ReceiptHandle=second[0]["ReceiptHandle"])
    # Visibility change on FIFO: g1-0 back after 2 s, group still blocked meanwhile
    env.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"], VisibilityTimeout=2)
    at_once = env.receive(url)
    started = time.monotonic()
    later = env.receive(url, wait=5)
    note(
        "visibility",
        f"ChangeMessageVisibility(2) on FIFO: at once -> {[m['Body'] for m in at_once]}; "
        f"long poll -> {[m['Body'] for m in later]} after {time.monotonic() - started:.1f} s, "
        f"ApproximateReceiveCount={[m['Attributes']['ApproximateReceiveCount'] for m in later]}",
    )
    env.sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{"Id": f"i{n}", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for n, m in enumerate(later)],
    )
    again = env.receive(url)
    note("visibility", f"ChangeMessageVisibilityBatch(0) -> received again at once: {[m['Body'] for m in again]}")
    note("visibility", "VisibilityTimeout=1.5 (not an integer): " + error_of(
        lambda: env.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"], VisibilityTimeout=1.5)))
    deleted = env.sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": f"i{n}", "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(again)]
        + [{"Id": "bad", "ReceiptHandle": "not-a-handle"}],
    )
    note(
        "delete_batch",
        f"DeleteMessageBatch of {len(again)} + 1 bad handle: Successful={len(deleted.get('Successful', []))} "
        f"Failed={[(f['Id'], f['Code']) for f in deleted.get('Failed', [])]}; left: {len(env.receive(url))}",
    )
    # A stale receipt handle (message received again since) - AWS: delete still works (FIFO: fails)
    env.sqs.send_message(QueueUrl=url, MessageBody="stale", MessageGroupId="g3", MessageDeduplicationId="c0")
    old = env.receive(url)[0]
    env.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=old["ReceiptHandle"], VisibilityTimeout=0)
    env.receive(url)
    note("delete_batch", "delete with the receipt handle of an earlier receive: " + error_of(
        lambda: env.sqs.delete_message(QueueUrl=url, ReceiptHandle=old["ReceiptHandle"])) + f"; left: {len(env.receive(url, wait=0))}")


def probe_delay(env: Env) -> None:
    url, _ = env.queue("delay-q.fifo")
    note("delay", "FIFO SendMessage with DelaySeconds=2: " + error_of(
        lambda: env.sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="1", DelaySeconds=2)))
    url2, _ = env.queue("delay-queue-level.fifo", DelaySeconds="2")
    env.sqs.send_message(QueueUrl=url2, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="1")
    at_once = env.receive(url2)
    started = time.monotonic()
    later = env.receive(url2, wait=5)
    note("delay", f"FIFO queue DelaySeconds=2: at once {len(at_once)}, long poll got {len(later)} after {time.monotonic() - started:.1f} s")
    note("delay", "queue DelaySeconds=901: " + error_of(lambda: env.queue("delay-901.fifo", DelaySeconds="901")))
    std = env.sqs.create_queue(QueueName="delay-std")["QueueUrl"]
    note("delay", "standard queue per-message DelaySeconds=2: " + error_of(
        lambda: env.sqs.send_message(QueueUrl=std, MessageBody="x", DelaySeconds=2)))


def probe_long_poll(env: Env) -> None:
    url, _ = env.queue("poll-q.fifo")
    started = time.monotonic()
    env.receive(url, wait=2)
    note("long_poll", f"empty queue, WaitTimeSeconds=2 returned after {time.monotonic() - started:.1f} s")
    for n in range(15):
        env.sqs.send_message(QueueUrl=url, MessageBody=f"m{n}", MessageGroupId=f"g{n % 3}", MessageDeduplicationId=str(n))
    got = env.receive(url, wait=2)
    note("long_poll", f"15 waiting, MaxNumberOfMessages=10 -> {len(got)}: {[m['Body'] for m in got]}")
    note("long_poll", "MaxNumberOfMessages=11: " + error_of(lambda: env.receive(url, n=11)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def probe_blocked_group_spin(env: Env, pid: int) -> None:
    url, _ = env.queue("spin-q.fifo")
    for n in range(2):
        env.sqs.send_message(QueueUrl=url, MessageBody=f"m{n}", MessageGroupId="g", MessageDeduplicationId=str(n))
    env.receive(url, n=1)  # m0 in flight: m1 visible but blocked
    before, started = cpu_seconds(pid), time.monotonic()
    env.receive(url, wait=3)
    blocked = cpu_seconds(pid) - before
    empty_url, _ = env.queue("spin-empty.fifo")
    before = cpu_seconds(pid)
    env.receive(empty_url, wait=3)
    idle = cpu_seconds(pid) - before
    note("long_poll", f"moto CPU during a 3 s long poll: empty queue {idle:.2f} s; "
         f"queue whose only visible message's group is in flight {blocked:.2f} s "
         f"(took {time.monotonic() - started:.1f} s)")


def probe_redrive(env: Env) -> None:
    dlq_url, dlq_arn = env.queue("redrive-dlq.fifo")
    url, _ = env.queue(
        "redrive-src.fifo",
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    )
    env.sqs.send_message(
        QueueUrl=url, MessageBody="poison", MessageGroupId="g", MessageDeduplicationId="p",
        MessageAttributes={"type": {"DataType": "String", "StringValue": "T"}},
    )
    counts = []
    for _ in range(3):
        got = env.receive(url)
        counts.append(len(got))
        for m in got:
            env.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    moved = env.receive(dlq_url)
    note(
        "redrive",
        f"maxReceiveCount=2: receives got {counts}; DLQ then has {[m['Body'] for m in moved]} "
        f"with attributes {json.dumps({k: v.get('StringValue') for k, v in moved[0].get('MessageAttributes', {}).items()}) if moved else None}, "
        f"ApproximateReceiveCount={moved[0]['Attributes'].get('ApproximateReceiveCount') if moved else None}, "
        f"MessageGroupId={moved[0]['Attributes'].get('MessageGroupId') if moved else None}",
    )
    std = env.sqs.create_queue(QueueName="redrive-std-dlq")["QueueUrl"]
    std_arn = env.sqs.get_queue_attributes(QueueUrl=std, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    note("redrive", "FIFO source with a standard DLQ: " + error_of(lambda: env.queue(
        "redrive-mixed.fifo", RedrivePolicy=json.dumps({"deadLetterTargetArn": std_arn, "maxReceiveCount": 2}))))
    note("redrive", "create_queue again with the same attributes: " + error_of(
        lambda: env.queue("redrive-src.fifo", RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))))
    note("redrive", "create_queue again with other attributes: " + error_of(
        lambda: env.queue("redrive-src.fifo", VisibilityTimeout="99")))


def probe_policy(env: Env) -> None:
    topic = env.topic("policy-t.fifo")
    url, arn = env.queue("policy-q.fifo")
    env.subscribe(topic, arn)
    env.sns.publish(TopicArn=topic, Message="no policy", MessageGroupId="g", MessageDeduplicationId="1")
    note("policy", f"queue without a policy allowing sns.amazonaws.com got: {[m['Body'] for m in env.receive(url)]}")
    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage", "Resource": arn}]}
    env.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(deny)})
    env.sns.publish(TopicArn=topic, Message="explicit deny", MessageGroupId="g", MessageDeduplicationId="2")
    note("policy", f"queue with a Deny-all policy got: {[m['Body'] for m in env.receive(url)]}")


def main() -> None:
    server = MotoServer()
    with server as url:
        env = Env(url)
        assert server.process is not None
        for probe in (probe_names, probe_filter_and_raw, probe_dedup, probe_publish_batch,
                      probe_groups_and_visibility, probe_delay, probe_long_poll, probe_redrive,
                      probe_policy):
            try:
                probe(env)
            except Exception as exc:  # keep probing; the failure is a finding too
                note(probe.__name__, f"PROBE FAILED: {type(exc).__name__}: {exc}")
        probe_blocked_group_spin(env, server.process.pid)


if __name__ == "__main__":
    main()
