#!/usr/bin/env bash
# make demo: bake the default project, run it as local processes, drive a short scenario,
# and stop everything it started, whether or not a step fails.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=build/demo
SLUG=$("$PY" -c 'import json; print(json.load(open("cookiecutter.json"))["project_name"].lower().strip().replace(" ", "_").replace("-", "_"))')
PROJECT=$OUT/$SLUG

started=$(date +%s)
rm -rf "$OUT"
echo "==> baking the default project into $PROJECT"
"$(dirname "$PY")/cookiecutter" --no-input . -o "$OUT"
echo "==> installing it (make install)"
make -C "$PROJECT" install
stop() {
    echo "==> stopping everything (make local-down)"
    make -C "$PROJECT" local-down
}
trap stop EXIT
echo "==> starting the broker and the four services (make local-up)"
make -C "$PROJECT" local-up
echo "==> the scenario (make demo)"
make -C "$PROJECT" demo
echo "==> demo finished in $(( $(date +%s) - started ))s"
