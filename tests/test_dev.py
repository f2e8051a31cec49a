"""`make dev` of a baked project: the stack in the foreground, a service restarted when its
code changes, and everything stopped by Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import clean_env, local_stack_env, roster_names

pytestmark = pytest.mark.slow


def test_make_dev_reloads_a_changed_service_and_ctrl_c_stops_everything(
    project_for: Callable[[str, bool], Path],
) -> None:
    project = project_for("kafka", True)  # the reload path is the same for both brokers
    services = roster_names(project)
    env = local_stack_env(project)  # every service and the broker on free ports
    make = subprocess.Popen(
        ["make", "dev"],
        cwd=project,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(make.stdout or []), daemon=True)
    reader.start()

    def wait_until(probe: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if time.monotonic() > deadline or make.poll() is not None:
                pytest.fail(f"waiting for {what}; make dev printed:\n{''.join(lines)[-4000:]}")
            time.sleep(0.1)

    def starts(service: str) -> int:
        pattern = rf"^{service} +\|.*Started server process"
        return len(re.findall(pattern, "".join(lines), re.MULTILINE))

    def answers(url: str) -> bool:
        try:
            return httpx.get(url).status_code == 200
        except httpx.TransportError:
            return False

    # Billing's /health, not every /ready: waiting for the consumer groups to settle would
    # only make the test slower.
    health = f"{env['BILLING_URL']}/health"
    try:
        wait_until(lambda: answers(health), "billing to answer /health", timeout=120)
        port = urlsplit(health).port
        assert f"dev: billing starting on port {port}" in "".join(lines)  # progress lines
        assert starts("billing") == 1
        # Saving a file of billing's code restarts billing, and only billing.
        os.utime(project / "services/billing/src/billing_service/__init__.py")
        wait_until(lambda: starts("billing") == 2, "billing to restart")
        wait_until(lambda: answers(health), "the restarted billing to answer /health")
        reloaded = re.findall(r"^(\w+) +\|.*Reloading", "".join(lines), re.MULTILINE)
        assert reloaded == ["billing"]
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        make.wait(timeout=60)
        reader.join(timeout=10)  # it ends with the pipe, once make and local.py have exited
    assert "dev: stopped everything it started" in "".join(lines), "".join(lines)[-3000:]
    for name in services:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{env[f'{name.upper()}_URL']}/health")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(env["BROKER_URL"].rsplit(":")[-1])), 2)
