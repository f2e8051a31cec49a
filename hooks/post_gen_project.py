"""Delete the broker adapter (and its tests and scripts) that the project does not use, and
keep the chosen broker's lock as requirements.lock.

Both brokers' files sit side by side in the template under their own names; nothing else is
renamed, so the template's Python imports and lints where it stands. The locks differ by
broker (faststream's extra, the embedded Kafka broker), so each broker has its own.
"""

import shutil
from pathlib import Path

BROKER = {{cookiecutter.broker | tojson}}
OTHER = {"kafka": "rabbitmq", "rabbitmq": "kafka"}[BROKER]

# Each broker-specific file, with `{broker}` where its broker's name stands.
PER_BROKER = [
    "libs/eventkit/src/eventkit/transports/{broker}.py",
    "libs/eventkit/tests/test_transport_{broker}.py",
    "scripts/local_broker_{broker}.py",
    "scripts/bench/ceiling_{broker}.py",
    "infra/grafana/dashboards/backlog_{broker}.json",
    "tests/faults/test_broker_restart_{broker}.py",  # RabbitMQ only: tansu keeps topics in memory
]
LOCK = "requirements-{broker}.lock"  # third-party pins with hashes (make lock writes them)


def main() -> None:
    root = Path.cwd()
    for pattern in PER_BROKER:
        (root / pattern.format(broker=OTHER)).unlink(missing_ok=True)
    (root / LOCK.format(broker=OTHER)).unlink()
    (root / LOCK.format(broker=BROKER)).rename(root / "requirements.lock")
    for leftover in root.rglob("__pycache__"):
        shutil.rmtree(leftover, ignore_errors=True)


if __name__ == "__main__":
    main()
