"""The consume pipeline: inbox, retries with backoff, dead letters; on a real database."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from eventkit import Consumer, Envelope, new_event
from eventkit.bus import InProcessTransport
from eventkit.consumer import DeadLetter, Pipeline, RetryPolicy
from eventkit.db import Database
from eventkit.inbox import ProcessedEvent

STREAM = "user.events"


class Recorder:
    """A handler that fails its first `failures` calls, then records what it saw."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.applied: list[str] = []

    async def __call__(self, event: Envelope, session: AsyncSession) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"boom {self.calls}")
        self.applied.append(event.data["user_id"])


def make_pipeline(db: Database, handler: Recorder, max_retries: int = 3) -> Pipeline:
    consumer = Consumer("test")
    consumer.on_message(STREAM)(handler)
    return Pipeline(consumer, db, InProcessTransport(), RetryPolicy(max_retries, 0.001, 0.01))


def event(user_id: str = "u1") -> Envelope:
    return new_event("UserDeactivated", {"user_id": user_id}, source="test")


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_redelivered_event_is_applied_once(db: Database) -> None:
    handler = Recorder()
    pipeline = make_pipeline(db, handler)
    message = event().to_bytes()
    await pipeline.handle(STREAM, message)
    await pipeline.handle(STREAM, message)
    assert handler.applied == ["u1"]
    assert await count(db, ProcessedEvent) == 1


async def test_a_failing_handler_is_retried_then_succeeds(db: Database) -> None:
    handler = Recorder(failures=2)
    await make_pipeline(db, handler).handle(STREAM, event().to_bytes())
    assert handler.calls == 3
    assert handler.applied == ["u1"]
    assert await count(db, DeadLetter) == 0


async def test_a_poison_event_is_dead_lettered_and_the_next_one_flows(db: Database) -> None:
    handler = Recorder(failures=4)  # the first event's 1 try + 3 retries all fail
    pipeline = make_pipeline(db, handler, max_retries=3)
    poison = event("poison")
    await pipeline.handle(STREAM, poison.to_bytes())
    await pipeline.handle(STREAM, event("next").to_bytes())
    assert handler.applied == ["next"]
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
        processed = set(await session.scalars(select(ProcessedEvent.event_id)))
    assert (letter.event_id, letter.attempts, letter.stream) == (str(poison.id), 4, STREAM)
    assert "boom 4" in letter.error
    assert str(poison.id) not in processed  # its failed attempts left no trace


async def test_a_malformed_message_goes_straight_to_the_dead_letters(db: Database) -> None:
    handler = Recorder()
    await make_pipeline(db, handler).handle(STREAM, b"\x00not json")
    assert handler.calls == 0
    async with db.sessions() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert letter.attempts == 0
    assert letter.error.startswith("not valid JSON")


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_retries=10, base_seconds=0.1, max_seconds=1.0)
    assert all(0 <= policy.delay(1) <= 0.1 for _ in range(50))
    assert all(0 <= policy.delay(8) <= 1.0 for _ in range(50))
    assert max(policy.delay(4) for _ in range(200)) > 0.1  # grows past the base
