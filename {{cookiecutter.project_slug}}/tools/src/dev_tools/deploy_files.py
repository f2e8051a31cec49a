"""Write every per-service part of the deployment files from the roster.

    python -m dev_tools deploy-files           rewrite them                  (make deploy-files)
    python -m dev_tools deploy-files --check   exit 1 naming each file out of step with the
                                             roster, with a short diff (make test, CI)

The roster, `ROSTER` in libs/contracts/src/contracts/roster.py, names every service, its
port and the streams it publishes and subscribes to. Compose, Prometheus, PostgreSQL and
Kubernetes cannot import it, so they hold each per-service fact only where this script
writes it:

- in a marked region of a hand-written file, which this script rewrites and nothing else:

      # BEGIN generated from the roster by make deploy-files: <region>
      ...
      # END generated: <region>

  (`--` instead of `#` in SQL). Edit outside the markers, never inside.
- in a wholly generated file: `infra/k8s/base/<service>/kustomization.yaml`, the one shape
  of a service (`infra/k8s/service`) under the service's name, image and database, with
  whatever patches the broker's own module adds; and any file that module writes.

A broker's own deployment files: `dev_tools/deploy_files_<broker>.py`, if the project's
broker has one (see `broker_module`), provides

- `k8s_patches(project, spec) -> list[str]`: lines added to the `patches:` of service
  `spec`'s kustomization.yaml, after the shared ones and before the service's own files;
- `files(root, project) -> dict[Path, str | None]`: more wholly generated files, path ->
  text (None: a file of a service gone from the roster, to be removed).

A setting of one service that the roster does not give stays hand-written, beside the
generated part, and this script picks it up:

- docker-compose.yml: an anchor `&<service>-environment` or `&<service>-depends-on` outside
  the regions is merged into that service's `environment` or `depends_on`;
- Kubernetes: any other `.yaml` file in `infra/k8s/base/<service>/` is applied to that
  service as a patch.

In containers every service listens on port 8000 (the Dockerfile sets PORT) and finds
another at `http://<name>:8000`; its roster port is where it answers on the host. Image
names are `<project>/<service>`, <project> being the root pyproject.toml's project name.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from contracts import ROSTER
from dev_tools import ROOT
from eventkit.roster import Roster, ServiceSpec
from eventkit.settings import shipped_broker

CONTAINER_PORT = 8000  # the Dockerfile's PORT: where every service listens in its container
BEGIN = "BEGIN generated from the roster by make deploy-files: "
END = "END generated: "
# The first line of a wholly generated file.
GENERATED = "# Generated from the roster by make deploy-files: do not edit; see the notes below."
K8S_BASE = Path("infra/k8s/base")
# The module of a broker's own deployment files, if its broker has one (see above).
BROKER_MODULE = "dev_tools.deploy_files_{broker}"
# The hand-written settings a compose service may add to its generated block.
COMPOSE_EXTRAS = ("environment", "depends_on")
DATABASE_URL = (
    "postgresql+asyncpg://${POSTGRES_USER:-app}:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD "
    "in .env (copy .env.example)}@postgres:5432/"
)


@dataclass(frozen=True)
class Project:
    """What the generated text depends on: the roster and the project's image prefix."""

    roster: Roster
    images: str  # image names are <images>/<service>
    broker: str = "memory"  # the broker the project ships (eventkit.settings.shipped_broker)

    def image(self, name: str) -> str:
        return f"{self.images}/{name}"


def image_prefix(project_name: str) -> str:
    """A Docker repository name part from the project's name: lowercase letters and digits
    joined by single underscores (`my___app` -> `my_app`), as Docker accepts."""
    return re.sub(r"[^a-z0-9]+", "_", project_name.lower()).strip("_")


def container_url(name: str) -> str:
    return f"http://{name}:{CONTAINER_PORT}"


def feeds(roster: Roster, spec: ServiceSpec) -> list[ServiceSpec]:
    """The producers of the streams `spec` subscribes to: where its rebuilds read."""
    producers = {roster.producer(stream).name for stream in spec.subscribes}
    return [other for other in roster.services if other.name in producers]


def indent(lines: list[str], by: int) -> list[str]:
    return [" " * by + line if line else line for line in lines]


# --- the regions ------------------------------------------------------------------------------


def compose_services(project: Project, text: str) -> list[str]:
    """Each service's block under `services:` in docker-compose.yml."""
    lines: list[str] = []
    for spec in project.roster.services:
        extras = compose_extras(spec.name, text)
        lines += [
            *([""] if lines else []),
            f"{spec.name}:",
            "  <<: *service",
            f"  image: {project.image(spec.name)}:latest",
            "  build:",
            "    context: .",
            "    target: service",
            "    args:",
            f"      SERVICE: {spec.name}",
        ]
        if "depends_on" in extras:
            lines += ["  depends_on:", f"    <<: [*service-depends-on, {extras['depends_on']}]"]
        lines += [
            "  environment:",
            f"    <<: {merge('*service-environment', extras.get('environment'))}",
            f"    DATABASE_URL: {DATABASE_URL}{spec.name}",
            *(
                f"    {producer.url_setting}: {container_url(producer.name)}"
                for producer in feeds(project.roster, spec)
            ),
            "  ports:",
            f"    - 127.0.0.1:{host_port(spec)}:{CONTAINER_PORT}",
        ]
    return lines


def compose_extras(name: str, text: str) -> dict[str, str]:
    """The hand-written anchors of service `name` in `text`: setting -> `*<name>-<setting>`."""
    found: dict[str, str] = {}
    for key in COMPOSE_EXTRAS:
        anchor = f"{name}-{key.replace('_', '-')}"
        if re.search(rf"&{re.escape(anchor)}(?=\s)", text):
            found[key] = f"*{anchor}"
    return found


def merge(shared: str, extra: str | None) -> str:
    """A YAML merge key's value: the shared anchor, then the service's own if it has one."""
    return f"[{shared}, {extra}]" if extra else shared


def host_port_setting(spec: ServiceSpec) -> str:
    return f"{spec.name.upper()}_HOST_PORT"


def host_port(spec: ServiceSpec) -> str:
    """Compose's host port of a service: its setting in .env, else its roster port."""
    return "${" + f"{host_port_setting(spec)}:-{spec.port}" + "}"


def compose_test_runners(project: Project, text: str) -> list[str]:
    """What the test runners (profile test) share: they wait for every service and reach
    each at its <NAME>_URL."""
    lines = [
        "x-test-runner: &test-runner",
        "  profiles: [test]",
        f"  image: {project.image('tests')}:latest",
        "  build:",
        "    context: .",
        "    target: tests",
        "  depends_on:",
    ]
    for spec in project.roster.services:
        lines += [f"    {spec.name}:", "      condition: service_healthy"]
    lines.append("x-service-urls: &service-urls")
    lines += [f"  {s.url_setting}: {container_url(s.name)}" for s in project.roster.services]
    return lines


def compose_scale(project: Project, text: str) -> list[str]:
    """infra/compose/scale.yml: a free host port for each replica of a consumer."""
    lines: list[str] = []
    for spec in project.roster.consumers:
        lines += [f"{spec.name}:", "  ports: !override", f"    - 127.0.0.1::{CONTAINER_PORT}"]
    return lines


def prometheus_jobs(project: Project, text: str) -> list[str]:
    lines: list[str] = []
    for spec in project.roster.services:
        lines += [
            f"- job_name: {spec.name}",
            "  metrics_path: /metrics",
            "  dns_sd_configs:",
            f"    - names: [{spec.name}]",
            "      type: A",
            f"      port: {CONTAINER_PORT}",
        ]
    return lines


def postgres_databases(project: Project, text: str) -> list[str]:
    return [f'CREATE DATABASE "{name}";' for name in project.roster.names]


def env_host_ports(project: Project, text: str) -> list[str]:
    return [f"# {host_port_setting(s)}={s.port}" for s in project.roster.services]


def k8s_database_secrets(project: Project, text: str) -> list[str]:
    return [
        f"{database_secret(s)}=postgresql+asyncpg://app:changethis@postgres:5432/{s.name}"
        for s in project.roster.services
    ]


def database_secret(spec: ServiceSpec) -> str:
    return f"{spec.name.upper()}_DATABASE_URL"


def k8s_service_urls(project: Project, text: str) -> list[str]:
    return [f"{s.url_setting}: {container_url(s.name)}" for s in project.roster.services]


def k8s_resources(project: Project, text: str) -> list[str]:
    return [f"- {name}" for name in project.roster.names]


def k8s_images(project: Project, text: str) -> list[str]:
    lines: list[str] = []
    for name in project.roster.names:
        lines += [f"- name: {project.image(name)}", "  newTag: latest"]
    return lines


Render = Callable[[Project, str], list[str]]
# file -> region -> what writes it
REGIONS: dict[str, dict[str, Render]] = {
    "docker-compose.yml": {"test runners": compose_test_runners, "services": compose_services},
    "infra/compose/scale.yml": {"consumers": compose_scale},
    "infra/prometheus/prometheus.yml": {"scrape jobs": prometheus_jobs},
    "infra/postgres/init-databases.sql": {"databases": postgres_databases},
    ".env.example": {"host ports": env_host_ports},
    "infra/k8s/secrets.env.example": {"databases": k8s_database_secrets},
    "infra/k8s/base/configmap.yaml": {"service addresses": k8s_service_urls},
    "infra/k8s/base/kustomization.yaml": {"services": k8s_resources, "images": k8s_images},
}


# --- the wholly generated files ---------------------------------------------------------------


def k8s_service(project: Project, spec: ServiceSpec, patches: list[str]) -> str:
    """infra/k8s/base/<service>/kustomization.yaml."""
    name = spec.name
    lines = [
        GENERATED,
        f"# The {name} service: the one shape of a service (../../service) under its name,",
        "# with its image and its database. Change the shape there, the services in",
        "# libs/contracts/src/contracts/roster.py; a .yaml file of your own in this folder is",
        "# applied to this service as a patch, after these.",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        "  - ../../service",
        "labels:",
        "  - pairs:",
        f"      app.kubernetes.io/name: {name}",
        "    includeSelectors: true",
        "images:",
        "  - name: app",
        f"    newName: {project.image(name)}",
        "patches:",
        "  # The shape's objects are all named `app`: they take the service's name, and the",
        "  # autoscaler's target with them.",
        "  - target:",
        "      name: app",
        "    options:",
        "      allowNameChange: true",
        "    patch: |-",
        "      - op: replace",
        "        path: /metadata/name",
        f"        value: {name}",
        "  - target:",
        "      kind: HorizontalPodAutoscaler",
        "    patch: |-",
        "      - op: replace",
        "        path: /spec/scaleTargetRef/name",
        f"        value: {name}",
        f"  # Its own database: {database_secret(spec)} of the app-secrets Secret.",
        "  - patch: |-",
        "      apiVersion: apps/v1",
        "      kind: Deployment",
        "      metadata:",
        f"        name: {name}",
        "      spec:",
        "        template:",
        "          spec:",
        "            containers:",
        "              - name: app",
        "                env:",
        "                  - name: DATABASE_URL",
        "                    valueFrom:",
        "                      secretKeyRef:",
        "                        name: app-secrets",
        f"                        key: {database_secret(spec)}",
        *broker_patches(project, spec),
        *(f"  - path: {patch}" for patch in patches),
    ]
    return "\n".join(lines) + "\n"


def k8s_services(root: Path, project: Project) -> dict[Path, str | None]:
    """Each service's kustomization.yaml, and None for one whose service left the roster."""
    files: dict[Path, str | None] = {}
    base = root / K8S_BASE
    for spec in project.roster.services:
        folder = base / spec.name
        patches = sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
        files[folder / "kustomization.yaml"] = k8s_service(project, spec, patches)
    for stale in base.glob("*/kustomization.yaml"):
        if stale not in files and stale.read_text().startswith(GENERATED):
            files[stale] = None
    return files


# --- a broker's own deployment files ---------------------------------------------------------


def broker_module(broker: str) -> ModuleType | None:
    """dev_tools.deploy_files_<broker>, the broker's own deployment files; None if it has
    none."""
    name = BROKER_MODULE.format(broker=broker)
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


def broker_patches(project: Project, spec: ServiceSpec) -> list[str]:
    """The lines the broker's own module adds to the patches of service `spec`."""
    module = broker_module(project.broker)
    return list(module.k8s_patches(project, spec)) if module else []


def broker_files(root: Path, project: Project) -> dict[Path, str | None]:
    """The files the broker's own module writes (None: should not exist)."""
    module = broker_module(project.broker)
    return dict(module.files(root, project)) if module else {}


# --- reading and writing ----------------------------------------------------------------------


class RegionError(Exception):
    """A file this script cannot rewrite: its markers are missing or broken."""


def marker(comment: str, text: str) -> str:
    return f"{comment} {text}"


def fill_regions(path: str, text: str, regions: dict[str, Render], project: Project) -> str:
    """`text` with each named region's body written anew from the roster."""
    comment = "--" if path.endswith(".sql") else "#"
    for name, render in regions.items():
        begin = re.compile(rf"^([ \t]*){re.escape(marker(comment, BEGIN + name))}[ \t]*\n", re.M)
        end = re.compile(rf"^[ \t]*{re.escape(marker(comment, END + name))}[ \t]*$", re.M)
        starts, ends = list(begin.finditer(text)), list(end.finditer(text))
        if len(starts) != 1 or len(ends) != 1 or ends[0].start() < starts[0].end():
            raise RegionError(
                f"{path}: needs one region {name!r}, between the lines "
                f"'{marker(comment, BEGIN + name)}' and '{marker(comment, END + name)}'"
            )
        outside = text[: starts[0].start()] + text[ends[0].end() :]
        body = indent(render(project, outside), len(starts[0].group(1)))
        text = (
            text[: starts[0].end()]
            + "".join(f"{line}\n" for line in body)
            + text[ends[0].start() :]
        )
    return text


def expected_files(root: Path, project: Project) -> dict[Path, str | None]:
    """Every file this script writes, as the roster wants it (None: should not exist)."""
    files: dict[Path, str | None] = {}
    for path, regions in REGIONS.items():
        file = root / path
        if not file.exists():
            raise RegionError(f"{path}: missing (it holds the regions {', '.join(regions)})")
        files[file] = fill_regions(path, file.read_text(), regions, project)
    files |= k8s_services(root, project)
    files |= broker_files(root, project)
    return files


def load_project(root: Path, roster: Roster, broker: str | None = None) -> Project:
    """`broker`: unset, the one the project ships."""
    name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    return Project(roster=roster, images=image_prefix(name), broker=broker or shipped_broker())


def stale_files(root: Path, roster: Roster = ROSTER) -> dict[Path, tuple[str, str | None]]:
    """Files out of step with the roster: path -> (what is there, what should be)."""
    stale: dict[Path, tuple[str, str | None]] = {}
    for file, wanted in expected_files(root, load_project(root, roster)).items():
        current = file.read_text() if file.exists() else None
        if wanted != current:
            stale[file] = (current or "", wanted)
    return stale


def short_diff(root: Path, file: Path, current: str, wanted: str | None, limit: int = 30) -> str:
    name = file.relative_to(root).as_posix()
    lines = list(
        difflib.unified_diff(
            current.splitlines(), (wanted or "").splitlines(), name, f"{name} (roster)", lineterm=""
        )
    )
    more = f"\n... {len(lines) - limit} more lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def write(root: Path, roster: Roster = ROSTER) -> list[Path]:
    """Rewrite every stale file; the paths written or removed."""
    stale = stale_files(root, roster)
    for file, (_current, wanted) in stale.items():
        if wanted is None:
            file.unlink()
            if not any(file.parent.iterdir()):
                file.parent.rmdir()
        else:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(wanted)
    return list(stale)


def main(argv: list[str], root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a file is out of step with the roster"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_files(root)
            for file, (current, wanted) in stale.items():
                what = "should not exist" if wanted is None else "is out of step with the roster"
                print(f"{file.relative_to(root)} {what}:", file=sys.stderr)
                print(short_diff(root, file, current, wanted), file=sys.stderr)
            if stale:
                print("run `make deploy-files` to rewrite them", file=sys.stderr)
            return 1 if stale else 0
        written = write(root)
        for file in written:
            print(f"wrote {file.relative_to(root)}")
        if not written:
            print("every deployment file is in step with the roster")
    except RegionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
