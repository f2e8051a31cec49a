"""SNS + SQS's own deployment files (dev_tools/deploy_files_sqs.py, make deploy-files): each
service runs as its own ServiceAccount and IAM role, and each role's policy allows what the
adapter calls on the service's own topics and queues, and nothing else."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from contracts import ROSTER
from dev_tools import ROOT
from eventkit.roster import ServiceSpec
from eventkit.transports.sqs import retry_queue_name, sqs_name

# Each SNS and SQS call of the adapter, with the IAM action that allows it (a batch call is
# allowed by its single action).
IAM_ACTIONS = {
    "sns.create_topic": "sns:CreateTopic",
    "sns.publish": "sns:Publish",
    "sns.publish_batch": "sns:Publish",
    "sns.subscribe": "sns:Subscribe",
    "sns.list_subscriptions_by_topic": "sns:ListSubscriptionsByTopic",
    "sns.set_subscription_attributes": "sns:SetSubscriptionAttributes",
    "sqs.get_queue_url": "sqs:GetQueueUrl",
    "sqs.create_queue": "sqs:CreateQueue",
    "sqs.get_queue_attributes": "sqs:GetQueueAttributes",
    "sqs.set_queue_attributes": "sqs:SetQueueAttributes",
    "sqs.receive_message": "sqs:ReceiveMessage",
    "sqs.delete_message_batch": "sqs:DeleteMessage",
    "sqs.change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "sqs.send_message": "sqs:SendMessage",
}
# The region and account in every ARN of the policies, left for `envsubst` to fill in.
ARN_PLACEHOLDERS = ":${AWS_REGION}:${AWS_ACCOUNT_ID}:"


@pytest.fixture(scope="module")
def deploy_files() -> ModuleType:
    from dev_tools import deploy_files

    return deploy_files


@pytest.fixture(scope="module")
def deploy_files_sqs() -> ModuleType:
    from dev_tools import deploy_files_sqs

    return deploy_files_sqs


def adapter_calls() -> set[str]:
    spec = importlib.util.find_spec("eventkit.transports.sqs")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    calls = set(re.findall(r"self\.(sns|sqs)\.(\w+)\(", source))
    calls |= set(re.findall(r"self\.(sns|sqs)\.get_paginator\(\s*\"(\w+)\"", source))
    return {f"{client}.{method}" for client, method in calls if method != "get_paginator"}


def grants(policy: dict[str, object]) -> dict[str, set[str]]:
    """action -> the resources a policy allows it on."""
    allowed: dict[str, set[str]] = {}
    statements = policy["Statement"]
    assert isinstance(statements, list)
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            allowed.setdefault(action, set()).update(statement["Resource"])
    return allowed


def arn(kind: str, name: str) -> str:
    return "arn:aws:" + kind + ARN_PLACEHOLDERS + name


def test_the_policies_allow_every_call_of_the_adapter_and_no_other() -> None:
    calls = adapter_calls()
    assert calls <= set(IAM_ACTIONS), f"new calls: {sorted(calls - set(IAM_ACTIONS))}"
    wanted = {IAM_ACTIONS[call] for call in calls}
    allowed: set[str] = set()
    for spec in ROSTER.services:
        text = (ROOT / "infra/k8s/iam" / f"{spec.name}.json").read_text()
        allowed |= set(grants(json.loads(text)))
    assert allowed == wanted


def test_each_policy_names_its_own_topics_and_queues_only(deploy_files_sqs: ModuleType) -> None:
    for spec in ROSTER.services:
        allowed = grants(deploy_files_sqs.iam_policy(ROSTER, spec))
        own_topics = {arn("sns", sqs_name(s)) for s in spec.publishes}
        read_topics = {arn("sns", sqs_name(s)) for s in spec.subscribes}
        own_queues = {arn("sqs", sqs_name(f"dlq.{spec.name}"))}
        if spec.subscribes:
            own_queues.add(arn("sqs", retry_queue_name(spec.name)))
        stream_queues = {arn("sqs", sqs_name(f"{spec.name}.{s}")) for s in spec.subscribes}
        readers = {
            arn("sqs", sqs_name(f"{reader.name}.{stream}"))
            for stream in spec.publishes
            for reader in ROSTER.subscribers(stream)
        }
        assert allowed.get("sns:Publish", set()) == own_topics, spec.name
        assert allowed["sns:CreateTopic"] == own_topics | read_topics, spec.name
        consumed = own_queues | stream_queues
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
            assert allowed[action] == consumed, (spec.name, action)
        assert allowed["sqs:SendMessage"] == own_queues, spec.name
        assert allowed["sqs:CreateQueue"] == consumed | readers, spec.name
        if spec.subscribes:
            subscriptions = {f"{t}:*" for t in read_topics} | read_topics
            assert allowed["sns:SetSubscriptionAttributes"] == subscriptions, spec.name
        else:
            assert "sns:SetSubscriptionAttributes" not in allowed, spec.name


def test_a_new_reader_is_in_its_policy_and_its_producers(deploy_files_sqs: ModuleType) -> None:
    stream = ROSTER.streams[0]
    audit = ServiceSpec("audit", 8099, subscribes=(stream,))
    roster = dataclasses.replace(ROSTER, services=(*ROSTER.services, audit))
    queue = arn("sqs", sqs_name(f"audit.{stream}"))
    producer = grants(deploy_files_sqs.iam_policy(roster, roster.producer(stream)))
    assert queue in producer["sqs:CreateQueue"] and queue not in producer["sqs:ReceiveMessage"]
    reader = grants(deploy_files_sqs.iam_policy(roster, audit))
    assert queue in reader["sqs:ReceiveMessage"]
    assert arn("sns", sqs_name(stream)) in reader["sns:Subscribe"]
    assert "sns:Publish" not in reader


def test_a_new_service_makes_its_policy_and_its_producers_stale(
    deploy_files: ModuleType, deploy_files_sqs: ModuleType, tmp_path: Path
) -> None:
    """Its producer's too: it declares the new reader's queue. Gone again, its policy goes."""
    for path in [*deploy_files.REGIONS, "pyproject.toml"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    shutil.copytree(ROOT / "infra/k8s", tmp_path / "infra/k8s", dirs_exist_ok=True)
    audit = ServiceSpec("audit", 8099, subscribes=tuple(ROSTER.streams[:1]))
    roster = dataclasses.replace(ROSTER, services=(*ROSTER.services, audit))
    producer = ROSTER.producer(ROSTER.streams[0])
    stale = {p.relative_to(tmp_path).as_posix() for p in deploy_files.stale_files(tmp_path, roster)}
    iam = deploy_files_sqs.K8S_IAM.as_posix()
    assert {p for p in stale if p.startswith(iam)} == {
        f"{iam}/{name}.json" for name in ("audit", producer.name)
    }
    deploy_files.write(tmp_path, roster)
    assert (tmp_path / iam / "audit.json").exists()
    deploy_files.write(tmp_path)
    assert not (tmp_path / iam / "audit.json").exists()
    assert deploy_files.stale_files(tmp_path) == {}


def test_each_service_account_names_its_role(deploy_files: ModuleType) -> None:
    project = deploy_files.load_project(ROOT, ROSTER)
    for spec in ROSTER.services:
        text = (ROOT / deploy_files.K8S_BASE / spec.name / "kustomization.yaml").read_text()
        role = f"arn:aws:iam::AWS_ACCOUNT_ID:role/{project.images}-{spec.name}"
        assert f"eks.amazonaws.com/role-arn: {role}" in text
        assert f"serviceAccountName: {spec.name}" in text
