"""`make service`'s edit of the roster: found by its parse tree, whatever the layout, with
the stream constants it names imported (`make service` then lets ruff tidy both)."""

from __future__ import annotations

import ast

import pytest

from dev_tools.new_service import Plan, Refused, offset

ROSTER = '''"""The roster."""

from contracts.events import EVENTS, USER_EVENTS
from eventkit.roster import Roster, ServiceSpec

ROSTER = Roster(
    services=(
        ServiceSpec("user", 7001, publishes=(USER_EVENTS,)),
        ServiceSpec("billing", 7002, subscribes=(USER_EVENTS,)),  # a comment after it
    ),
    events=EVENTS,
)
'''


def plan_for(roster: str, streams: list[str]) -> Plan:
    plan = Plan.__new__(Plan)
    plan.name, plan.port, plan.streams = "payments", 7003, streams
    plan.constants = {"user.events": "USER_EVENTS", "billing.events": "BILLING_EVENTS"}
    plan.roster_before = roster
    return plan


def services_of(text: str) -> list[str]:
    call = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call))
    (services,) = (k.value for k in call.keywords if k.arg == "services")
    assert isinstance(services, ast.Tuple)
    return [ast.unparse(element) for element in services.elts]


def test_the_entry_goes_after_the_last_service_and_its_constants_are_imported() -> None:
    text, entry = plan_for(ROSTER, ["user.events", "billing.events"]).roster_entry()
    assert entry == 'ServiceSpec("payments", 7003, subscribes=(USER_EVENTS, BILLING_EVENTS))'
    assert (
        services_of(text)[-1]
        == "ServiceSpec('payments', 7003, subscribes=(USER_EVENTS, BILLING_EVENTS))"
    )
    assert "from contracts.events import BILLING_EVENTS\n" in text
    assert "# a comment after it" in text
    compile(text, "roster.py", "exec")


def test_a_stream_without_a_constant_is_named_by_its_string() -> None:
    plan = plan_for(ROSTER, ["audit.events"])
    text, entry = plan.roster_entry()
    assert entry == 'ServiceSpec("payments", 7003, subscribes=("audit.events",))'
    assert services_of(text)[-1] == "ServiceSpec('payments', 7003, subscribes=('audit.events',))"


def test_a_roster_without_its_services_is_refused() -> None:
    with pytest.raises(Refused, match="no `Roster"):
        plan_for("ROSTER = None\n", ["user.events"]).roster_entry()


def test_offsets_count_columns_in_bytes_as_the_parse_tree_does() -> None:
    text = 'x = "é"\ny = 1\n'
    node = ast.parse(text).body[0]
    assert text[: offset(text, node.end_lineno or 0, node.end_col_offset or 0)] == 'x = "é"'
