"""The fan-out lag from inbox records (dev_tools/bench/inbox.py): no stack needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from dev_tools.bench.inbox import inbox_lags

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def test_a_sign_ups_lag_is_its_slowest_read_model() -> None:
    produced = {"e1": at(0), "e2": at(100)}
    processed = {
        "billing": {"e1": at(10), "e2": at(130)},
        "notification": {"e1": at(40), "e2": at(105)},
        "analytics": {"e1": at(20), "e2": at(150), "other": at(5)},  # not the step's: ignored
    }
    lags = inbox_lags(produced, processed)
    assert lags["fanout_timeouts"] == 0
    overall = lags["fanout_lag"]
    assert overall["count"] == 2
    assert (overall["p50_ms"], overall["max_ms"]) == (40.0, 50.0)  # e1: 40 ms, e2: 50 ms
    by_model = lags["fanout_lag_by_read_model"]
    assert set(by_model) == {"billing", "notification", "analytics"}
    assert (by_model["billing"]["p50_ms"], by_model["billing"]["max_ms"]) == (10.0, 30.0)
    assert by_model["notification"]["max_ms"] == 40.0
    assert by_model["analytics"]["count"] == 2


def test_an_event_a_read_model_never_processed_is_missing_not_a_lag() -> None:
    produced = {"e1": at(0), "e2": at(0)}
    processed = {"billing": {"e1": at(10), "e2": at(20)}, "notification": {"e1": at(30)}}
    lags = inbox_lags(produced, processed)
    assert lags["fanout_timeouts"] == 1
    assert lags["fanout_lag"]["count"] == 1 and lags["fanout_lag"]["max_ms"] == 30.0
    # Each read model's own lags count what it did process.
    assert lags["fanout_lag_by_read_model"]["billing"]["count"] == 2
    assert lags["fanout_lag_by_read_model"]["notification"]["count"] == 1


def test_times_in_other_zones_compare_as_instants() -> None:
    plus_two = datetime(2026, 1, 1, 2, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    lags = inbox_lags({"e1": at(0)}, {"billing": {"e1": plus_two}})
    assert lags["fanout_lag"]["max_ms"] == 250.0


def test_no_events_no_lags() -> None:
    lags = inbox_lags({}, {"billing": {}})
    assert lags["fanout_lag"]["count"] == 0 and lags["fanout_timeouts"] == 0
