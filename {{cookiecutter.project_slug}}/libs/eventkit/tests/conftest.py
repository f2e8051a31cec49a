"""Fixtures of eventkit's tests: transports of every adapter this project has.

The small domain the tests use is in sample_domain.py (eventkit knows none of its own).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Iterator

import pytest

from eventkit.settings import shipped_broker
from eventkit.transports import Transport

# --- transports of every adapter the project has, against real brokers ---

# The shipped broker's own fixtures live in fixtures_<broker>.py (a project has one of
# them); they are taken in here, where pytest looks for fixtures.
SHIPPED = shipped_broker()
ADAPTERS = ["memory"] if SHIPPED == "memory" else ["memory", SHIPPED]
BROKER_FIXTURES = None if SHIPPED == "memory" else importlib.import_module(f"fixtures_{SHIPPED}")
if BROKER_FIXTURES is not None:
    globals().update(BROKER_FIXTURES.FIXTURES)

TransportFactory = Callable[[str], Transport]


@pytest.fixture(params=ADAPTERS)
def transport_factory(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[TransportFactory, str]]:
    """(make a transport for service `name`, a stream name of this test's own)."""
    stream = f"test.{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        from eventkit.transports.memory import MemoryTransport

        shared = MemoryTransport()  # one process: every "service" shares it
        yield (lambda name: shared), stream
    else:
        assert BROKER_FIXTURES is not None
        yield from BROKER_FIXTURES.transports(request, stream)
