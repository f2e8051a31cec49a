"""One step of the saturation phase: sign-ups at a fixed rate, their latency and fan-out lag.

The load is lean: the requests are encoded before the step, whole, and go out on
keep-alive connections of a plain HTTP/1.1 client (http1.py); an answer is read as far as
its status, and parsed only when its sign-up is followed.

By default (`--lag-from inbox`) nothing else happens during the step: the lag is read
afterwards from what the services recorded (inbox.py). With `--lag-from polling` the step
follows sign-ups by asking the read models while it runs, as below; that costs the
services CPU, which is in the step's figures, but shows the lag as a client sees it.

The polled fan-out lag of a sign-up runs from its `201` until it is in every read model. Where
stack.VIEWS knows how to ask a read model about one user (billing's account, notification's
sent mail), that answer is polled every `poll`, or every tenth of its age once that is
longer (at most every MAX_POLL), so the error stays within 10% and the polling does not swamp
a stack that falls behind.

A read model that keeps counters only (analytics, or a new service) is not asked about one
user. It counts as having the user once its applied-UserCreated counter has grown by at least
as much as the producer's `eventkit_events_published_total{...}` had when another read model
first showed the user. The producer publishes in commit order, so that count includes the
user; a consumer applying the stream in order has then applied it. (Where a stream is split
into partitions, the order holds per partition: events of users on another partition may be
counted first, by as much as that consumer runs behind.)
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from dev_tools.bench.http1 import HttpError, Pool
from dev_tools.bench.report import summary_ms
from dev_tools.bench.stack import PRODUCER, READERS, VIEWS, consumed, published, shows, url

MAX_POLL = 0.25  # seconds between looks at one sign-up, however far behind the stack is
POST_CONNECTIONS = 500  # sign-ups in flight at once; more wait for a connection
REQUEST_TIMEOUT = 10.0  # seconds: a sign-up not answered by then counts as failed


@dataclass
class SignUp:
    user_id: str
    created_at: float  # perf_counter when the 201 arrived
    seen: dict[str, float] = field(default_factory=dict)  # read model -> perf_counter

    def lag(self) -> float:
        return max(self.seen.values()) - self.created_at


class CounterWatch:
    """Samples one reader's applied-UserCreated counter while anyone waits for it.

    The samples are (time the answer arrived, count since the baseline); the count only
    grows, so the first sample at or above a target is when the reader reached it.
    """

    def __init__(self, http: httpx.AsyncClient, service: str, poll: float) -> None:
        self.http, self.service, self.poll = http, service, poll
        self.times: list[float] = []
        self.counts: list[int] = []
        self.waiting = 0
        self.start = 0
        self.wake = asyncio.Event()

    async def baseline(self) -> None:
        self.start = await consumed(self.http, self.service)

    def reached(self, target: int) -> float | None:
        index = bisect.bisect_left(self.counts, target)
        return self.times[index] if index < len(self.times) else None

    async def run(self) -> None:
        while True:
            if not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            count = await consumed(self.http, self.service) - self.start
            self.times.append(time.perf_counter())
            self.counts.append(count)
            await asyncio.sleep(self.poll)


class FanoutWatch:
    """Follows sign-ups until they are in every read model, each in a task of its own.

    A reader with a view (stack.VIEWS) is asked about the user; any other is followed by
    its counter (CounterWatch)."""

    def __init__(self, http: httpx.AsyncClient, poll: float, timeout: float) -> None:
        self.http, self.poll, self.timeout = http, poll, timeout
        self.viewed = [name for name in READERS if name in VIEWS]
        self.counted = {
            name: CounterWatch(http, name, poll) for name in READERS if name not in VIEWS
        }
        self.done: list[SignUp] = []
        self.timed_out: list[SignUp] = []
        self.followers: list[asyncio.Task[None]] = []
        self.published0 = 0

    async def baseline(self) -> None:
        self.published0 = await published(self.http)
        for watch in self.counted.values():
            await watch.baseline()

    def follow(self, signup: SignUp) -> None:
        self.followers.append(asyncio.create_task(self._follow(signup)))

    async def _look(self, signup: SignUp, name: str) -> None:
        if await shows(self.http, name, signup.user_id):
            signup.seen[name] = time.perf_counter()

    async def _follow(self, signup: SignUp) -> None:
        target: int | None = None
        waited_on: list[CounterWatch] = []
        try:
            while len(signup.seen) < len(READERS):
                if time.perf_counter() - signup.created_at > self.timeout:
                    self.timed_out.append(signup)
                    return
                await asyncio.gather(
                    *(self._look(signup, name) for name in self.viewed if name not in signup.seen)
                )
                if target is None and (signup.seen or not self.viewed):
                    # What the producer had published once this user was out: it counts this
                    # user (published in commit order) and perhaps a few after it.
                    target = await published(self.http) - self.published0
                    for watch in self.counted.values():
                        watch.waiting += 1
                        watch.wake.set()
                        waited_on.append(watch)
                for name, watch in self.counted.items():
                    if target is not None and name not in signup.seen:
                        reached = watch.reached(target)
                        if reached is not None:
                            signup.seen[name] = reached
                            watch.waiting -= 1
                            waited_on.remove(watch)
                if len(signup.seen) < len(READERS):
                    # Every `poll`, or a tenth of its age once that is longer: the error stays
                    # within 10% and the polling load bounded when the stack falls behind.
                    age = time.perf_counter() - signup.created_at
                    await asyncio.sleep(min(MAX_POLL, max(self.poll, age / 10)))
            self.done.append(signup)
        finally:
            for watch in waited_on:
                watch.waiting -= 1


def encoded_bodies(run: str, total: int) -> list[bytes]:
    """The `POST /users` bodies of a step, ready to send: nothing to encode meanwhile."""
    return [
        json.dumps(
            {"name": f"Bench {n}", "email": f"fanout-{run}-{n}@example.com"},
            separators=(",", ":"),
        ).encode()
        for n in range(total)
    ]


async def http_fanout(
    http: httpx.AsyncClient,
    rate: float,
    seconds: float,
    *,
    polling: bool,
    follow_every: int,
    poll: float,
    timeout: float,
) -> dict[str, Any]:
    """POST /users at `rate` per second for `seconds`: the latency of each. With `polling`,
    also the fan-out lag of every `follow_every`-th, followed during the step (polling
    every sign-up would load the services more than the sign-ups do); without, the lag is
    the caller's to read afterwards (inbox.py). `http` is for the looks at the read models;
    the sign-ups get a client of their own, so that a backlog of them does not hold the
    looks up."""
    watch = FanoutWatch(http, poll, timeout) if polling else None
    samplers: list[asyncio.Task[None]] = []
    if watch is not None:
        await watch.baseline()
        samplers = [asyncio.create_task(counter.run()) for counter in watch.counted.values()]
    latencies: list[float] = []
    failures: list[str] = []
    total = max(1, round(rate * seconds))
    last_sent = last_answer = 0.0
    posts = Pool(url(PRODUCER), POST_CONNECTIONS, REQUEST_TIMEOUT)
    requests = [
        posts.request("POST", "/users", body)
        for body in encoded_bodies(uuid.uuid4().hex[:8], total)
    ]

    async def sign_up(n: int, request: bytes) -> None:
        nonlocal last_sent, last_answer
        sent = last_sent = time.perf_counter()
        try:
            status, body = await posts.send(request)
        except (HttpError, TimeoutError) as exc:
            failures.append(repr(exc))
            return
        arrived = last_answer = time.perf_counter()
        if status != 201:
            failures.append(f"{status} {body[:200].decode(errors='replace')}")
            return
        latencies.append(arrived - sent)
        if watch is not None and n % follow_every == 0:
            watch.follow(SignUp(json.loads(body)["id"], arrived))

    started = time.perf_counter()
    try:
        async with posts:
            tasks = []
            for n, request in enumerate(requests):
                # Open loop: each request leaves on its schedule, whether or not earlier ones
                # have returned.
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(sign_up(n, request)))
            await asyncio.gather(*tasks)
        if watch is not None:
            await asyncio.gather(*watch.followers)
    finally:
        for sampler in samplers:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    step: dict[str, Any] = {
        "offered_per_second": rate,
        "seconds": seconds,
        "requests": total,
        # Below the offered rate when this process could not keep to the schedule.
        "sent_per_second": per_second(total, last_sent - started, rate),
        "served": len(latencies),
        "served_per_second": per_second(len(latencies), last_answer - started, rate),
        "failures": len(failures),
        "failure_examples": failures[:5],
        "latency": summary_ms(latencies),
    }
    if watch is not None:
        step |= {
            "lag_from": "polling",
            "fanout_lag": summary_ms([s.lag() for s in watch.done]),
            "fanout_lag_by_read_model": {
                name: summary_ms([s.seen[name] - s.created_at for s in watch.done])
                for name in READERS
            },
            "fanout_timeouts": len(watch.timed_out),
            "followed_every": follow_every,
            "poll_ms": round(poll * 1000, 1),
        }
    return step


def per_second(count: int, seconds: float, rate: float) -> float:
    """`count` events over `seconds` from the first request to the last; the n-th of a
    schedule at `rate` leaves at (n - 1) / rate, so the span of the whole is one interval
    longer than that."""
    return round(count / (seconds + 1 / rate), 1) if count else 0.0
