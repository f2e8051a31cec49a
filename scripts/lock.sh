#!/usr/bin/env bash
# make lock: pin each broker's project packages again. The locks sit in the template as
# requirements-<broker>.lock (the post-generation hook keeps the chosen one as
# requirements.lock). Each is written by the baked project's own `dev_tools lock`, from the
# pyproject.toml files as baked, keeping the pins that still fit (UPGRADE=1: the newest).
set -euo pipefail
PY=${PY:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: used inside each bake
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for broker in kafka rabbitmq sqs; do
    echo "==> $broker: baking, then pinning from its pyproject.toml files"
    "$(dirname "$PY")/cookiecutter" --no-input . -o "$OUT" broker="$broker" project_slug="lock_$broker"
    (cd "$OUT/lock_$broker" && PYTHONPATH=tools/src "$PY" -m dev_tools lock ${UPGRADE:+--upgrade})
    cp "$OUT/lock_$broker/requirements.lock" "{{cookiecutter.project_slug}}/requirements-$broker.lock"
done
