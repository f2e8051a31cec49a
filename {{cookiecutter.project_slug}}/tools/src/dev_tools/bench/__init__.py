"""The fan-out benchmark, against the running stack (`make local-up` or `make up`).

    python -m dev_tools bench [--events 10000] [--steps 25,50,100,200,400] [--step-seconds 10]
                              [--lag-from inbox|polling] [--follow 10] [--poll-ms 10]
                              [--phases ceiling,pipeline,saturation] [--accept]

Three phases, one module each, in one run:

1. ceiling (ceiling.py, the broker's part in ceiling_<broker>.py): the broker with its
   plain client and no-op consumers in the services' fan-out shape, no FastStream, no
   database: what the stack could deliver at most. Scratch names, removed afterwards.
2. pipeline (pipeline.py): as many UserCreated published into the user stream, timed until
   every reader has applied them all (their /metrics); its ratio to (1), and the CPU time of
   each process per event.
3. saturation (saturation.py, each step fanout.py): `POST /users` at stepped offered rates
   until the served rate falls behind, sent by a lean HTTP/1.1 client (http1.py); per step
   the rate served, the request latency, the fan-out lag, and the CPU per sign-up of the
   stack and of the benchmark itself. The lag is read after each step from the producer's
   feed and the readers' inboxes (inbox.py: from the event's timestamp to each reader's
   processed_at), or with `--lag-from polling` by following sign-ups from their `201` until
   every read model shows them, during the step.

cpu.py reads the CPU time of the processes that local-up runs (their PIDs from its
supervisord); report.py prints the table and draws reports/bench.png; cli.py writes
reports/bench.json; baseline.py sets the run's figures beside reports/bench-baseline.json
and flags those more than 20 % worse (`--accept` makes the run the baseline). Nothing else
may write to the stack meanwhile: the counter figures are deltas.
"""
