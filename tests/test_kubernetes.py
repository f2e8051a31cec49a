"""The generated project's Kustomize base, for each broker: rendered by `kubectl kustomize`,
validated by kubernetes-validate, and checked against the code and the roster (every service
deployed under its name, with settings it reads, secrets the example documents, and the
addresses of the others).
"""

from __future__ import annotations

import re
import shutil
import subprocess
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
        maximum = 3 if broker_of(baked) == "kafka" else 6
        assert hpa["spec"]["maxReplicas"] == maximum
        pdb = by_kind["PodDisruptionBudget"][name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    readme = (baked / "infra/k8s/README.md").read_text()
    scaling = "partitions" if broker_of(baked) == "kafka" else "one active consumer per queue"
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
