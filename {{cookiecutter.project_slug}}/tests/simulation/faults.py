"""The faults the simulation injects, where each strikes, and which the code still fails.

A run's faults are a list drawn from its seed: each strikes at a step of the run, on one
service, with parameters of its own. Shrinking a failing run drops faults from that list
(the seed's commands stay as they are) until none can go.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

# Fault kinds the current code is known to fail, each with the issue item that fixes it.
# The short run in `make test` leaves these out; `make simulate` injects them unless told
# otherwise (KNOWN=skip). Once an item's fix has landed, delete its lines here: the short
# run then holds the code to it.
KNOWN_FAULTS: dict[str, str] = {}


@dataclass(frozen=True)
class FaultKind:
    name: str
    boundary: str  # where in the pipeline it strikes
    doc: str
    targets: str = "consumers"  # consumers | publishers | notification | all | none
    postgres_only: bool = False  # needs replicas (PostgreSQL) to mean anything
    weight: float = 1.0


KINDS: dict[str, FaultKind] = {
    kind.name: kind
    for kind in [
        FaultKind(
            "relay_stalled",
            "commit -> publish",
            "the publisher dies after a command's commit, before its relay publishes; "
            "the events wait for its restart",
            targets="publishers",
        ),
        FaultKind(
            "relay_crash_mid_batch",
            "mid-publish",
            "the relay dies after part of a batch reached the broker",
            targets="publishers",
        ),
        FaultKind(
            "relay_crash_before_mark",
            "publish -> mark sent",
            "the relay dies after the broker took a batch, before marking it sent",
            targets="publishers",
        ),
        FaultKind(
            "confirm_lost",
            "publish -> mark sent",
            "the broker takes a message but its confirm is lost",
            targets="publishers",
        ),
        FaultKind(
            "relay_leader_change",
            "relay leadership",
            "the leading relay loses its lock mid-round and another replica takes over",
            targets="publishers",
            postgres_only=True,
        ),
        FaultKind(
            "broker_outage", "broker", "the broker does not answer for a while", targets="none"
        ),
        FaultKind(
            "ack_lost",
            "apply -> ack",
            "a batch is applied but its ack (offset commit) never arrives",
        ),
        FaultKind(
            "consumer_crash_before_ack",
            "apply -> ack",
            "the consumer dies after committing a batch, before acknowledging it",
        ),
        FaultKind(
            "consumer_crash_mid_batch",
            "mid-batch",
            "the consumer dies while applying a batch (its transaction rolls back)",
        ),
        FaultKind(
            "handler_error", "mid-batch", "a handler fails once on one event (a transient error)"
        ),
        FaultKind(
            "handler_bug",
            "mid-batch",
            "a handler always fails on one event (a bug): it is poison for that service, "
            "and the aggregate's later events wait behind it",
        ),
        FaultKind(
            "consumer_restart",
            "broker delivery",
            "a consumer replica restarts: what it had fetched is delivered again",
        ),
        FaultKind(
            "rebalance",
            "broker delivery",
            "the broker moves consumers' shares (partitions, channels) about; batches in "
            "flight cannot be acknowledged",
        ),
        FaultKind(
            "late_delivery",
            "broker delivery",
            "a fetched batch is applied long after (a slow consumer)",
        ),
        FaultKind(
            "mangled_attempts",
            "broker delivery",
            "for a while, retries come back with their x-attempts header as non-ASCII "
            "digits (a bridge rewrote them)",
        ),
        FaultKind(
            "db_outage",
            "database",
            "a service's database is down for up to a minute",
            targets="all",
        ),
        FaultKind(
            "db_outage_long",
            "database",
            "a service's database is down longer than the retry schedule",
            targets="all",
        ),
        FaultKind(
            "smtp_outage",
            "smtp",
            "the SMTP server does not answer for a while",
            targets="notification",
        ),
        FaultKind(
            "refused_recipient",
            "smtp",
            "the next sign-up or email change uses an address SMTP refuses (550)",
            targets="none",
        ),
        FaultKind(
            "dispatcher_crash",
            "send -> mark sent",
            "the dispatcher dies right after one of its next emails left, before marking it sent",
            targets="notification",
        ),
        FaultKind("rebuild", "rebuild", "an operator rebuilds a read model while events flow"),
        FaultKind("rebuild_fails", "rebuild", "a rebuild fails midway (a feed page errs)"),
        FaultKind(
            "rebuild_lease_expires",
            "rebuild",
            "a rebuild stalls past its lease and another replica starts one",
            postgres_only=True,
        ),
        FaultKind(
            "late_consumer", "deploy", "a consumer starts after the publisher (first deploy)"
        ),
        FaultKind(
            "newcomer",
            "deploy",
            "a service added later (make service) joins a stream mid-way",
            targets="none",
        ),
        FaultKind(
            "ordering_added_later",
            "deploy",
            "the ordering table arrives with an upgrade: known users have no position",
        ),
        FaultKind(
            "publisher_new_version",
            "deploy",
            "the user service publishes NameChanged v2 before its consumers know it",
            targets="none",
        ),
        FaultKind(
            "publisher_new_type",
            "deploy",
            "publishers emit a new event type before their consumers know it",
            targets="none",
        ),
        FaultKind(
            "poison",
            "input",
            "a message no consumer can ever apply enters a stream",
            targets="none",
        ),
        FaultKind("dlq_replay", "operator", "an operator replays a service's dead letters"),
    ]
}


@dataclass(frozen=True)
class Fault:
    step: int
    kind: str
    target: str = ""  # the service it strikes, where it strikes one
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def known_as(self) -> str | None:
        """The KNOWN_FAULTS entry this fault falls under, if any."""
        for name in (f"{self.kind}:{self.target}", self.kind):
            if name in KNOWN_FAULTS:
                return name
        return None

    def __str__(self) -> str:
        where = f" on {self.target}" if self.target else ""
        extra = f" {json.dumps(self.params, sort_keys=True)}" if self.params else ""
        return f"step {self.step}: {self.kind}{where}{extra}"


@dataclass(frozen=True)
class Setting:
    """What a run simulates: which broker's model, which database, which services."""

    broker: str
    postgres: bool
    publishers: tuple[str, ...]
    consumers: tuple[str, ...]


def allowed(setting: Setting, skip_known: bool) -> list[FaultKind]:
    return [
        kind
        for kind in KINDS.values()
        if (setting.postgres or not kind.postgres_only)
        and not (skip_known and kind.name in KNOWN_FAULTS)
    ]


def targets_of(kind: FaultKind, setting: Setting) -> list[str]:
    match kind.targets:
        case "consumers":
            return list(setting.consumers)
        case "publishers":
            return list(setting.publishers)
        case "notification":
            return ["notification"] if "notification" in setting.consumers else []
        case "all":
            return sorted({*setting.publishers, *setting.consumers})
    return [""]


def draw_faults(
    seed: int, steps: int, setting: Setting, *, skip_known: bool, only: set[str] | None = None
) -> list[Fault]:
    """The seed's faults: a few, each at a step of its own; `only`: of these kinds."""
    rng = random.Random(f"{seed}:faults")
    kinds = [k for k in allowed(setting, skip_known) if only is None or k.name in only]
    faults: list[Fault] = []
    for _ in range(rng.randint(2, 9) if kinds else 0):
        kind = rng.choices(kinds, weights=[k.weight for k in kinds])[0]
        choices = targets_of(kind, setting)
        if not choices:
            continue
        target = rng.choice(choices)
        fault = Fault(rng.randrange(steps), kind.name, target, params_of(kind.name, rng))
        if skip_known and fault.known_as is not None:
            continue
        faults.append(fault)
    return sorted(faults, key=lambda f: (f.step, f.kind, f.target))


def params_of(kind: str, rng: random.Random) -> dict[str, Any]:
    """Each kind's own parameters, drawn once so that a fault replays the same."""
    match kind:
        case "relay_stalled" | "broker_outage" | "smtp_outage":
            return {"seconds": round(rng.choice([rng.uniform(1, 30), rng.uniform(30, 900)]), 1)}
        case "db_outage":
            return {"seconds": round(rng.uniform(1, 60), 1)}
        case "db_outage_long":
            return {"seconds": round(rng.uniform(500, 1500), 1)}
        case "late_delivery":
            return {"seconds": round(rng.uniform(5, 400), 1)}
        case "mangled_attempts":
            return {"seconds": round(rng.uniform(100, 1000), 1)}
        case "dispatcher_crash":
            return {"after": rng.randint(1, 4)}
        case "relay_crash_mid_batch" | "consumer_crash_mid_batch":
            return {"at": round(rng.random(), 3)}
        case "confirm_lost":
            return {"message": rng.randrange(4)}
        case "rebuild_fails":
            return {"request": rng.randint(1, 6)}
        case "late_consumer":
            return {}
        case "newcomer":
            return {"retained": round(rng.choice([0.0, rng.random(), 1.0]), 3)}
        case "publisher_new_version" | "publisher_new_type":
            return {"consumers_follow_after": round(rng.uniform(5, 240), 1)}
        case "poison":
            return {"body": rng.choice(POISON_KINDS), "stream": rng.randrange(2)}
    return {}


POISON_KINDS = ["not json", "not an envelope", "no id", "invalid data"]


def parse_fault(text: str) -> Fault:
    """The inverse of str(fault), for replaying a printed schedule."""
    head, _, rest = text.partition(": ")
    step = int(head.removeprefix("step "))
    name, _, params = rest.partition(" {")
    kind, _, target = name.partition(" on ")
    return Fault(step, kind.strip(), target.strip(), json.loads("{" + params) if params else {})
