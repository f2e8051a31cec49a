"""The generated project's one Dockerfile and its build context, for each broker: hadolint on
every Dockerfile, the stages each image is built from, what they copy (it exists and
.dockerignore lets it in), how each image runs, and the image names compose and Kubernetes
give them (Docker accepts them, also for an awkward project name).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import (
    CONTAINER_PORT,
    IMAGE_NAME,
    PYTHON_VERSION,
    SERVICES,
    bake,
    clean_env,
    compose,
    compose_config,
    http_routes,
    roster_of,
    tool,
)


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


def stages(project: Path) -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name, each with its instructions from its FROM on."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for kind, arguments in dockerfile_instructions((project / "Dockerfile").read_text()):
        if kind == "FROM":
            words = arguments.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {arguments}"
            current = found.setdefault(words[2], [])
        current.append((kind, arguments))
    return found


def stage_chain(all_stages: dict[str, list[tuple[str, str]]], name: str) -> list[str]:
    """`name` and the stages it is built on, nearest first."""
    chain = [name]
    while (base := all_stages[chain[-1]][0][1].split()[0]) in all_stages:
        chain.append(base)
    return chain


def build_steps(all_stages: dict[str, list[tuple[str, str]]], target: str) -> list[tuple[str, str]]:
    """Every instruction that goes into the image of `target`: its stages, and those of the
    stages it copies from."""
    steps: list[tuple[str, str]] = []
    for stage in reversed(stage_chain(all_stages, target)):
        for kind, arguments in all_stages[stage]:
            if kind == "COPY" and (source := re.match(r"--from=(\S+)", arguments)):
                steps += build_steps(all_stages, source.group(1))
            steps.append((kind, arguments))
    return steps


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


def copied(project: Path, steps: list[tuple[str, str]], service: str) -> list[str]:
    """The build-context paths a stage COPYs, with SERVICE standing for `service`."""
    sources: list[str] = []
    for kind, arguments in steps:
        if kind != "COPY" or arguments.startswith("--from"):
            continue
        *paths, _destination = [a for a in arguments.split() if not a.startswith("--")]
        sources += [p.replace("${SERVICE}", service) for p in paths]
    return sources


def image_names(project: Path) -> dict[str, str]:
    """Where an image is named -> the name (no tag): compose's images and Kubernetes'."""
    services = compose_config(project, "test")["services"]
    names = {
        f"compose {name}": service["image"].rsplit(":", 1)[0]
        for name, service in services.items()
        if "build" in service
    }
    for kustomization in (project / "infra/k8s/base").glob("**/kustomization.yaml"):
        for image in yaml.safe_load(kustomization.read_text()).get("images", []):
            where = kustomization.relative_to(project).as_posix()
            names[f"{where} {image['name']}"] = image.get("newName", image["name"])
    return names


# --- hadolint and the stages ----------------------------------------------------------------


def test_every_dockerfile_passes_hadolint(baked: Path) -> None:
    dockerfiles = sorted(
        p.relative_to(baked).as_posix()
        for p in baked.rglob("*Dockerfile*")
        if p.is_file() and ".venv" not in p.parts and not p.name.endswith(".dockerignore")
    )
    assert dockerfiles == ["Dockerfile"], "one Dockerfile builds every image"
    for dockerfile in dockerfiles:
        result = subprocess.run(
            [tool("hadolint"), "--no-color", str(baked / dockerfile)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "", result.stdout
        for line in (baked / dockerfile).read_text().splitlines():
            if "hadolint ignore=" in line:
                assert re.search(r"hadolint ignore=[\w,]+\s+\S", line), f"no reason: {line}"


def test_the_dockerfile_needs_no_registry_for_its_frontend(baked: Path) -> None:
    """A `# syntax=` directive makes BuildKit pull a frontend image before it reads the file:
    with no registry (offline, air-gapped), every build fails on it."""
    first = (baked / "Dockerfile").read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first


def test_dockerfile_stages_build_on_the_chosen_python(baked: Path) -> None:
    steps = dockerfile_instructions((baked / "Dockerfile").read_text())
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert args["PYTHON_VERSION"] == PYTHON_VERSION
    all_stages = stages(baked)
    assert {"service", "tests"} <= set(all_stages)
    assert list(all_stages)[-1] == "service", "a plain `docker build` builds a service"
    for name, instructions in all_stages.items():
        base = instructions[0][1].split()[0]
        assert base in all_stages or base == "python:${PYTHON_VERSION}-slim", (name, base)
    for target in ("service", "tests"):
        assert len(stage_chain(all_stages, target)) >= 2, "multi-stage"
        users = [a for kind, a in all_stages[target] if kind == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} runs as root"


def test_each_service_image_installs_the_libs_and_its_service(baked: Path) -> None:
    """Everything a service stage copies exists for every service of the roster, and the
    build context (.dockerignore) lets it in."""
    all_stages = stages(baked)
    steps = build_steps(all_stages, "service")
    assert ("ARG", "SERVICE") in steps
    ignored = dockerignore(baked)
    for service in roster_of(baked):
        sources = copied(baked, steps, service)
        assert {f"services/{service}/src", "libs/eventkit/src", "libs/contracts/src"} <= set(
            sources
        ), sources
        for source in sources:
            path = baked / source
            assert path.exists(), f"COPY {source}: not in the build context"
            assert source in ("requirements.lock", "pyproject.toml") or source.startswith(
                ("libs/eventkit/", "libs/contracts/", f"services/{service}/")
            ), source
            shipped = [path] if path.is_file() else list(path.rglob("*.py"))
            assert shipped, source
            for file in shipped:
                relative = file.relative_to(baked).as_posix()
                assert not dockerignore_excludes(ignored, relative), f"{relative} is ignored"


def test_every_image_installs_from_the_lock_with_uv_and_a_cache_mount(baked: Path) -> None:
    """uv comes from requirements.lock with its hashes (pip, --require-hashes); every other
    install is uv's, with the lock's versions and hashes as constraints and BuildKit's cache;
    no registry host is named."""
    instructions = dockerfile_instructions((baked / "Dockerfile").read_text())
    runs = [a for kind, a in instructions if kind == "RUN"]
    pip = [run for run in runs if re.search(r"(?<!uv )\bpip install", run)]
    assert len(pip) == 1 and "--require-hashes" in pip[0], pip
    assert re.search(r"sed -n '/\^uv==/,[^']*' requirements\.lock", pip[0]), pip[0]
    uv = [run for run in runs if "uv pip install" in run]
    assert len(uv) >= 5, uv  # libs' packages, the libs, a service's packages, it, the tests'
    for run in uv:
        assert run.startswith("--mount=type=cache,target=/root/.cache/uv "), run
        assert "--constraint requirements.lock" in run, run
    text = (baked / "Dockerfile").read_text()
    hosts = re.findall(r"\w+://([^/'\s]+)", text)
    assert set(hosts) <= {"127.0.0.1:"}, hosts


def test_a_service_image_runs_its_service_on_port_8000(baked: Path) -> None:
    service = stages(baked)["service"]
    assert ("ARG", "SERVICE") in service
    env = " ".join(a for kind, a in service if kind == "ENV")
    assert "HOST=0.0.0.0" in env and f"PORT={CONTAINER_PORT}" in env
    assert "SERVICE=${SERVICE}" in env
    assert ("EXPOSE", str(CONTAINER_PORT)) in service
    (healthcheck,) = [a for kind, a in service if kind == "HEALTHCHECK"]
    assert "http://127.0.0.1:' + os.environ['PORT'] + '/health'" in healthcheck
    assert "/health" in http_routes(baked)
    (command,) = [json.loads(a) for kind, a in service if kind == "CMD"]
    assert command[:2] == ["sh", "-c"] and command[2].startswith("exec python -m ")
    assert '"${SERVICE}_service"' in command[2]
    for name in roster_of(baked):
        assert (baked / f"services/{name}/src/{name}_service/__main__.py").exists(), name


def test_the_tests_image_runs_the_e2e_suite_with_what_it_needs(baked: Path) -> None:
    all_stages = stages(baked)
    steps = build_steps(all_stages, "tests")
    ignored = dockerignore(baked)
    sources = copied(baked, steps, "-")
    assert {"tests", "conftest.py", "libs/eventkit/src", "libs/contracts/src"} <= set(sources)
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
        "libs/contracts/src/contracts/roster.py",
        *[p.relative_to(baked).as_posix() for p in (baked / "tests/e2e").glob("*.py")],
    ):
        assert not dockerignore_excludes(ignored, needed), needed
    (command,) = [json.loads(a) for kind, a in all_stages["tests"] if kind == "CMD"]
    assert command == ["python", "-m", "pytest", "tests/e2e", "-p", "no:cacheprovider"]


def test_dockerignore_keeps_secrets_and_local_state_out(baked: Path) -> None:
    ignored = dockerignore(baked)
    for path in (".env", "var/user.db", ".venv/bin/python", ".git/config", "reports/x.html"):
        assert dockerignore_excludes(ignored, path), path
    for path in ("services/user/tests/test_api.py", "libs/eventkit/tests/test_events.py"):
        assert dockerignore_excludes(ignored, path), path
    assert dockerignore_excludes(ignored, "libs/eventkit/src/eventkit/__pycache__/x.pyc")
    assert dockerignore_excludes(ignored, "infra/k8s/secrets.env")
    assert not dockerignore_excludes(ignored, "libs/eventkit/src/eventkit/envelope.py")


# --- what builds the images -----------------------------------------------------------------


def test_compose_builds_each_image_from_its_dockerfile_stage(baked: Path) -> None:
    services = compose_config(baked, "test")["services"]
    all_stages = stages(baked)
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    for name, build in built.items():
        assert Path(build["context"]).resolve() == baked.resolve(), name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert build["target"] in all_stages, name
    app = {name for name, build in built.items() if build["target"] == "service"}
    assert app == set(SERVICES) == set(roster_of(baked))
    for name in app:
        assert built[name]["args"] == {"SERVICE": name}, name
    assert {name for name, build in built.items() if build["target"] == "tests"} == {
        "e2e",
        "locust",
        "locust-worker",
    }


def test_images_are_named_for_the_project_and_kubernetes_runs_the_ones_compose_builds(
    baked: Path,
) -> None:
    prefix = baked.name  # kafka_app, rabbitmq_app, sqs_app
    names = image_names(baked)
    for where, name in names.items():
        assert IMAGE_NAME.fullmatch(name), f"{where}: {name!r} is not a Docker image name"
    compose_images = {n for w, n in names.items() if w.startswith("compose ")}
    assert compose_images == {f"{prefix}/{s}" for s in [*SERVICES, "tests"]}
    kubernetes_images = {n for w, n in names.items() if not w.startswith("compose ")}
    assert kubernetes_images == {f"{prefix}/{s}" for s in SERVICES}


def image_prefix_rule(project: Path) -> Callable[[str], str]:
    """dev_tools/deploy_files.py's image_prefix, run on its own (the template's tests can't
    import the script: it imports the roster and eventkit)."""
    tree = ast.parse((project / "tools/src/dev_tools/deploy_files.py").read_text())
    (function,) = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "image_prefix"
    ]
    namespace: dict[str, Any] = {"re": re}
    exec(
        compile(ast.Module(body=[function], type_ignores=[]), "deploy_files.py", "exec"), namespace
    )
    rule: Callable[[str], str] = namespace["image_prefix"]
    return rule


def test_an_awkward_project_name_still_gives_docker_image_names(tmp_path: Path) -> None:
    """A slug may be any lowercase Python identifier; my___app is one, but Docker refuses it
    in an image name. The images are my_app/<service>, in the files as baked and as
    make deploy-files writes them."""
    result = bake(tmp_path, project_name="My - App", project_slug="my___app")
    assert result.returncode == 0, result.stderr
    (project,) = tmp_path.iterdir()
    slug = project.name
    assert slug == "my___app"
    assert image_prefix_rule(project)(slug) == "my_app"
    names = image_names(project)
    assert names
    for where, name in names.items():
        assert IMAGE_NAME.fullmatch(name), f"{where}: {name!r} is not a Docker image name"
        assert name.split("/")[0] == image_prefix_rule(project)(slug), where
    assert compose(project, "--profile", "*", "config", "--quiet").returncode == 0


# --- the install steps, replayed without an engine ------------------------------------------


def stage_environment(steps: list[tuple[str, str]], replace: dict[str, str]) -> dict[str, str]:
    """The ENV values of `steps` (KEY=value pairs, `$PATH` expanded against ours), with the
    image's paths replaced by ours."""
    environment: dict[str, str] = {}
    for kind, arguments in steps:
        if kind != "ENV":
            continue
        for pair in shlex.split(arguments):
            key, value = pair.split("=", 1)
            for image_path, ours in replace.items():
                value = value.replace(image_path, ours)
            environment[key] = value.replace("$PATH", os.environ["PATH"])
    return environment


def test_a_service_image_runs_without_the_source_tree_it_was_built_from(
    baked: Path, tmp_path: Path
) -> None:
    """The service stages' install steps (RUN, as the Dockerfile writes them) replayed into a
    scratch virtualenv from a copy of what they COPY; then the copy is deleted, as the runtime
    stage has no /src, and every package still imports. An editable install (a .pth file
    pointing into /src) fails here."""
    all_stages = stages(baked)
    # The stages that fill the virtualenv the service stage copies (its `COPY --from`).
    (source_stage,) = re.findall(r"--from=(\S+) /opt/venv", str(all_stages["service"]))
    steps = [s for s in build_steps(all_stages, source_stage) if s[0] in ("ENV", "RUN", "COPY")]
    uv_stage = set(all_stages["uv"])  # pip installs uv there; the template's own uv stands in
    source, venv = tmp_path / "src", tmp_path / "venv"
    replace = {"/opt/venv": str(venv), "/src": str(source)}
    services = list(roster_of(baked))
    for service in services:
        for path in copied(baked, steps, service):
            target = source / path
            if (baked / path).is_dir():
                shutil.copytree(baked / path, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(baked / path, target)
    env = clean_env() | stage_environment(steps, replace)
    env["PATH"] = f"{venv / 'bin'}:{Path(tool('uv')).parent}:{env['PATH']}"
    env.pop("PYTHONPATH", None)
    ran: set[str] = set()  # the libs' steps once; a service's steps for each service
    for service in services:
        for kind, arguments in steps:
            if kind != "RUN" or (kind, arguments) in uv_stage:
                continue
            command = re.sub(r"^(--mount=\S+\s+)+", "", arguments).replace("${SERVICE}", service)
            for image_path, ours in replace.items():
                command = command.replace(image_path, ours)
            command = re.sub(r"^python ", f"{sys.executable} ", command)
            if command in ran:
                continue
            # Only the steps that install, never one that would change this machine.
            assert re.match(r"(uv pip install|\S*python -m venv|test -n) ", command), command
            ran.add(command)
            result = subprocess.run(
                ["sh", "-c", command],
                cwd=source,
                env=env | {"SERVICE": service},  # the build argument
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    shutil.rmtree(source)
    packages = ["eventkit", "contracts", *(f"{name}_service.main" for name in services)]
    imported = subprocess.run(
        [str(venv / "bin/python"), "-c", f"import {', '.join(packages)}"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
