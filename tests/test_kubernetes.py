"""The generated project's Kustomize base, for each broker: rendered by `kubectl kustomize`,
validated by kubernetes-validate, and checked against the code and the roster (every service
deployed under its name, with settings it reads, secrets the example documents, and the
addresses of the others). On SNS + SQS: no broker in the cluster, each service under its own
ServiceAccount with its IAM role, and each role's policy allowing what the adapter calls on
that service's topics and queues, and nothing else.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    CONTAINER_PORT,
    SERVICES,
    broker_of,
    http_routes,
    roster_of,
    settings_fields,
    tool,
)


def kustomize() -> list[str] | None:
    """The command that renders a Kustomize folder here, if there is one."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if standalone := shutil.which("kustomize"):
        return [standalone, "build"]
    return None


def render(project: Path) -> str:
    command = kustomize()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is installed: the base can't be rendered")
    result = subprocess.run(
        [*command, str(project / "infra/k8s/base")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(project: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The rendered base: kind -> name -> object."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for document in yaml.safe_load_all(render(project)):
        if document:
            by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    return by_kind


def env_of_container(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def secret_keys(project: Path) -> set[str]:
    example = (project / "infra/k8s/secrets.env.example").read_text()
    return set(re.findall(r"^(\w+)=", example, re.MULTILINE))


def test_kubernetes_manifests_are_valid(baked: Path, tmp_path: Path) -> None:
    if kustomize():
        manifests = [tmp_path / "rendered.yaml"]
        manifests[0].write_text(render(baked))
    else:  # no renderer: the hand-written manifests on their own
        manifests = [
            baked / "infra/k8s/service/service.yaml",
            baked / "infra/k8s/base/configmap.yaml",
        ]
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", *map(str, manifests)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_service_of_the_roster_has_its_folder_in_the_base(baked: Path) -> None:
    base = baked / "infra/k8s/base"
    folders = {p.parent.name for p in base.glob("*/kustomization.yaml")}
    assert folders == set(roster_of(baked)) == set(SERVICES)
    for folder in folders:
        text = (base / folder / "kustomization.yaml").read_text()
        assert text.startswith("# Generated from the roster by make deploy-files"), folder
    resources = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    assert sorted(resources) == sorted(["configmap.yaml", "jaeger.yaml", *folders])


def test_kubernetes_deploys_every_service_with_probes_settings_and_secrets(baked: Path) -> None:
    by_kind = rendered(baked)
    for kind in ("Deployment", "Service"):
        assert set(by_kind[kind]) == {*SERVICES, "jaeger"}, kind
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert set(by_kind[kind]) == set(SERVICES), kind

    routes = http_routes(baked)
    assert {"/ready", "/health"} <= routes
    config_maps = {name: m["data"] for name, m in by_kind["ConfigMap"].items()}
    urls = {f"{name.upper()}_URL" for name in SERVICES}
    keys = secret_keys(baked)
    for name in SERVICES:
        deployment = by_kind["Deployment"][name]
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "replicas" not in deployment["spec"], "the HPA owns the count"
        (container,) = pod["spec"]["containers"]
        assert container["image"] == f"{baked.name}/{name}:latest"
        assert [p["containerPort"] for p in container["ports"]] == [CONTAINER_PORT]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(CONTAINER_PORT)
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

        env = env_of_container(container)
        names = set(env)
        for source in container.get("envFrom", []):
            names |= set(config_maps[source["configMapRef"]["name"]])
        unknown = names - settings_fields(baked, name) - urls
        assert not unknown, f"{name} is given {sorted(unknown)}, which it does not read"
        for item in env.values():
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "app-secrets"
                assert ref["key"] in keys, f"{name}: {ref['key']} not in secrets.env.example"
        database = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]
        assert database == f"{name.upper()}_DATABASE_URL"
        assert f"@postgres:5432/{name}" in (baked / "infra/k8s/secrets.env.example").read_text()

        service = by_kind["Service"][name]
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["port"] for p in service["spec"]["ports"]] == [CONTAINER_PORT]

        hpa = by_kind["HorizontalPodAutoscaler"][name]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        maximum = {"kafka": 3, "rabbitmq": 6, "sqs": 6}[broker_of(baked)]
        assert hpa["spec"]["maxReplicas"] == maximum
        pdb = by_kind["PodDisruptionBudget"][name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    readme = (baked / "infra/k8s/README.md").read_text()
    scaling = {
        "kafka": "partitions",
        "rabbitmq": "one active consumer per queue",
        "sqs": "one queue per subscriber",
    }[broker_of(baked)]
    assert scaling in readme


def test_every_service_knows_where_the_others_answer(baked: Path) -> None:
    """<NAME>_URL of every service, in the ConfigMap every pod reads: a rebuild reads a
    stream's feed from its producer there, through the producer's Service."""
    by_kind = rendered(baked)
    config = by_kind["ConfigMap"]["app-config"]["data"]
    for name in roster_of(baked):
        assert config[f"{name.upper()}_URL"] == f"http://{name}:{CONTAINER_PORT}", name
        assert by_kind["Service"][name]["spec"]["ports"][0]["port"] == CONTAINER_PORT
    for name in SERVICES:
        (container,) = by_kind["Deployment"][name]["spec"]["template"]["spec"]["containers"]
        sources = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
        assert "app-config" in sources


def test_email_goes_to_a_relay_the_secret_names_not_to_an_undeployed_mailpit(
    baked: Path,
) -> None:
    by_kind = rendered(baked)
    (container,) = by_kind["Deployment"]["notification"]["spec"]["template"]["spec"]["containers"]
    env = env_of_container(container)
    for setting in ("SMTP_HOST", "SMTP_PORT"):
        assert env[setting]["valueFrom"]["secretKeyRef"]["key"] == setting
        assert setting in secret_keys(baked)
    for name in set(SERVICES) - {"notification"}:
        (other,) = by_kind["Deployment"][name]["spec"]["template"]["spec"]["containers"]
        assert "SMTP_HOST" not in env_of_container(other), name
    k8s = baked / "infra/k8s"
    for path in k8s.rglob("*"):
        if path.is_file() and path.suffix != ".md":
            assert "mailpit" not in path.read_text().lower(), path
    assert "SMTP_HOST" in (k8s / "README.md").read_text()


def test_every_service_sends_its_spans_to_the_jaeger_of_the_base(baked: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT of the ConfigMap every pod reads names the jaeger Service,
    whose port reaches Jaeger's OTLP/HTTP receiver; the UI has its port too."""
    by_kind = rendered(baked)
    endpoint = by_kind["ConfigMap"]["app-config"]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in settings_fields(baked, "user")
    host, port = endpoint.removeprefix("http://").split(":")
    service = by_kind["Service"][host]
    deployment = by_kind["Deployment"][host]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("jaegertracing/jaeger:")
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert container_ports[service_ports[int(port)]] == 4318  # Jaeger's OTLP/HTTP receiver
    assert container_ports[service_ports[16686]] == 16686  # its UI
    assert container["readinessProbe"]["httpGet"] == {"path": "/status", "port": "health"}
    assert container_ports["health"] == 13133
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for name in SERVICES:
        (app,) = by_kind["Deployment"][name]["spec"]["template"]["spec"]["containers"]
        assert "app-config" in [s["configMapRef"]["name"] for s in app["envFrom"]], name
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of_container(app), name


# --- SNS + SQS on AWS ---------------------------------------------------------------------------

ACCOUNT = "123456789012"  # base/configmap.yaml's placeholder account, which the user sets
ARN_PLACEHOLDERS = "${AWS_REGION}:${AWS_ACCOUNT_ID}"  # in the IAM policies, for envsubst
OTHER_BROKERS = {
    "kafka": ("rabbitmq", "amqp", "sqs", "sns", "aws"),
    "rabbitmq": ("kafka", "sqs", "sns", "aws"),
    "sqs": ("kafka", "rabbitmq", "amqp"),
}

# What the SNS + SQS adapter may call, each with the IAM action that allows it (a batch call
# is allowed by its single action) and whose resources it needs it on:
#   topics: every topic the service publishes or reads; published: its own topics;
#   subscribed: the topics it subscribes a queue to (those it reads, and its own that others
#   read); subscriptions: its subscriptions to the topics it reads; declared: its own queues
#   and its readers' queues (a publisher declares them, declare_publisher); queues: its own
#   queues; sent: its retry and dead-letter queues.
ADAPTER_CALLS = {
    "sns.create_topic": ("sns:CreateTopic", "topics"),
    "sns.publish": ("sns:Publish", "published"),
    "sns.publish_batch": ("sns:Publish", "published"),
    "sns.subscribe": ("sns:Subscribe", "subscribed"),
    "sns.list_subscriptions_by_topic": ("sns:ListSubscriptionsByTopic", "subscribed"),
    "sns.set_subscription_attributes": ("sns:SetSubscriptionAttributes", "subscriptions"),
    "sqs.get_queue_url": ("sqs:GetQueueUrl", "declared"),
    "sqs.create_queue": ("sqs:CreateQueue", "declared"),
    "sqs.get_queue_attributes": ("sqs:GetQueueAttributes", "declared"),
    "sqs.set_queue_attributes": ("sqs:SetQueueAttributes", "declared"),
    "sqs.receive_message": ("sqs:ReceiveMessage", "queues"),
    "sqs.delete_message_batch": ("sqs:DeleteMessage", "queues"),
    "sqs.change_message_visibility_batch": ("sqs:ChangeMessageVisibility", "queues"),
    "sqs.send_message": ("sqs:SendMessage", "sent"),
}


ADAPTER_CALLS_BY_ACTION = {action: (call, kind) for call, (action, kind) in ADAPTER_CALLS.items()}


def adapter_calls(project: Path) -> set[str]:
    """Every SNS and SQS call of the adapter: `self.sns.publish(`, and paginated calls."""
    source = (project / "libs/eventkit/src/eventkit/transports/sqs.py").read_text()
    calls = set(re.findall(r"self\.(sns|sqs)\.(\w+)\(", source))
    calls |= set(re.findall(r"self\.(sns|sqs)\.get_paginator\(\s*\"(\w+)\"", source))
    return {f"{client}.{method}" for client, method in calls if method != "get_paginator"}


def sqs_name(name: str) -> str:
    """The adapter's naming rule (`sqs_name`), for the short names of the template's roster."""
    assert len(name) < 70, name
    return re.sub(r"[^A-Za-z0-9_-]", "-", name) + ".fifo"


def needed_resources(roster: dict[str, dict[str, Any]], name: str) -> dict[str, set[str]]:
    """What service `name` touches, by ADAPTER_CALLS's kinds, from the roster."""
    spec = roster[name]
    reads, publishes = spec["subscribes"], spec["publishes"]

    def topic(stream: str) -> str:
        return f"arn:aws:sns:{ARN_PLACEHOLDERS}:{sqs_name(stream)}"

    def queue(queue_name: str) -> str:
        return f"arn:aws:sqs:{ARN_PLACEHOLDERS}:{sqs_name(queue_name)}"

    retry = [queue(f"retry.{name}")] if reads else []
    dead_letters = queue(f"dlq.{name}")
    own = {queue(f"{name}.{stream}") for stream in reads} | {*retry, dead_letters}
    readers = {
        queue(f"{reader}.{stream}")
        for stream in publishes
        for reader, other in roster.items()
        if stream in other["subscribes"]
    }
    read_elsewhere = {s for s in publishes if any(s in o["subscribes"] for o in roster.values())}
    return {
        "topics": {topic(s) for s in [*publishes, *reads]},
        "published": {topic(s) for s in publishes},
        "subscribed": {topic(s) for s in {*reads, *read_elsewhere}},
        # A subscription's ARN is its topic's and an id SNS makes up.
        "subscriptions": {arn for s in reads for arn in (topic(s), f"{topic(s)}:*")},
        "declared": own | readers,
        "queues": own,
        "sent": {*retry, dead_letters},
    }


def test_only_the_chosen_broker_is_in_the_kubernetes_files(baked: Path) -> None:
    """No Kafka or RabbitMQ in an SNS + SQS project's Kubernetes files, and no AWS in the
    others'; BROKER_URL is a secret where it holds a password, `aws` in the ConfigMap on AWS."""
    broker = broker_of(baked)
    k8s = baked / "infra/k8s"
    for path in k8s.rglob("*"):
        if path.is_file():
            text = path.read_text().lower()
            for word in OTHER_BROKERS[broker]:
                assert not re.search(rf"\b{word}\b", text), f"{word} in {path}"
    config = rendered(baked)["ConfigMap"]["app-config"]["data"]
    if broker == "sqs":
        assert config["BROKER_URL"] == "aws"
        assert config["AWS_REGION"]
        assert "BROKER_URL" not in secret_keys(baked)
        assert {"BROKER_URL", "AWS_REGION"} <= settings_fields(baked, "user")
    else:
        assert "BROKER_URL" not in config and "AWS_REGION" not in config
        assert "BROKER_URL" in secret_keys(baked)
        assert not (k8s / "iam").exists()


def test_on_aws_each_service_runs_as_its_own_iam_role(baked: Path) -> None:
    by_kind = rendered(baked)
    if broker_of(baked) != "sqs":
        assert "ServiceAccount" not in by_kind
        for name in SERVICES:
            assert (
                "serviceAccountName" not in by_kind["Deployment"][name]["spec"]["template"]["spec"]
            )
        return
    assert set(by_kind["ServiceAccount"]) == set(SERVICES)
    assert "aws-account" not in by_kind["ConfigMap"], "local-config: Kustomize's only"
    prefix = yaml.safe_load((baked / "infra/k8s/base/kustomization.yaml").read_text())["images"][0][
        "name"
    ].split("/")[0]
    for name in SERVICES:
        pod = by_kind["Deployment"][name]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        account = by_kind["ServiceAccount"][name]
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert role == f"arn:aws:iam::{ACCOUNT}:role/{prefix}-{name}"
        assert account["automountServiceAccountToken"] is False
    readme = (baked / "infra/k8s/README.md").read_text()
    for words in ("eks.amazonaws.com/role-arn", "iam/<service>.json", "high-throughput FIFO"):
        assert words in readme, words
    assert ACCOUNT in (baked / "infra/k8s/base/configmap.yaml").read_text()


def test_each_iam_policy_allows_what_the_adapter_calls_on_its_own_resources_only(
    project_for: Callable[[str, bool], Path],
) -> None:
    """infra/k8s/iam/<service>.json of an SNS + SQS project (the others have none): valid
    JSON, one per service of the roster, allowing each SNS and SQS call of the adapter on the
    resources of that service it needs it on, and nothing else (no other action, no other
    service's topic or queue, no bare wildcard)."""
    baked = project_for("sqs", False)
    calls = adapter_calls(baked)
    unknown = calls - set(ADAPTER_CALLS)
    assert not unknown, f"the adapter calls {sorted(unknown)}: allow it in the policies, and here"
    roster = roster_of(baked)
    folder = baked / "infra/k8s/iam"
    assert {p.stem for p in folder.glob("*.json")} == set(roster) == set(SERVICES)
    for name in roster:
        policy = json.loads((folder / f"{name}.json").read_text())
        assert policy["Version"] == "2012-10-17"
        granted: set[tuple[str, str]] = set()
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow" and set(statement) == {
                "Sid",
                "Effect",
                "Action",
                "Resource",
            }, statement
            for resource in statement["Resource"]:
                assert resource.startswith(("arn:aws:sns:", "arn:aws:sqs:")), resource
                assert ARN_PLACEHOLDERS in resource, resource
                granted |= {(action, resource) for action in statement["Action"]}
        resources = needed_resources(roster, name)
        needed = {
            (action, resource)
            for call in calls
            for action, kind in [ADAPTER_CALLS[call]]
            for resource in resources[kind]
        }
        assert needed - granted == set(), f"{name}: not allowed"
        assert granted - needed == set(), f"{name}: more than the adapter needs"
        # Wildcards only where the name is not known: a subscription's id.
        for action, resource in granted:
            if "*" in resource:
                assert action == "sns:SetSubscriptionAttributes", (action, resource)
                assert resource.endswith(".fifo:*"), resource
        # Nothing of another service: its queues are read, and sent to, by it alone, its
        # topics published by their producer alone.
        for other in set(roster) - {name}:
            theirs = needed_resources(roster, other)
            for action, resource in granted:
                if resource in theirs["queues"] - resources["declared"]:
                    raise AssertionError(f"{name} may {action} on {other}'s {resource}")
                if resource in theirs["queues"]:  # a publisher declares its readers'
                    assert ADAPTER_CALLS_BY_ACTION[action][1] == "declared", (name, action)
                if resource in theirs["published"]:
                    assert action != "sns:Publish", (name, resource)
