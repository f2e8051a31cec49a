"""Keep only the chosen broker's modules, under their broker-neutral names."""

import shutil
from pathlib import Path

BROKER = {{cookiecutter.broker | tojson}}
OTHER = {"kafka": "rabbitmq", "rabbitmq": "kafka"}[BROKER]

# Each broker-specific file is written `<stem>_<broker><suffix>`; the chosen one
# becomes `<stem><suffix>`, the other broker's is deleted.
PER_BROKER = [
    "libs/eventkit/src/eventkit/broker.py",
    "libs/eventkit/tests/test_broker.py",
    "scripts/local_broker.py",
    "tests/faults/test_broker_restart.py",  # RabbitMQ only: tansu keeps topics in memory
]


def main() -> None:
    root = Path.cwd()
    for name in PER_BROKER:
        target = root / name
        chosen = target.with_name(f"{target.stem}_{BROKER}{target.suffix}")
        other = target.with_name(f"{target.stem}_{OTHER}{target.suffix}")
        if chosen.exists():
            chosen.rename(target)
        if other.exists():
            other.unlink()
    for leftover in root.rglob("__pycache__"):
        shutil.rmtree(leftover, ignore_errors=True)


if __name__ == "__main__":
    main()
