"""Every service's AsyncAPI document is valid AsyncAPI 3.0 and in step with the code, and its
HTML page (FastStream's, at /asyncapi.html) shows it.

The documents come from the generated project itself (its own venv, its real broker
transport, not started), one for each service of its roster; they are validated against the
official AsyncAPI JSON schema (npm package @asyncapi/specs) and compared with the event
registry, the roster and the subscriptions each app wires.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BROKERS, run

DUMP = """
import asyncio, importlib, json, logging, sys
import httpx
from contracts import EVENTS, ROSTER
logging.disable(logging.CRITICAL)  # stdout carries the JSON below, not the services' logs


async def get(app, path):  # without the app's lifespan: nothing connects to a broker
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


out = {}
for spec in ROSTER.services:
    name = spec.name
    main = importlib.import_module(f"{name}_service.main")
    settings = importlib.import_module(f"{name}_service.settings").Settings()
    app = main.create_app(settings)
    kit = app.state.kit
    if kit.consumer is not None:
        kit.consumer.attach()
    consumed = kit.consumer.subscriptions.streams if kit.consumer else []
    page = asyncio.run(get(app, "/asyncapi.html"))
    out[name] = {
        "document": kit.transport.asyncapi(f"{name} service"),
        "page": [page.status_code, page.headers["content-type"], page.text],
        "consumes": {s: EVENTS.describe(s) for s in consumed},
        "publishes": {s: EVENTS.describe(s) for s in spec.publishes},
        "roster_subscribes": sorted(spec.subscribes),
    }
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="session")
def asyncapi_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found: the AsyncAPI schema comes from the npm package @asyncapi/specs")
    folder = tmp_path_factory.mktemp("asyncapi-specs")
    run([npm, "install", "--silent", "--no-audit", "--no-fund", "@asyncapi/specs"], cwd=folder)
    return folder / "node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"


def validate(schema: Path, document: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(checker), "--schemafile", str(schema), str(document)], capture_output=True, text=True
    )


def stream_of(name: str, channel: dict[str, Any], service: str) -> str:
    """The stream a channel carries: a Kafka topic, a RabbitMQ exchange or service queue, or
    (an SNS FIFO topic, whose address is the stream's FIFO name) the channel's name."""
    bindings = channel.get("bindings", {})
    if "sns" in bindings:
        return name
    amqp = bindings.get("amqp")
    if amqp is None:
        return str(channel["address"])
    if "exchange" in amqp:
        return str(amqp["exchange"]["name"])
    return str(amqp["queue"]["name"]).removeprefix(f"{service}.")


def operations(document: dict[str, Any], action: str, service: str) -> dict[str, dict[str, Any]]:
    """Stream -> channel, for the document's operations of one action."""
    found = {}
    for operation in document["operations"].values():
        if operation["action"] == action:
            ref = operation["channel"]["$ref"].removeprefix("#/channels/")
            channel = document["channels"][ref]
            found[stream_of(ref, channel, service)] = channel
    return found


@pytest.mark.parametrize("broker", BROKERS)
def test_asyncapi_documents_are_valid_and_match_the_code(
    broker: str,
    project_for: Callable[[str, bool], Path],
    asyncapi_schema: Path,
    tmp_path: Path,
) -> None:
    project = project_for(broker, True)
    dumped = run([".venv/bin/python", "-c", DUMP], cwd=project).stdout
    services: dict[str, dict[str, Any]] = json.loads(dumped)
    for name, facts in services.items():
        document = facts["document"]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        result = validate(asyncapi_schema, path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert document["asyncapi"] == "3.0.0"

        received = operations(document, "receive", name)
        sent = operations(document, "send", name)
        assert sorted(received) == sorted(facts["consumes"]), name
        assert sorted(sent) == sorted(facts["publishes"]), name
        for address, channel in {**received, **sent}.items():
            expected = facts["consumes"].get(address) or facts["publishes"][address]
            assert channel.get("description") == expected, (name, address)
        # The app subscribes to what the roster says it does.
        assert sorted(facts["consumes"]) == facts["roster_subscribes"], name
        # FastStream's HTML page shows the same document beside /asyncapi.
        status, content_type, html = facts["page"]
        assert status == 200 and content_type.startswith("text/html"), (name, status)
        assert f"<title>{name} service AsyncAPI</title>" in html
        for channel in document["channels"].values():
            assert channel["address"] in html, (name, channel["address"])
    # The documents say who talks to whom: some services publish, some consume.
    assert any(f["publishes"] for f in services.values())
    assert any(f["consumes"] for f in services.values())


def test_the_validator_rejects_a_broken_document(asyncapi_schema: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"asyncapi": "3.0.0", "channels": {}}))  # no info
    assert validate(asyncapi_schema, broken).returncode != 0
