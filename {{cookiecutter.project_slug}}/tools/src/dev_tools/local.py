"""Run the broker and every service of the roster as local processes.

    python -m dev_tools local up      start what is not running; return once every /ready is 200
    python -m dev_tools local down    stop everything `up` started, and nothing else
    python -m dev_tools local status
    python -m dev_tools local dev     the stack in the foreground, each service restarting when
                                    its code changes; Ctrl-C stops everything it started

The services are those of the roster (libs/contracts). Each listens on the port of its
`<NAME>_URL` (USER_URL, BILLING_URL, ...) when that is set, else on its roster port, and
every service is given every `<NAME>_URL`, so a rebuild finds the feeds it reads.
BROKER_URL passes through to the services; the broker is dev_tools/local_broker_<kind>.py,
where the kind is BROKER or the broker this project was generated for. DATABASE_URL
(default: a SQLite file per service under var/) may contain `{service}`, replaced by each
service's name, e.g. postgresql+asyncpg://postgres@127.0.0.1/shop_{service}.

`up` runs them in the background under supervisord, with logs in var/log/.
REPLICAS=N runs N processes of every service: replica k (from 0) is the program
`<service>` (k = 0) or `<service>-<k>`, listening on the service's port + 100 * k, all on
the service's one database; with PostgreSQL they share the work (the outbox relay, migrations
and emails each take a lock), with SQLite keep 1. `up` starts whichever is not running.

`dev` runs one process of each as its own children and prints their logs, each line after
its program's name. Each service runs under uvicorn's reloader, which watches the service's
src/ and every libs/*/src, so saving a file restarts the service. `dev` refuses to start
while `up`'s stack runs, since both take the same ports and databases.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType, ModuleType
from typing import IO
from urllib.parse import urlsplit

from contracts import ROSTER
from dev_tools import ROOT
from eventkit.settings import shipped_broker

VAR = ROOT / "var"
LOGS = VAR / "log"
CONF = VAR / "supervisord.conf"
# A consumer joins its subscriptions one after another (seconds each on a busy machine),
# and a loaded machine stretches that: the wait ends as soon as all are ready.
READY_TIMEOUT = float(os.environ.get("READY_TIMEOUT", "180"))
REPLICA_PORT_STEP = 100
STOP_TIMEOUT = 15.0  # how long `dev` lets a program stop before it kills it
STOP_WAIT_SECONDS = 10  # how long supervisord lets a program stop before it kills it

# A program to run: its name, its command line and the environment it adds.
Program = tuple[str, str, dict[str, str]]
OUTPUT = threading.Lock()  # one line at a time on stdout, from `dev`'s log copiers


def say(prefix: str, what: str) -> None:
    """A progress line, printed at once: make shows nothing else while it waits."""
    with OUTPUT, contextlib.suppress(OSError):  # a closed terminal must not stop `dev`'s stop
        print(f"{prefix}: {what}", flush=True)


def local_broker() -> ModuleType:
    """dev_tools/local_broker_<kind>.py: how this machine runs the broker of that kind."""
    kind = os.environ.get("BROKER") or shipped_broker()
    try:
        return importlib.import_module(f"dev_tools.local_broker_{kind}")
    except ModuleNotFoundError:
        sys.exit(f"local-up: no dev_tools/local_broker_{kind}.py: BROKER={kind} cannot run here")


def broker_address() -> str:
    """host:port of the broker, without any credentials BROKER_URL holds (it is printed)."""
    value = (os.environ.get("BROKER_URL") or local_broker().DEFAULT_URL).split(",")[0]
    parts = urlsplit(value if "//" in value else f"//{value}")
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def url(service: str) -> str:
    return ROSTER.url(service)


def port(service: str) -> int:
    """The port of `<NAME>_URL` when that is set, else the roster's."""
    return urlsplit(url(service)).port or ROSTER.service(service).port


def replica_count() -> int:
    value = os.environ.get("REPLICAS") or "1"
    if not value.isdigit() or int(value) < 1:
        sys.exit(f"local-up: REPLICAS={value!r}: give a whole number, 1 or more")
    return int(value)


def replicas(service: str, count: int | None = None) -> list[tuple[str, int]]:
    """(program name, port) of each replica of `service` (REPLICAS unless `count` is given);
    the first keeps the base port."""
    base = port(service)
    return [
        (service if k == 0 else f"{service}-{k}", base + REPLICA_PORT_STEP * k)
        for k in range(replica_count() if count is None else count)
    ]


def ready_urls(count: int | None = None) -> dict[str, str]:
    host = {name: urlsplit(url(name)).hostname or "127.0.0.1" for name in ROSTER.names}
    return {
        program_name: f"http://{host[name]}:{replica_port}/ready"
        for name in ROSTER.names
        for program_name, replica_port in replicas(name, count)
    }


def database_url(service: str) -> dict[str, str]:
    """DATABASE_URL may name `{service}`, so each service gets a database of its own."""
    value = os.environ.get("DATABASE_URL", "")
    return {"DATABASE_URL": value.replace("{service}", service)} if value else {}


def reload_dirs(service: str) -> list[Path]:
    """What `dev` watches for one service: its own code and the shared libraries."""
    return [ROOT / "services" / service / "src", *sorted(ROOT.glob("libs/*/src"))]


def service_programs(count: int | None = None, reload: bool = False) -> list[Program]:
    """Every replica of every service: `python -m <name>_service`, or with `reload` the
    reloading server of `serve-reloading`."""
    urls = {spec.url_setting: url(spec.name) for spec in ROSTER.services}
    programs = []
    for name in ROSTER.names:
        command = f"{shlex.quote(sys.executable)} -m {name}_service"
        if reload:
            command = f"{shlex.quote(sys.executable)} -m dev_tools local serve-reloading {name}"
        for program_name, replica_port in replicas(name, count):
            environment = {
                "PORT": str(replica_port),
                "TRACES_FILE": str(VAR / "traces" / f"{program_name}.jsonl"),
                **urls,
                **database_url(name),
            }
            programs.append((program_name, command, environment))
    return programs


def program(name: str, command: str, environment: dict[str, str]) -> str:
    # supervisord expands %(...)s in its config, so a literal % is written %%.
    env = ",".join(f'{k}="{v.replace("%", "%%")}"' for k, v in environment.items())
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"directory={ROOT}",
        "autostart=true",
        "autorestart=unexpected",
        "startsecs=1",
        "stopasgroup=true",
        "killasgroup=true",
        f"stopwaitsecs={STOP_WAIT_SECONDS}",
        "redirect_stderr=true",
        f"stdout_logfile={LOGS / name}.log",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=1",
    ]
    if env:
        lines.append(f"environment={env}")
    return "\n".join(lines)


def configured_section(name: str) -> str | None:
    """The [program:name] section of the config supervisord runs, if it has one."""
    sections = CONF.read_text().split("\n\n") if CONF.exists() else []
    return next((s for s in sections if s.startswith(f"[program:{name}]\n")), None)


def control_socket(var: Path = VAR) -> Path:
    """supervisord's socket: in var/, unless that path is too long for a Unix socket (about
    100 bytes; a project deep in the file system), then in the temporary folder, named
    after var/'s path."""
    socket = var / "supervisor.sock"
    if len(os.fsencode(socket)) <= 100:
        return socket
    digest = hashlib.blake2b(os.fsencode(var), digest_size=6).hexdigest()
    return Path(tempfile.gettempdir()) / f"supervisor-{digest}.sock"


def write_config(programs: list[Program], kept: list[str]) -> None:
    """supervisord's config: `programs`, and the sections `kept` from the running config."""
    sections = kept + [program(*spec) for spec in programs]
    CONF.write_text(
        "\n\n".join(
            [
                f"[unix_http_server]\nfile={control_socket()}",
                f"[supervisord]\nlogfile={LOGS / 'supervisord.log'}\n"
                f"pidfile={VAR / 'supervisord.pid'}\ndirectory={ROOT}\nnodaemon=false",
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                f"[supervisorctl]\nserverurl=unix://{control_socket()}",
                *sections,
            ]
        )
        + "\n"
    )


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(CONF), *args],
        capture_output=True,
        text=True,
    )


def supervisord_running() -> bool:
    # supervisorctl exits 4 when it cannot reach supervisord.
    return CONF.exists() and ctl("pid").returncode == 0 and ctl("pid").stdout.strip().isdigit()


def program_states() -> dict[str, str]:
    """supervisord's state of each program: RUNNING, STARTING, STOPPED, EXITED, FATAL, ..."""
    lines = ctl("status").stdout.splitlines()
    return {parts[0]: parts[1] for line in lines if len(parts := line.split()) >= 2}


def announce(prefix: str, programs: list[Program], running: set[str]) -> None:
    """One line for the broker and one for each service: starting, or already running."""
    if all(name != "broker" for name, _, _ in programs):
        say(prefix, f"using the broker that answers at {broker_address()}")
    for name, _, env in programs:
        where = broker_address() if name == "broker" else f"port {env['PORT']}"
        say(prefix, f"{name} {'already running' if name in running else 'starting'} on {where}")


def up() -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    services = service_programs()
    if supervisord_running():
        running = {name for name, state in program_states().items() if state == "RUNNING"}
        # A broker of our own answers by now, so local_broker() would start none and the
        # update below would stop it: keep its section as it is.
        kept = [section] if (section := configured_section("broker")) else []
        broker = [] if kept else local_broker().programs(VAR)
        announce("local-up", [("broker", "", {})] * len(kept) + broker + services, running)
        write_config(broker + services, kept)  # REPLICAS may have changed: add or drop programs
        ctl("reread")
        ctl("update")
        ctl("start", "all")
    else:
        broker = local_broker().programs(VAR)
        announce("local-up", broker + services, set())
        write_config(broker + services, [])
        say(
            "local-up",
            f"supervisord runs them in the background; logs in {LOGS.relative_to(ROOT)}/",
        )
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(CONF)], check=True
        )
    crashed = ["EXITED", "FATAL"]
    waiting, reasons = wait_ready(
        "local-up",
        ready_urls(),
        lambda: [name for name, state in program_states().items() if state in crashed],
    )
    if not waiting:
        ready_at = [f"{name} :{p}" for n in ROSTER.names for name, p in replicas(n)]
        print("local stack ready: " + ", ".join(ready_at))
        return 0
    print(f"local-up: not ready: {', '.join(waiting)}", file=sys.stderr)
    print(ctl("status").stdout, file=sys.stderr)
    for name in waiting:
        print(f"--- {name}: {reasons.get(name) or 'no answer'}; last log lines:", file=sys.stderr)
        log = LOGS / f"{name}.log"
        if log.exists():
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]), file=sys.stderr)
    return 1


def ready(address: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(address, timeout=2) as response:
            return response.status == 200, ""
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")
    except OSError as exc:
        return False, str(exc)


def wait_ready(
    prefix: str, urls: dict[str, str], exited: Callable[[], list[str]]
) -> tuple[set[str], dict[str, str]]:
    """Poll each /ready until it answers 200, printing each as it does; give up early once
    a program has exited. Returns the programs not ready, and why."""
    say(prefix, f"waiting for /ready of {len(urls)} services (up to {READY_TIMEOUT:.0f}s)")
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = dict(urls)
    reasons: dict[str, str] = {}
    while waiting and time.monotonic() < deadline:
        if crashed := exited():
            reasons |= {name: "its process exited" for name in crashed}
            return set(waiting) | set(crashed), reasons
        for name, address in list(waiting.items()):
            ok, reasons[name] = ready(address)
            if ok:
                del waiting[name]
                say(prefix, f"{name} ready at {address.removesuffix('/ready')}")
        if waiting:
            time.sleep(0.3)
    return set(waiting), reasons


def down() -> int:
    if not supervisord_running():
        print("local stack is not running")
        return 0
    pid = int(ctl("pid").stdout.strip())
    ctl("shutdown")
    # supervisord stops its programs one after another, each given STOP_WAIT_SECONDS.
    wait = 10 + STOP_WAIT_SECONDS * CONF.read_text().count("[program:")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("local stack stopped")
            return 0
        time.sleep(0.2)
    print(f"local-down: supervisord (pid {pid}) did not stop within {wait}s", file=sys.stderr)
    return 1


def status() -> int:
    if not supervisord_running():  # an answer, not a failure: make would call it an error
        print("local stack is not running (make local-up starts it)")
        return 0
    print(ctl("status").stdout, end="")
    return 0


# --- dev: the stack in the foreground, restarting a service when its code changes ---


class Interrupted(Exception):
    """Ctrl-C, or SIGTERM or SIGHUP: time to stop everything `dev` started."""


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def copy_lines(name: str, width: int, stream: IO[str]) -> None:
    """Print a program's output as it comes, each line after the program's name."""
    for line in stream:  # read to the end even with no one to show it to: a full pipe blocks
        with OUTPUT, contextlib.suppress(OSError):
            sys.stdout.write(f"{name:<{width}} | {line}")
            sys.stdout.flush()


def start(
    name: str, command: str, environment: dict[str, str], width: int
) -> subprocess.Popen[str]:
    """Start a program in a session of its own: Ctrl-C reaches only `dev`, which then stops
    the programs in order (the services, then the broker)."""
    process = subprocess.Popen(
        shlex.split(command),
        cwd=ROOT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"} | environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    threading.Thread(target=copy_lines, args=(name, width, process.stdout), daemon=True).start()
    return process


def signal_group(process: subprocess.Popen[str], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)  # the program and its children (uvicorn's worker)


def stop(processes: dict[str, subprocess.Popen[str]]) -> None:
    """SIGTERM to the services, then to the broker; SIGKILL what outlives STOP_TIMEOUT."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    if not processes:
        return
    say("dev", "stopping " + ", ".join(processes))
    services = {name: p for name, p in processes.items() if name != "broker"}
    broker = {name: p for name, p in processes.items() if name == "broker"}
    for group in (services, broker):
        for process in group.values():
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in group.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say("dev", f"{name} did not stop within {STOP_TIMEOUT:.0f}s: killing it")
            signal_group(process, signal.SIGKILL)  # whatever of its group is left
            process.wait()
    say("dev", "stopped everything it started")


def exited(processes: dict[str, subprocess.Popen[str]]) -> list[str]:
    return [name for name, process in processes.items() if process.poll() is not None]


def dev() -> int:
    if supervisord_running():
        print(
            "dev: the stack of `make local-up` is running on the same ports: "
            "`make local-down` first",
            file=sys.stderr,
        )
        return 1
    LOGS.mkdir(parents=True, exist_ok=True)
    broker = local_broker().programs(VAR)
    services = service_programs(count=1, reload=True)
    width = max(len(name) for name, _, _ in broker + services)
    processes: dict[str, subprocess.Popen[str]] = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    try:
        announce("dev", broker + services, set())
        for name, command, environment in broker + services:
            processes[name] = start(name, command, environment, width)
        waiting, reasons = wait_ready("dev", ready_urls(count=1), lambda: exited(processes))
        why = "; ".join(f"{name}: {reasons.get(name) or 'no answer'}" for name in waiting)
        if exited(processes):
            print(f"dev: not ready: {why}", file=sys.stderr)
            return 1
        watched = ", ".join(str(d.relative_to(ROOT)) for d in reload_dirs("<name>"))
        if waiting:  # a service whose code fails to start restarts once it is fixed
            say("dev", f"not ready ({why}); still watching for changes under {watched}")
        else:
            say("dev", f"ready; a change under {watched} restarts that service; Ctrl-C stops all")
        while not (gone := exited(processes)):
            time.sleep(0.5)
        print(f"dev: {', '.join(gone)} exited; stopping the rest", file=sys.stderr)
        return 1
    except Interrupted:
        return 0
    finally:
        stop(processes)


def serve_reloading(service: str) -> int:
    """One service under uvicorn's reloader (a program of `dev`): it runs the app in a child
    process and starts a new one when a watched file changes."""
    import uvicorn

    from eventkit.runner import KEEP_ALIVE_SECONDS

    settings = importlib.import_module(f"{service}_service.settings").Settings()
    uvicorn.run(
        f"{service}_service.main:create_app",
        factory=True,
        host=settings.HOST,
        port=settings.PORT,
        reload=True,
        reload_dirs=[str(d) for d in reload_dirs(service)],
        log_config=None,  # the app writes JSON logs of its own (eventkit.logs)
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status, "dev": dev}
    if len(argv) == 2 and argv[0] == "serve-reloading":
        return serve_reloading(argv[1])
    if len(argv) != 1 or argv[0] not in commands:
        sys.exit("usage: python -m dev_tools local up|down|status|dev")
    return commands[argv[0]]()
