#!/usr/bin/env bash
# make bench BROKER=kafka|rabbitmq|sqs: bake a project with that broker into
# build/bench-<broker>, install it, run it as local processes, run its fan-out benchmark
# (`make bench`), and stop everything it started, whether or not a step fails.
#
# Kafka: local-up starts the Kafka-protocol broker on BROKER_URL (default localhost:9092).
# RabbitMQ: the server at BROKER_URL (default amqp://guest:guest@localhost:5672/), or a node
# local-up starts itself when none answers there. SNS + SQS: the endpoint at BROKER_URL
# (default http://localhost:4566), or a moto_server local-up starts itself from the project's
# venv when none answers there. USER_URL and the other <NAME>_URLs, and
# BENCH_ARGS (e.g. "--events 5000 --steps 25,50,100 --step-seconds 5"), pass through.
set -euo pipefail
PY=${PY:-.venv/bin/python}
BROKER=${BROKER:-kafka}
case "$BROKER" in
    kafka | rabbitmq | sqs) ;;
    *) echo "make bench: BROKER must be kafka, rabbitmq or sqs, not '$BROKER'" >&2; exit 2 ;;
esac
OUT=build/bench-$BROKER
PROJECT=$OUT/fanout_bench

started=$(date +%s)
rm -rf "$OUT"
echo "==> baking a $BROKER project into $PROJECT"
"$(dirname "$PY")/cookiecutter" --no-input . -o "$OUT" broker="$BROKER" project_slug=fanout_bench
echo "==> installing it (make install)"
make -C "$PROJECT" install
stop() {
    echo "==> stopping everything (make local-down)"
    make -C "$PROJECT" local-down
}
trap stop EXIT
echo "==> starting the broker and the four services (make local-up)"
make -C "$PROJECT" local-up
echo "==> the benchmark (make bench)"
make -C "$PROJECT" bench BENCH_ARGS="${BENCH_ARGS:-}"
echo "==> bench finished in $(( $(date +%s) - started ))s; report: $PROJECT/reports/bench.json, plot: $PROJECT/reports/bench.png"
