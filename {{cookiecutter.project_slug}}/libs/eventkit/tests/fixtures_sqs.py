"""The SNS + SQS adapter's test fixtures: a moto_server of the session's own.

conftest.py takes them in when this project's broker is SNS + SQS (`FIXTURES`), and makes
the adapter's transports for the contract test with `transports`. moto accepts any
credentials: the fixture sets the conventional fake ones in this process's environment for
the session and puts the environment back afterwards (no project file holds any).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventkit.testing import free_port
from eventkit.transports import Transport
from eventkit.transports.sqs import SqsConfig, SqsTransport

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Receives long-poll this long in tests (the default, 5 s, makes no difference to moto, but
# each transport's stop waits for its receives to end).
TEST_WAIT_SECONDS = 1


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto_server (SNS and SQS on one port) of this test session's own."""
    saved = {name: os.environ.get(name) for name in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"moto_server exited with {process.returncode}")
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not answer within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sqs_config(url: str, service: str, **options: Any) -> SqsConfig:
    """An SqsConfig on the session's moto_server; `options` override the rest."""
    settings: dict[str, Any] = {"wait_time_seconds": TEST_WAIT_SECONDS, **options}
    return SqsConfig(service=service, endpoint_url=url, **settings)


def transports(
    request: pytest.FixtureRequest, stream: str
) -> Iterator[tuple[Callable[[str], Transport], str]]:
    """(make an SNS + SQS transport for service `name`, `stream`), on the session's
    moto_server. Every name holds the test's stream, so tests share the server."""
    url = request.getfixturevalue("moto_url")

    def sqs(name: str) -> Transport:
        return SqsTransport(sqs_config(url, f"{name}-{stream}"))

    yield sqs, stream


FIXTURES = {"moto_url": moto_url}
