"""The fan-out benchmark, against the running stack (`make local-up` or `make up`).

    python scripts/bench.py [--events 2000] [--rate 100] [--seconds 10] [--sample 4]
                            [--poll-ms 10] [--phases broker_baseline,pipeline,http]

Three measurements, one run:

1. broker: the raw broker, no services. `--events` envelopes published through eventkit's
   BrokerTransport to a scratch stream (`bench.scratch`) and consumed by a subscriber of
   its own; events/s from the first publish to the last message received.
2. pipeline: the same number of valid `UserCreated` events published straight to
   `user.events`, timed until notification, analytics and billing have each applied every
   one (the deltas of their `eventkit_events_consumed_total{stream="user.events",
   type="UserCreated"}` on /metrics); events/s, and its ratio to (1).
3. http: `POST /users` at `--rate` per second for `--seconds` (open loop: on schedule, not
   waiting for answers). Request latency, and the fan-out lag of every `--sample`-th
   sign-up: from its 201 until it is visible in all three read models: billing
   `GET /accounts/{id}` is 200, notification `GET /notifications?user_id=` is not empty, and
   analytics has caught up with it (below). Each is polled every `--poll-ms`, or every
   tenth of its age once that is longer (at most every 250 ms), so the error stays within
   10% and the polling does not swamp a stack that falls behind.

Analytics keeps counters only, so no call asks it about one user. It counts as having the
user once its `eventkit_events_consumed_total{stream="user.events",type="UserCreated"}` has
grown by at least as much as the user service's `eventkit_events_published_total{...}` had
when billing or notification first showed the user. The user service publishes in commit
order, so that count includes the user; a consumer applying the stream in order has then
applied it. (Where a stream is split into partitions, the order holds per partition: events
of users on another partition may be counted first, by as much as that consumer runs behind.)

Prints a table, writes reports/bench.json and reports/bench-lag.png. Nothing else may write
to the stack meanwhile: the pipeline and analytics figures are counter deltas.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from eventkit import ServiceSettings, broker, new_event

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
SERVICES = {"user": 8001, "notification": 8002, "analytics": 8003, "billing": 8004}
CONSUMERS = ("notification", "analytics", "billing")
STREAM = "user.events"
SCRATCH = "bench.scratch"
PHASES = ("broker_baseline", "pipeline", "http")
MAX_POLL = 0.25  # seconds between looks at one sign-up, however far behind the stack is


def url(name: str) -> str:
    return os.environ.get(f"{name.upper()}_URL", f"http://localhost:{SERVICES[name]}")


# --- numbers ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms, default=0.0), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else 0.0,
    }


COUNTER = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)", re.MULTILINE)


def counter(metrics_text: str, name: str, stream: str = STREAM, type_: str = "UserCreated") -> int:
    """The value of one labelled series of a Prometheus counter in /metrics text."""
    total = 0.0
    for metric, labels, value in COUNTER.findall(metrics_text):
        if metric == name and f'stream="{stream}"' in labels and f'type="{type_}"' in labels:
            total += float(value)
    return int(total)


async def get(http: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
    """GET, once more after a connection the server had just closed (keep-alive races)."""
    for attempt in range(3):
        try:
            return await http.get(path, **kwargs)
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def read_counter(http: httpx.AsyncClient, service: str, name: str) -> int:
    response = await get(http, f"{url(service)}/metrics")
    response.raise_for_status()
    return counter(response.text, name)


async def consumed(http: httpx.AsyncClient, service: str) -> int:
    return await read_counter(http, service, "eventkit_events_consumed_total")


async def published(http: httpx.AsyncClient) -> int:
    return await read_counter(http, "user", "eventkit_events_published_total")


# --- broker phases ------------------------------------------------------------------------


def transport_config(name: str) -> Any:
    settings = ServiceSettings(SERVICE_NAME=name, PORT=0, DATABASE_URL="sqlite://")
    return broker.config_from_settings(settings)


async def publish_all(
    transport: Any, stream: str, messages: list[tuple[bytes, str, str]], in_flight: int
) -> float:
    """Publish every (body, key, type) with up to `in_flight` awaiting the broker; seconds."""
    gate = asyncio.Semaphore(in_flight)

    async def one(body: bytes, key: str, event_type: str) -> None:
        async with gate:
            await transport.publish(stream, body, key=key, event_type=event_type)

    started = time.perf_counter()
    await asyncio.gather(*(one(*m) for m in messages))
    return time.perf_counter() - started


def user_created(run: str, n: int) -> tuple[bytes, str, str]:
    user_id = str(uuid.uuid4())
    data = {"user_id": user_id, "name": f"bench {n}", "email": f"bench-{run}-{n}@example.com"}
    return new_event("UserCreated", data, source="bench").to_bytes(), user_id, "UserCreated"


async def raw_broker(events: int, in_flight: int, timeout: float) -> dict[str, Any]:
    """Publish and consume `events` envelopes on a scratch stream: the broker alone."""
    run = uuid.uuid4().hex[:8]
    marker = f"bench-{run}-".encode()
    warmup_marker = f"warmup-{run}".encode()
    messages = [user_created(run, n) for n in range(events)]
    received = 0
    warmed = asyncio.Event()
    done = asyncio.Event()
    last_at = 0.0

    async def on_message(body: bytes, headers: Mapping[str, str] | None = None) -> None:
        nonlocal received, last_at
        if warmup_marker in body:
            warmed.set()
        elif marker in body:
            received += 1
            if received >= events:
                last_at = time.perf_counter()
                done.set()

    # The subscriber first: it declares what it reads from where the broker needs that.
    subscriber = broker.BrokerTransport(transport_config("bench"))
    subscriber.subscribe(SCRATCH, on_message)
    producer = broker.BrokerTransport(transport_config("bench-producer"))
    await subscriber.start()
    try:
        await producer.start()
        try:
            # Until the subscriber receives: a consumer group may take seconds to form, and
            # a topic is created by its first message.
            warmup = new_event("BenchWarmup", {"run": f"warmup-{run}"}, source="bench").to_bytes()
            started = time.perf_counter()
            while not warmed.is_set():
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"the scratch subscriber got nothing in {timeout:.0f}s")
                await producer.publish(SCRATCH, warmup, key=run, event_type="BenchWarmup")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(warmed.wait(), 1.0)
            warmup_seconds = time.perf_counter() - started
            started = time.perf_counter()
            publish_seconds = await publish_all(producer, SCRATCH, messages, in_flight)
            try:
                await asyncio.wait_for(done.wait(), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"the scratch subscriber received {received} of {events} in {timeout:.0f}s"
                ) from None
        finally:
            await producer.stop()
    finally:
        await subscriber.stop()
    seconds = last_at - started
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "publish_events_per_second": round(events / publish_seconds, 1),
        "subscriber_ready_seconds": round(warmup_seconds, 2),
    }


async def pipeline(
    http: httpx.AsyncClient, events: int, in_flight: int, timeout: float
) -> dict[str, Any]:
    """Publish `events` UserCreated to user.events; time until every consumer applied them."""
    run = uuid.uuid4().hex[:8]
    messages = [user_created(run, n) for n in range(events)]
    before = {name: await consumed(http, name) for name in CONSUMERS}
    producer = broker.BrokerTransport(transport_config("bench-producer"))
    await producer.start()
    finished: dict[str, float] = {}
    try:
        started = time.perf_counter()
        publishing = asyncio.create_task(publish_all(producer, STREAM, messages, in_flight))
        deadline = time.monotonic() + timeout
        applied = dict.fromkeys(CONSUMERS, 0)
        while len(finished) < len(CONSUMERS):
            await asyncio.sleep(0.2)  # /metrics costs the consumers too: not too often
            for name in CONSUMERS:
                if name in finished:
                    continue
                applied[name] = await consumed(http, name) - before[name]
                if applied[name] >= events:
                    finished[name] = time.perf_counter() - started
            if time.monotonic() > deadline:
                publishing.cancel()
                raise TimeoutError(f"after {timeout:.0f}s the consumers had applied {applied}")
        publish_seconds = await publishing
    finally:
        await producer.stop()
    seconds = max(finished.values())
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "publish_events_per_second": round(events / publish_seconds, 1),
        "per_consumer_events_per_second": {
            name: round(events / finished[name], 1) for name in CONSUMERS
        },
    }


# --- HTTP fan-out -------------------------------------------------------------------------


@dataclass
class SignUp:
    user_id: str
    created_at: float  # perf_counter when the 201 arrived
    seen: dict[str, float] = field(default_factory=dict)  # read model -> perf_counter

    def lag(self) -> float:
        return max(self.seen.values()) - self.created_at


class AnalyticsCounter:
    """Samples analytics' applied-UserCreated counter while anyone waits for it.

    The samples are (time the answer arrived, count since the baseline); the count only
    grows, so the first sample at or above a target is when analytics reached it.
    """

    def __init__(self, http: httpx.AsyncClient, poll: float) -> None:
        self.http, self.poll = http, poll
        self.times: list[float] = []
        self.counts: list[int] = []
        self.waiting = 0
        self.start = 0
        self.wake = asyncio.Event()

    async def baseline(self) -> None:
        self.start = await consumed(self.http, "analytics")

    def reached(self, target: int) -> float | None:
        index = bisect.bisect_left(self.counts, target)
        return self.times[index] if index < len(self.times) else None

    async def run(self) -> None:
        while True:
            if not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            count = await consumed(self.http, "analytics") - self.start
            self.times.append(time.perf_counter())
            self.counts.append(count)
            await asyncio.sleep(self.poll)


class FanoutWatch:
    """Follows sign-ups until they are in every read model, each in a task of its own."""

    def __init__(self, http: httpx.AsyncClient, poll: float, timeout: float) -> None:
        self.http, self.poll, self.timeout = http, poll, timeout
        self.analytics = AnalyticsCounter(http, poll)
        self.done: list[SignUp] = []
        self.timed_out: list[SignUp] = []
        self.followers: list[asyncio.Task[None]] = []
        self.published0 = 0

    async def baseline(self) -> None:
        self.published0 = await published(self.http)
        await self.analytics.baseline()

    def follow(self, signup: SignUp) -> None:
        self.followers.append(asyncio.create_task(self._follow(signup)))

    async def _billing(self, signup: SignUp) -> None:
        response = await get(self.http, f"{url('billing')}/accounts/{signup.user_id}")
        if response.status_code == 200:
            signup.seen["billing"] = time.perf_counter()

    async def _notification(self, signup: SignUp) -> None:
        params = {"user_id": signup.user_id}
        response = await get(self.http, f"{url('notification')}/notifications", params=params)
        if response.status_code == 200 and response.json():
            signup.seen["notification"] = time.perf_counter()

    async def _follow(self, signup: SignUp) -> None:
        target: int | None = None
        try:
            while len(signup.seen) < 3:
                now = time.perf_counter()
                if now - signup.created_at > self.timeout:
                    self.timed_out.append(signup)
                    return
                probes = []
                if "billing" not in signup.seen:
                    probes.append(self._billing(signup))
                if "notification" not in signup.seen:
                    probes.append(self._notification(signup))
                await asyncio.gather(*probes)
                if target is None and signup.seen:
                    # What the user service had published once this user was out: it counts
                    # this user (published in commit order) and perhaps a few after it.
                    target = await published(self.http) - self.published0
                    self.analytics.waiting += 1
                    self.analytics.wake.set()
                if target is not None and "analytics" not in signup.seen:
                    reached = self.analytics.reached(target)
                    if reached is not None:
                        signup.seen["analytics"] = reached
                        self.analytics.waiting -= 1
                if len(signup.seen) < 3:
                    # Every `poll`, or a tenth of its age once that is longer: the error stays
                    # within 10% and the polling load bounded when the stack falls behind.
                    age = time.perf_counter() - signup.created_at
                    await asyncio.sleep(min(MAX_POLL, max(self.poll, age / 10)))
            self.done.append(signup)
        finally:
            if target is not None and "analytics" not in signup.seen:
                self.analytics.waiting -= 1


async def http_fanout(
    http: httpx.AsyncClient,
    rate: float,
    seconds: float,
    *,
    sample: int,
    poll: float,
    timeout: float,
) -> dict[str, Any]:
    """POST /users at `rate` per second for `seconds`: the latency of each, and the fan-out
    lag of every `sample`-th (polling every sign-up would load the services more than the
    sign-ups do)."""
    watch = FanoutWatch(http, poll, timeout)
    await watch.baseline()
    sampler = asyncio.create_task(watch.analytics.run())
    latencies: list[float] = []
    failures: list[str] = []
    total = int(rate * seconds)
    run = uuid.uuid4().hex[:8]

    async def sign_up(n: int) -> None:
        body = {"name": f"Bench {n}", "email": f"fanout-{run}-{n}@example.com"}
        sent = time.perf_counter()
        try:
            response = await http.post(f"{url('user')}/users", json=body)
        except httpx.HTTPError as exc:
            failures.append(repr(exc))
            return
        arrived = time.perf_counter()
        if response.status_code != 201:
            failures.append(f"{response.status_code} {response.text[:200]}")
            return
        latencies.append(arrived - sent)
        if n % sample == 0:
            watch.follow(SignUp(response.json()["id"], arrived))

    started = time.perf_counter()
    tasks = []
    try:
        for n in range(total):
            # Open loop: each request leaves on its schedule, whether or not earlier ones
            # have returned.
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(sign_up(n)))
        await asyncio.gather(*tasks)
        sent_seconds = time.perf_counter() - started
        await asyncio.gather(*watch.followers)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    lags = [s.lag() for s in watch.done]
    by_model = {
        name: summary_ms([s.seen[name] - s.created_at for s in watch.done]) for name in CONSUMERS
    }
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": total,
        "achieved_rate": round(len(latencies) / sent_seconds, 1),
        "failures": len(failures),
        "failure_examples": failures[:5],
        "latency": summary_ms(latencies),
        "fanout_lag": summary_ms(lags),
        "fanout_lag_by_read_model": by_model,
        "fanout_timeouts": len(watch.timed_out),
        "fanout_sample_every": sample,
        "poll_ms": round(poll * 1000, 1),
        "lags_ms": [round(lag * 1000, 2) for lag in lags],
    }


# --- report -------------------------------------------------------------------------------


def client_versions() -> dict[str, str]:
    """FastStream and the broker client it runs on, as installed."""
    versions = {"faststream": importlib.metadata.version("faststream")}
    requires = importlib.metadata.requires("eventkit") or []
    extras = {
        extra
        for requirement in requires
        if requirement.startswith("faststream[")
        for extra in requirement.split("[", 1)[1].split("]", 1)[0].split(",")
    }
    for requirement in importlib.metadata.requires("faststream") or []:
        match = re.match(r"([A-Za-z0-9_.-]+).*extra == ['\"](\w+)['\"]", requirement)
        if match and match.group(2) in extras:
            name = match.group(1)
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def plot(http: dict[str, Any], broker_kind: str, path: Path) -> None:
    """A histogram of the fan-out lags, with their percentiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lags = http["lags_ms"]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    if lags:
        axis.hist(lags, bins=min(60, max(10, len(lags) // 5)), color="#4c72b0")
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            value = http["fanout_lag"][f"{q}_ms"]
            axis.axvline(value, color="#c44e52", linestyle=style, label=f"{q} {value:.1f} ms")
        axis.legend()
    axis.set_xlabel("fan-out lag: from the 201 to visible in all three read models (ms)")
    axis.set_ylabel("sign-ups")
    axis.set_title(
        f"{broker_kind}: {http['rate']:g} sign-ups/s for {http['seconds']:g} s, "
        f"lag of every {http['fanout_sample_every']}th: {len(lags)}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def percentiles(summary: dict[str, float]) -> str:
    return "p50 {p50_ms:.1f} / p95 {p95_ms:.1f} / p99 {p99_ms:.1f} ms".format(**summary)


def print_table(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    raw, pipe, http = (report.get(key) for key in PHASES)
    if raw:
        rows.append(
            (
                "broker baseline",
                f"{raw['events_per_second']:,.0f} events/s",
                f"{raw['events']} events; publishing alone "
                f"{raw['publish_events_per_second']:,.0f}/s",
            )
        )
    if pipe:
        ratio = report.get("pipeline_to_baseline")
        consumers = ", ".join(
            f"{k} {v:,.0f}/s" for k, v in pipe["per_consumer_events_per_second"].items()
        )
        rows.append(
            (
                "pipeline",
                f"{pipe['events_per_second']:,.0f} events/s",
                (f"{ratio:.2f} of the baseline; " if ratio else "") + consumers,
            )
        )
    if http:
        rows.append(
            (
                "POST /users latency",
                percentiles(http["latency"]),
                f"{http['achieved_rate']:g}/s of {http['rate']:g}/s asked, "
                f"{http['failures']} failed",
            )
        )
        rows.append(
            (
                "fan-out lag",
                percentiles(http["fanout_lag"]),
                f"{http['fanout_lag']['count']} sign-ups followed, "
                f"{http['fanout_timeouts']} timed out",
            )
        )
        rows += [
            (f"  in {name}", percentiles(summary), "")
            for name, summary in http["fanout_lag_by_read_model"].items()
        ]
    machine = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    print(f"\n{report['broker']}: {machine['cpus']} CPUs, Python {machine['python']}, {versions}")
    for name, value, note in rows:
        print(f"{name:<20} {value:<40} {note}")


async def main_async(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {
        "broker": broker.BROKER_KIND,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "versions": client_versions(),
        "parameters": {
            "events": args.events,
            "rate": args.rate,
            "seconds": args.seconds,
            "in_flight": args.in_flight,
            "poll_ms": args.poll_ms,
            "sample": args.sample,
            "timeout": args.timeout,
        },
    }
    # Idle connections are dropped before uvicorn's 5 s keep-alive would close them.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        not_ready = []
        for name in SERVICES:
            try:
                status = (await http.get(f"{url(name)}/ready")).status_code
            except httpx.HTTPError as exc:
                status = repr(exc)
            if status != 200:
                not_ready.append(f"{name} at {url(name)}: {status}")
        if not_ready:
            message = "bench: stack not ready (make local-up): " + "; ".join(not_ready)
            print(message, file=sys.stderr)
            return 1
        steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("broker_baseline", lambda: raw_broker(args.events, args.in_flight, args.timeout)),
            ("pipeline", lambda: pipeline(http, args.events, args.in_flight, args.timeout)),
            (
                "http",
                lambda: http_fanout(
                    http,
                    args.rate,
                    args.seconds,
                    sample=args.sample,
                    poll=args.poll_ms / 1000,
                    timeout=args.timeout,
                ),
            ),
        ]
        for key, step in steps:
            if key not in args.phases:
                continue
            print(f"bench: {key} ...", flush=True)
            report[key] = await step()
    if "pipeline" in report and "broker_baseline" in report:
        report["pipeline_to_baseline"] = round(
            report["pipeline"]["events_per_second"]
            / report["broker_baseline"]["events_per_second"],
            3,
        )
    REPORTS.mkdir(exist_ok=True)
    written = [REPORTS / "bench.json"]
    if "http" in report:
        plot(report["http"], report["broker"], REPORTS / "bench-lag.png")
        written.append(REPORTS / "bench-lag.png")
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {' and '.join(str(path.relative_to(ROOT)) for path in written)}")
    http = report.get("http", {})
    return 1 if http.get("failures") or http.get("fanout_timeouts") else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events for (1) and (2)")
    parser.add_argument("--rate", type=float, default=100, help="sign-ups per second in (3)")
    parser.add_argument("--seconds", type=float, default=10, help="how long (3) runs")
    parser.add_argument("--poll-ms", type=float, default=10, help="read-model polling interval")
    parser.add_argument("--sample", type=int, default=4, help="follow every Nth sign-up's fan-out")
    parser.add_argument("--in-flight", type=int, default=100, help="publishes awaiting the broker")
    parser.add_argument("--timeout", type=float, default=60, help="give up on a phase after")
    parser.add_argument(
        "--phases",
        type=lambda text: [p.strip() for p in text.split(",")],
        default=list(PHASES),
        help=f"run only some, comma-separated (default: {','.join(PHASES)})",
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
