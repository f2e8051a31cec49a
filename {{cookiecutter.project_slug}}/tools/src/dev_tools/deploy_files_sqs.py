"""SNS + SQS's own deployment files, for dev_tools/deploy_files.py (make deploy-files).

On AWS there is no broker in the cluster: each service reaches SNS and SQS as its own IAM
role. deploy_files.py calls the two functions of this module, the hook every broker's
`deploy_files_<broker>.py` may provide:

- `k8s_patches(project, spec)`: the patches added to infra/k8s/base/<service>/
  kustomization.yaml, which give the service's pods its ServiceAccount, named with the IAM
  role it acts as (IRSA);
- `files(root, project)`: `infra/k8s/iam/<service>.json`, wholly generated, the
  least-privilege IAM policy of the service's role: the topics it publishes and reads, its
  own queues, and the queues its topics' readers need before they first start (see
  `iam_policy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from eventkit.roster import Roster, ServiceSpec, dead_letter_stream, stream_subscription
from eventkit.transports.sqs import retry_queue_name, sqs_name

if TYPE_CHECKING:
    from dev_tools.deploy_files import Project

K8S_IAM = Path("infra/k8s/iam")  # each service's IAM policy, wholly generated
# What each ServiceAccount's role ARN holds until Kustomize puts in the account of
# infra/k8s/base/configmap.yaml's aws-account (its kustomization.yaml's replacements).
AWS_ACCOUNT_PLACEHOLDER = "AWS_ACCOUNT_ID"
# In the IAM policies: the region and account, for `envsubst` (or your tool) to fill in.
ARN_REGION, ARN_ACCOUNT = "${AWS_REGION}", "${AWS_ACCOUNT_ID}"


def role(project: Project, name: str) -> str:
    """The name of service `name`'s IAM role, `<images>-<name>`."""
    return f"{project.images}-{name}"


# --- the ServiceAccounts ----------------------------------------------------------------------


def k8s_patches(project: Project, spec: ServiceSpec) -> list[str]:
    """The patches that give the service's pods its ServiceAccount, named with the IAM role
    it acts as (the account is filled in by infra/k8s/base's replacements)."""
    name = spec.name
    arn = f"arn:aws:iam::{AWS_ACCOUNT_PLACEHOLDER}:role/{role(project, name)}"
    return [
        f"  # Its ServiceAccount and IAM role (IRSA), policy ../../iam/{name}.json; the role's",
        "  # account is aws-account's of ../configmap.yaml.",
        "  - patch: |-",
        "      apiVersion: v1",
        "      kind: ServiceAccount",
        "      metadata:",
        f"        name: {name}",
        "        annotations:",
        f"          eks.amazonaws.com/role-arn: {arn}",
        "  - patch: |-",
        "      apiVersion: apps/v1",
        "      kind: Deployment",
        "      metadata:",
        f"        name: {name}",
        "      spec:",
        "        template:",
        "          spec:",
        f"            serviceAccountName: {name}",
    ]


# --- the IAM policies -------------------------------------------------------------------------

# The IAM actions of the SNS and SQS calls eventkit/transports/sqs.py makes. A batch call is
# allowed by its single action (PublishBatch by sns:Publish, DeleteMessageBatch by
# sqs:DeleteMessage, ChangeMessageVisibilityBatch by sqs:ChangeMessageVisibility).
DECLARE_TOPIC = ["sns:CreateTopic"]  # start(): every topic it publishes or reads
PUBLISH = ["sns:Publish"]  # publish, publish_batch: its own topics
SUBSCRIBE = ["sns:ListSubscriptionsByTopic", "sns:Subscribe"]  # a queue onto a topic
RESUBSCRIBE = ["sns:SetSubscriptionAttributes"]  # its own subscriptions, at each restart
# A queue, created if missing (get_queue_url, create_queue), its ARN (get_queue_attributes)
# and its settings: redrive, visibility, retention, the policy letting the topic send.
DECLARE_QUEUE = [
    "sqs:CreateQueue",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:SetQueueAttributes",
]
# Its own queues: polled, kept invisible or handed back, deleted once handled.
CONSUME = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"]
SEND = ["sqs:SendMessage"]  # its retry queue (publish_retry) and dead letters


def topic_arn(name: str) -> str:
    """A stream's topic; the one naming rule of topics and queues is the adapter's."""
    return f"arn:aws:sns:{ARN_REGION}:{ARN_ACCOUNT}:{sqs_name(name)}"


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{ARN_REGION}:{ARN_ACCOUNT}:{name}"


def statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, object]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": resources,
    }


def iam_policy(roster: Roster, spec: ServiceSpec) -> dict[str, object]:
    """The IAM policy of service `spec`'s role: what its SqsTransport calls at start and
    after, on its own topics and queues and nothing else.

    - CreateTopic on every topic it publishes or reads, Publish on its own;
    - its queues (one per stream it reads, its retry queue, its dead letters) declared,
      received, deleted, kept invisible; SendMessage on the retry and dead-letter queues;
    - Subscribe (and ListSubscriptionsByTopic, to find its subscription) on the topics it
      reads, SetSubscriptionAttributes on its subscriptions to them;
    - as a publisher, the queues of its topics' readers declared (not read) and subscribed,
      so that what it publishes before a reader first starts is kept (declare_publisher).
    """
    name = spec.name
    reads = list(spec.subscribes)
    own_queues = [sqs_name(stream_subscription(name, stream)) for stream in reads]
    if reads:
        own_queues.append(retry_queue_name(name))
    dead_letters = sqs_name(dead_letter_stream(name))
    readers = [
        sqs_name(stream_subscription(reader.name, stream))
        for stream in spec.publishes
        for reader in roster.subscribers(stream)
        if reader.name != name
    ]
    subscribed = [*reads, *(s for s in spec.publishes if roster.subscribers(s) and s not in reads)]
    topics = list(dict.fromkeys([*spec.publishes, *reads]))
    statements = [statement("Topics", DECLARE_TOPIC, [topic_arn(s) for s in topics])]
    if spec.publishes:
        statements.append(statement("Publish", PUBLISH, [topic_arn(s) for s in spec.publishes]))
    if subscribed:
        statements.append(statement("Subscribe", SUBSCRIBE, [topic_arn(s) for s in subscribed]))
    if reads:
        # A subscription's ARN is its topic's and an id SNS makes up: the one wildcard.
        resources = [arn for s in reads for arn in (topic_arn(s), f"{topic_arn(s)}:*")]
        statements.append(statement("OwnSubscriptions", RESUBSCRIBE, resources))
    statements += [
        statement(
            "OwnQueues",
            DECLARE_QUEUE + CONSUME,
            [queue_arn(q) for q in [*own_queues, dead_letters]],
        ),
        statement(
            "SendToOwnQueues",
            SEND,
            [queue_arn(q) for q in [*own_queues[len(reads) :], dead_letters]],
        ),
    ]
    if readers:
        statements.append(
            statement("ReadersQueues", DECLARE_QUEUE, [queue_arn(q) for q in readers])
        )
    return {"Version": "2012-10-17", "Statement": statements}


def files(root: Path, project: Project) -> dict[Path, str | None]:
    """infra/k8s/iam/<service>.json for each service, and None for the policy of a service
    gone from the roster (every .json file there is generated)."""
    folder = root / K8S_IAM
    policies: dict[Path, str | None] = {
        folder / f"{spec.name}.json": json.dumps(iam_policy(project.roster, spec), indent=2) + "\n"
        for spec in project.roster.services
    }
    for stale in folder.glob("*.json"):
        policies.setdefault(stale, None)
    return policies
