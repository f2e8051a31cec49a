"""Run the broker and every service of the roster as local processes under supervisord.

    python scripts/local.py up      start what is not running; return once every /ready is 200
    python scripts/local.py down    stop everything `up` started, and nothing else
    python scripts/local.py status

The services are those of the roster (libs/contracts). Each listens on the port of its
`<NAME>_URL` (USER_URL, BILLING_URL, ...) when that is set, else on its roster port, and
every service is given every `<NAME>_URL`, so a rebuild finds the feeds it reads.
BROKER_URL passes through to the services; the broker is scripts/local_broker_<kind>.py,
where the kind is BROKER or the broker this project was generated for. DATABASE_URL
(default: a SQLite file per service under var/) may contain `{service}`, replaced by each
service's name, e.g. postgresql+asyncpg://postgres@127.0.0.1/shop_{service}. Logs go to
var/log/.

REPLICAS=N runs N processes of every service: replica k (from 0) is the program
`<service>` (k = 0) or `<service>-<k>`, listening on the service's port + 100 * k, all on
the service's one database; with PostgreSQL they share the work (the outbox relay, migrations
and emails each take a lock), with SQLite keep 1. `up` starts whichever is not running.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from contracts import ROSTER
from eventkit.settings import shipped_broker

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
LOGS = VAR / "log"
CONF = VAR / "supervisord.conf"
READY_TIMEOUT = float(os.environ.get("READY_TIMEOUT", "90"))
REPLICA_PORT_STEP = 100


def local_broker() -> ModuleType:
    """scripts/local_broker_<kind>.py: how this machine runs the broker of that kind."""
    kind = os.environ.get("BROKER") or shipped_broker()
    try:
        return importlib.import_module(f"local_broker_{kind}")
    except ModuleNotFoundError:
        sys.exit(f"local-up: no scripts/local_broker_{kind}.py: BROKER={kind} cannot run here")


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


def replicas(service: str) -> list[tuple[str, int]]:
    """(program name, port) of each replica of `service`; the first keeps the base port."""
    base = port(service)
    return [
        (service if k == 0 else f"{service}-{k}", base + REPLICA_PORT_STEP * k)
        for k in range(replica_count())
    ]


def ready_urls() -> dict[str, str]:
    host = {name: urlsplit(url(name)).hostname or "127.0.0.1" for name in ROSTER.names}
    return {
        program_name: f"http://{host[name]}:{replica_port}/ready"
        for name in ROSTER.names
        for program_name, replica_port in replicas(name)
    }


def database_url(service: str) -> dict[str, str]:
    """DATABASE_URL may name `{service}`, so each service gets a database of its own."""
    value = os.environ.get("DATABASE_URL", "")
    return {"DATABASE_URL": value.replace("{service}", service)} if value else {}


def program(name: str, command: str, environment: dict[str, str] | None = None) -> str:
    # supervisord expands %(...)s in its config, so a literal % is written %%.
    env = ",".join(f'{k}="{v.replace("%", "%%")}"' for k, v in (environment or {}).items())
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"directory={ROOT}",
        "autostart=true",
        "autorestart=unexpected",
        "startsecs=1",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=10",
        "redirect_stderr=true",
        f"stdout_logfile={LOGS / name}.log",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=1",
    ]
    if env:
        lines.append(f"environment={env}")
    return "\n".join(lines)


def write_config() -> None:
    programs = [program(name, cmd, env) for name, cmd, env in local_broker().programs(VAR)]
    urls = {spec.url_setting: url(spec.name) for spec in ROSTER.services}
    programs += [
        program(
            program_name,
            f"{sys.executable} -m {name}_service",
            {
                "PORT": str(replica_port),
                "TRACES_FILE": str(VAR / "traces" / f"{program_name}.jsonl"),
                **urls,
                **database_url(name),
            },
        )
        for name in ROSTER.names
        for program_name, replica_port in replicas(name)
    ]
    CONF.write_text(
        "\n\n".join(
            [
                f"[unix_http_server]\nfile={VAR / 'supervisor.sock'}",
                f"[supervisord]\nlogfile={LOGS / 'supervisord.log'}\n"
                f"pidfile={VAR / 'supervisord.pid'}\ndirectory={ROOT}\nnodaemon=false",
                "[rpcinterface:supervisor]\n"
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                f"[supervisorctl]\nserverurl=unix://{VAR / 'supervisor.sock'}",
                *programs,
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


def up() -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    if supervisord_running():
        write_config()  # REPLICAS may have changed: supervisord adds or drops programs
        ctl("reread")
        ctl("update")
        ctl("start", "all")
    else:
        write_config()
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(CONF)], check=True
        )
    return wait_ready()


def ready(address: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(address, timeout=2) as response:
            return response.status == 200, ""
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace")
    except OSError as exc:
        return False, str(exc)


def wait_ready() -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = ready_urls()
    reasons: dict[str, str] = {}
    while waiting and time.monotonic() < deadline:
        crashed = [
            line.split()[0]
            for line in ctl("status").stdout.splitlines()
            if any(state in line for state in ("EXITED", "FATAL"))
        ]
        if crashed:
            reasons |= {name: "its process exited" for name in crashed}
            waiting |= {name: "" for name in crashed}
            break
        for name, address in list(waiting.items()):
            ok, reasons[name] = ready(address)
            if ok:
                del waiting[name]
        if waiting:
            time.sleep(0.3)
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


def down() -> int:
    if not supervisord_running():
        print("local stack is not running")
        return 0
    pid = int(ctl("pid").stdout.strip())
    ctl("shutdown")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("local stack stopped")
            return 0
        time.sleep(0.2)
    print(f"local-down: supervisord (pid {pid}) did not stop within 30s", file=sys.stderr)
    return 1


def status() -> int:
    if not supervisord_running():
        print("local stack is not running")
        return 3
    print(ctl("status").stdout, end="")
    return 0


if __name__ == "__main__":
    commands = {"up": up, "down": down, "status": status}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} up|down|status")
    sys.exit(commands[sys.argv[1]]())
