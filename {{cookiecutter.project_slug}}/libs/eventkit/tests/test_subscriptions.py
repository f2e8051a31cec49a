"""A service's one Subscriptions: a second one in the same module is refused, not a silent
replacement of the first (and of its handlers)."""

from typing import Any

import pytest

HANDLERS = """
from eventkit import Envelope, Subscriptions
from sqlalchemy.ext.asyncio import AsyncSession

subscriptions = Subscriptions()


@subscriptions.on_message("things")
async def first(event: Envelope, session: AsyncSession) -> None: ...
"""


def imported(source: str) -> dict[str, Any]:
    """Run `source` as a module's top level would, in a namespace of its own."""
    module: dict[str, Any] = {"__name__": "things_service.handlers"}
    exec(compile(source, "handlers.py", "exec"), module)
    return module


def test_a_handler_added_to_the_existing_subscriptions_joins_the_others() -> None:
    added = '\n@subscriptions.on_message("things")\nasync def second(event, session): ...\n'
    module = imported(HANDLERS + added)
    names = [s.handler.__name__ for s in module["subscriptions"].subscriptions]
    assert names == ["first", "second"]


def test_a_second_subscriptions_in_the_module_is_refused_naming_the_first() -> None:
    with pytest.raises(ValueError) as refused:
        imported(HANDLERS + "\nsubscriptions = Subscriptions()\n")
    message = str(refused.value)
    assert "things_service.handlers has its Subscriptions already (`subscriptions`)" in message
    assert "@subscriptions.on_message(...)" in message


def test_subscriptions_made_inside_functions_are_each_their_callers() -> None:
    module = imported(HANDLERS + "\ndef build():\n    return Subscriptions()\n")
    assert module["build"]() is not module["build"]()
