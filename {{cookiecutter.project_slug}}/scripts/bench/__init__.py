"""The fan-out benchmark, against the running stack (`make local-up` or `make up`).

    python -m scripts.bench [--events 2000] [--rate 100] [--seconds 10] [--sample 4]
                            [--poll-ms 10] [--phases broker_baseline,pipeline,http]

(`python scripts/bench ...` works too.) Three measurements, one run:

1. broker_baseline (baseline.py): the raw broker, no services. `--events` envelopes
   published through eventkit's transport to a scratch stream (`bench.scratch`) and consumed
   by a subscriber of its own; events/s from the first publish to the last message received.
2. pipeline (pipeline.py): the same number of valid `UserCreated` events published straight
   to the user stream, timed until every service of the roster that subscribes to it has
   applied every one (the deltas of its `eventkit_events_consumed_total{stream=...,
   type="UserCreated"}` on /metrics); events/s, and its ratio to (1).
3. http (fanout.py): `POST /users` at `--rate` per second for `--seconds` (open loop: on
   schedule, not waiting for answers). Request latency, and the fan-out lag of every
   `--sample`-th sign-up: from its 201 until it is visible in every subscriber's read model.
   Where stack.py knows how to ask a read model about one user (billing's account,
   notification's sent mail), that answer is polled every `--poll-ms`, or every tenth of its
   age once that is longer (at most every 250 ms), so the error stays within 10% and the
   polling does not swamp a stack that falls behind.

A read model that keeps counters only (analytics, or a new service) is not asked about one
user. It counts as having the user once its applied-UserCreated counter has grown by at least
as much as the producer's `eventkit_events_published_total{...}` had when another read model
first showed the user. The producer publishes in commit order, so that count includes the
user; a consumer applying the stream in order has then applied it. (Where a stream is split
into partitions, the order holds per partition: events of users on another partition may be
counted first, by as much as that consumer runs behind.)

report.py prints a table and writes reports/bench.json and reports/bench-lag.png. Nothing
else may write to the stack meanwhile: the pipeline and counter figures are deltas.
"""
