"""Load test of the running stack: `make load` (headless, reports under reports/load/) or
`make load-ui` (locust's web UI on http://127.0.0.1:8089).

Each simulated user signs people up, renames them, changes their email, invoices them,
reads the billing accounts, notifications and analytics, and now and then deactivates one.
Each service of the roster (libs/contracts) is found at its `<NAME>_URL` (USER_URL,
BILLING_URL, ...; default: localhost at its roster port).

Besides the HTTP calls, locust's statistics get a row `FANOUT fanout_lag`: for one sign-up in
FANOUT_SAMPLE (default 10), the time from the 201 of `POST /users` until the user is visible
in the read model of every service that subscribes to the user stream, polled in a greenlet
of its own every FANOUT_POLL_MS (default 20), or every tenth of the time waited once that is
longer (at most every 250 ms):

- billing: `GET /accounts/{id}` answers 200;
- notification: `GET /notifications?user_id={id}` is not empty (the welcome email);
- any other (analytics, or a service added since) keeps counters only as far as this test
  knows, so no call asks it about one user. It counts as having the user once its
  `eventkit_events_consumed_total{stream="user.events",type="UserCreated"}` (on /metrics)
  has grown, since the test started, by at least as much as the producer's
  `eventkit_events_published_total{stream="user.events",type="UserCreated"}` had when
  billing or notification first showed the user. The producer publishes in commit order,
  so that count includes the user, and a consumer applying the stream in order has then
  applied it (where a stream is split into partitions: in order per partition).

A sign-up not visible everywhere within FANOUT_TIMEOUT seconds (default 30) is a failure of
`fanout_lag`, so `make load` fails. The polling itself is not in the statistics.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import gevent
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.event import EventHook

from contracts import ROSTER, USER_EVENTS

FANOUT_SAMPLE = int(os.environ.get("FANOUT_SAMPLE", "10"))
FANOUT_POLL = float(os.environ.get("FANOUT_POLL_MS", "20")) / 1000
FANOUT_TIMEOUT = float(os.environ.get("FANOUT_TIMEOUT", "30"))
STREAM, CREATED = USER_EVENTS, "UserCreated"
PRODUCER = ROSTER.producer(STREAM).name
READERS = [spec.name for spec in ROSTER.subscribers(STREAM)]
# How to ask a read model whether it has one user; a reader without an entry is followed
# through its counter.
VIEWS = {"billing": "/accounts/{id}", "notification": "/notifications?user_id={id}"}
SERIES = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)", re.MULTILINE)


def url(name: str) -> str:
    return ROSTER.url(name)


class FanoutTimeout(Exception):
    """A sampled sign-up that did not reach every read model in time."""


class Probe:
    """Reads the read models for the fan-out probes, outside locust's statistics."""

    def __init__(self) -> None:
        # Retries: a poll may find a kept-alive connection that the server has just closed.
        self.http = FastHttpSession(
            base_url=None, request_event=EventHook(), user=None, max_retries=3
        )
        self.published0 = 0
        self.consumed0: dict[str, int] = {}

    def counter(self, service: str, metric: str) -> int:
        response = self.http.get(f"{url(service)}/metrics")
        response.raise_for_status()
        return int(
            sum(
                float(value)
                for name, labels, value in SERIES.findall(response.text or "")
                if name == metric
                and f'stream="{STREAM}"' in labels
                and f'type="{CREATED}"' in labels
            )
        )

    def published(self) -> int:
        """UserCreated events the producer has published since the test started."""
        return self.counter(PRODUCER, "eventkit_events_published_total") - self.published0

    def consumed(self, service: str) -> int:
        """UserCreated events `service` has applied since the test started."""
        return self.counter(service, "eventkit_events_consumed_total") - self.consumed0[service]

    def baseline(self) -> None:
        self.published0 = self.counter(PRODUCER, "eventkit_events_published_total")
        self.consumed0 = {
            name: self.counter(name, "eventkit_events_consumed_total")
            for name in READERS
            if name not in VIEWS
        }

    def shows(self, service: str, user_id: str) -> bool:
        """Whether the read model of `service` (one with an entry in VIEWS) has the user."""
        response = self.http.get(url(service) + VIEWS[service].format(id=user_id))
        return response.status_code == 200 and bool(response.json())

    def fanout(self, environment: Environment, user_id: str, created_at: float) -> None:
        """Poll until `user_id` is in every read model; report the lag as `fanout_lag`."""
        seen: dict[str, float] = {}
        target: int | None = None
        exception: Exception | None = None
        try:
            while len(seen) < len(READERS):
                if time.perf_counter() - created_at > FANOUT_TIMEOUT:
                    missing = [name for name in READERS if name not in seen]
                    raise FanoutTimeout(f"not in {', '.join(missing)} after {FANOUT_TIMEOUT:g}s")
                for name in READERS:
                    if name in VIEWS and name not in seen and self.shows(name, user_id):
                        seen[name] = time.perf_counter()
                if target is None and (seen or not set(VIEWS) & set(READERS)):
                    target = self.published()
                for name in READERS:
                    if name in VIEWS or name in seen or target is None:
                        continue
                    if self.consumed(name) >= target:
                        seen[name] = time.perf_counter()
                if len(seen) < len(READERS):  # a tenth of its age once that is longer
                    age = time.perf_counter() - created_at
                    gevent.sleep(min(0.25, max(FANOUT_POLL, age / 10)))
        except Exception as exc:  # a timeout, or a read model that failed to answer
            exception = exc
        done = max(seen.values()) if exception is None else time.perf_counter()
        environment.events.request.fire(
            request_type="FANOUT",
            name="fanout_lag",
            response_time=(done - created_at) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )


PROBE: Probe | None = None
SIGN_UPS = itertools.count()  # this process's sign-ups, to sample one in FANOUT_SAMPLE


@events.test_start.add_listener
def _start_probe(environment: Environment, **_: Any) -> None:
    global PROBE
    PROBE = Probe()
    PROBE.baseline()


@dataclass
class Person:
    id: str
    created_at: float
    in_billing: bool = False


class SignUpAndUse(FastHttpUser):
    """One client of the system: the people it signed up, and what it does with them."""

    host = url(PRODUCER)
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.people: list[Person] = []
        self.sign_up()

    def email(self) -> str:
        return f"load-{uuid.uuid4().hex[:12]}@example.com"

    def person(self) -> Person | None:
        return random.choice(self.people) if self.people else None

    @task(4)
    def sign_up(self) -> None:
        body = {"name": random.choice(["Ada", "Alan", "Grace", "Edsger"]), "email": self.email()}
        with self.client.post("/users", json=body, name="POST /users", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"{r.status_code}: {r.text}")
                return
            created_at = time.perf_counter()
            user_id = r.json()["id"]
        self.people.append(Person(user_id, created_at))
        if PROBE is not None and next(SIGN_UPS) % FANOUT_SAMPLE == 0:
            gevent.spawn(PROBE.fanout, self.environment, user_id, created_at)

    @task(2)
    def rename(self) -> None:
        if person := self.person():
            body = {"name": random.choice(["Ada L.", "Alan T.", "Grace H.", "Edsger D."])}
            self.client.patch(f"/users/{person.id}", json=body, name="PATCH /users/[id] name")

    @task(1)
    def change_email(self) -> None:
        if person := self.person():
            body = {"email": self.email()}
            self.client.patch(f"/users/{person.id}", json=body, name="PATCH /users/[id] email")

    @task(3)
    def read_account(self) -> None:
        """200 once billing has the user; a 404 is fine for a sign-up still fanning out."""
        person = self.person()
        if person is None:
            return
        path = f"{url('billing')}/accounts/{person.id}"
        with self.client.get(path, name="GET /accounts/[id]", catch_response=True) as r:
            if r.status_code == 200:
                person.in_billing = True
            elif r.status_code == 404 and time.perf_counter() - person.created_at < FANOUT_TIMEOUT:
                r.success()
            else:
                r.failure(f"{r.status_code}: {r.text}")

    @task(2)
    def invoice(self) -> None:
        """Only people billing already has: before that, 404 would be the right answer."""
        billed = [p for p in self.people if p.in_billing]
        if not billed:
            return
        body = {"user_id": random.choice(billed).id, "amount": f"{random.randint(1, 500)}.00"}
        self.client.post(f"{url('billing')}/invoices", json=body, name="POST /invoices")

    @task(1)
    def read_notifications(self) -> None:
        if person := self.person():
            path = f"{url('notification')}/notifications?user_id={person.id}"
            self.client.get(path, name="GET /notifications?user_id=")

    @task(2)
    def read_stats(self) -> None:
        self.client.get(f"{url('analytics')}/stats", name="GET /stats")

    @task(1)
    def deactivate(self) -> None:
        if len(self.people) < 2:
            return
        person = self.people.pop(random.randrange(len(self.people)))
        self.client.delete(f"/users/{person.id}", name="DELETE /users/[id]")
