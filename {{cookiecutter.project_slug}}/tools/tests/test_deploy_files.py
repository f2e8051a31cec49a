"""The deployment files say what the roster says (dev_tools/deploy_files.py, make deploy-files):
compose, Prometheus, PostgreSQL init and Kubernetes name each service of the roster, and no
other; on SNS + SQS, each service's IAM policy allows what its adapter calls on its own topics
and queues, and nothing else."""

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
from eventkit.settings import shipped_broker

SQS = shipped_broker() == "sqs"
needs_sqs = pytest.mark.skipif(not SQS, reason="IAM policies are SNS + SQS's")


@pytest.fixture(scope="module")
def deploy_files() -> ModuleType:
    from dev_tools import deploy_files

    return deploy_files


@pytest.fixture
def copy(deploy_files: ModuleType, tmp_path: Path) -> Path:
    """The files the generator reads and writes, copied where a test may change them."""
    for path in [*deploy_files.REGIONS, "pyproject.toml"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    for folder in (deploy_files.K8S_BASE, deploy_files.K8S_IAM):
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, tmp_path / folder, dirs_exist_ok=True)
    return tmp_path


def test_the_deployment_files_are_in_step_with_the_roster(
    deploy_files: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    status = deploy_files.main(["--check"])
    assert status == 0, f"run `make deploy-files`:\n{capsys.readouterr().err[-4000:]}"


def test_a_new_service_makes_every_file_stale_until_rewritten(
    deploy_files: ModuleType, copy: Path
) -> None:
    audit = ServiceSpec("audit", 8099, subscribes=tuple(ROSTER.streams[:1]))
    roster = dataclasses.replace(ROSTER, services=(*ROSTER.services, audit))
    stale = {p.relative_to(copy).as_posix() for p in deploy_files.stale_files(copy, roster)}
    producer = ROSTER.producer(ROSTER.streams[0])
    # On SNS + SQS its policy, and its producer's (which declares the new reader's queue).
    policies = {f"infra/k8s/iam/{name}.json" for name in ("audit", producer.name)} if SQS else set()
    assert stale == {*deploy_files.REGIONS, "infra/k8s/base/audit/kustomization.yaml", *policies}

    deploy_files.write(copy, roster)
    assert deploy_files.stale_files(copy, roster) == {}
    compose = (copy / "docker-compose.yml").read_text()
    assert "${AUDIT_HOST_PORT:-8099}:8000" in compose
    assert f"{producer.url_setting}: http://{producer.name}:8000" in compose
    assert 'CREATE DATABASE "audit";' in (copy / "infra/postgres/init-databases.sql").read_text()

    # Gone from the roster again: its generated Kubernetes folder goes with it.
    assert deploy_files.stale_files(copy)
    deploy_files.write(copy)
    assert deploy_files.stale_files(copy) == {}
    assert not (copy / "infra/k8s/base/audit").exists()
    assert not (copy / "infra/k8s/iam/audit.json").exists()


def test_an_edit_inside_a_region_is_found_and_undone(
    deploy_files: ModuleType, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = copy / "infra/postgres/init-databases.sql"
    original = sql.read_text()
    sql.write_text(original.replace(f'"{ROSTER.names[-1]}"', '"renamed"'))
    assert deploy_files.main(["--check"], root=copy) == 1
    err = capsys.readouterr().err
    assert "infra/postgres/init-databases.sql is out of step with the roster" in err
    assert '+CREATE DATABASE "' in err
    assert deploy_files.main([], root=copy) == 0
    assert sql.read_text() == original


def test_a_file_without_its_markers_is_named(
    deploy_files: ModuleType, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus = copy / "infra/prometheus/prometheus.yml"
    prometheus.write_text(prometheus.read_text().replace("# END generated: scrape jobs\n", ""))
    assert deploy_files.main(["--check"], root=copy) == 1
    assert "infra/prometheus/prometheus.yml: needs one region 'scrape jobs'" in (
        capsys.readouterr().err
    )


# --- SNS + SQS: the IAM policies ----------------------------------------------------------------

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
    return f"arn:aws:{kind}:${{AWS_REGION}}:${{AWS_ACCOUNT_ID}}:{name}"


@needs_sqs
def test_the_policies_allow_every_call_of_the_adapter_and_no_other() -> None:
    calls = adapter_calls()
    assert calls <= set(IAM_ACTIONS), f"new calls: {sorted(calls - set(IAM_ACTIONS))}"
    wanted = {IAM_ACTIONS[call] for call in calls}
    allowed: set[str] = set()
    for spec in ROSTER.services:
        text = (ROOT / "infra/k8s/iam" / f"{spec.name}.json").read_text()
        allowed |= set(grants(json.loads(text)))
    assert allowed == wanted


@needs_sqs
def test_each_policy_names_its_own_topics_and_queues_only(deploy_files: ModuleType) -> None:
    from eventkit.transports.sqs import retry_queue_name, sqs_name

    for spec in ROSTER.services:
        allowed = grants(deploy_files.iam_policy(ROSTER, spec))
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


@needs_sqs
def test_a_new_reader_is_in_its_policy_and_its_producers(deploy_files: ModuleType) -> None:
    from eventkit.transports.sqs import sqs_name

    stream = ROSTER.streams[0]
    audit = ServiceSpec("audit", 8099, subscribes=(stream,))
    roster = dataclasses.replace(ROSTER, services=(*ROSTER.services, audit))
    queue = arn("sqs", sqs_name(f"audit.{stream}"))
    producer = grants(deploy_files.iam_policy(roster, roster.producer(stream)))
    assert queue in producer["sqs:CreateQueue"] and queue not in producer["sqs:ReceiveMessage"]
    reader = grants(deploy_files.iam_policy(roster, audit))
    assert queue in reader["sqs:ReceiveMessage"]
    assert arn("sns", sqs_name(stream)) in reader["sns:Subscribe"]
    assert "sns:Publish" not in reader


@needs_sqs
def test_each_service_account_names_its_role(deploy_files: ModuleType) -> None:
    project = deploy_files.load_project(ROOT, ROSTER)
    for spec in ROSTER.services:
        text = (ROOT / deploy_files.K8S_BASE / spec.name / "kustomization.yaml").read_text()
        role = f"arn:aws:iam::AWS_ACCOUNT_ID:role/{project.images}-{spec.name}"
        assert f"eks.amazonaws.com/role-arn: {role}" in text
        assert f"serviceAccountName: {spec.name}" in text


def test_other_brokers_get_no_iam_policies_nor_service_accounts(
    deploy_files: ModuleType, copy: Path
) -> None:
    for broker in ("kafka", "rabbitmq"):
        project = deploy_files.load_project(copy, ROSTER, broker)
        files = deploy_files.expected_files(copy, project)
        assert not [f for f in files if deploy_files.K8S_IAM in f.relative_to(copy).parents]
        for file, text in files.items():
            service = file.parent.parent == copy / deploy_files.K8S_BASE
            if service and file.name == "kustomization.yaml" and text is not None:
                assert "ServiceAccount" not in text, file
