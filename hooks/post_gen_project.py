"""Delete the broker adapter (and its tests and tools) that the project does not use, keep
the chosen broker's lock as requirements.lock and its docs as docs/broker.md and
docs/settings.md, and make the project a git repository.

Both brokers' files sit side by side in the template under their own names; nothing else is
renamed, so the template's Python imports and lints where it stands. The locks differ by
broker (faststream's extra, the embedded Kafka broker), so each broker has its own.

The README's first steps (`pre-commit install`, cruft) need a repository; `git init` makes an
empty one and commits nothing, so the first commit stays the user's. A project generated
inside a repository already, or where git is missing, is left as it is.
"""

import shutil
import subprocess
import sys
from pathlib import Path

BROKER = {{cookiecutter.broker | tojson}}
BROKERS = ("kafka", "rabbitmq", "sqs")  # cookiecutter.json's choices (the template's tests check)
OTHERS = [broker for broker in BROKERS if broker != BROKER]

# Each broker-specific file, with `{broker}` where its broker's name stands.
PER_BROKER = [
    "libs/eventkit/src/eventkit/transports/{broker}.py",
    "libs/eventkit/tests/test_transport_{broker}.py",
    "libs/eventkit/tests/fixtures_{broker}.py",
    "tools/src/dev_tools/local_broker_{broker}.py",
    "tools/src/dev_tools/bench/ceiling_{broker}.py",
    "tools/src/dev_tools/deploy_files_{broker}.py",  # SNS + SQS only: its IAM roles on AWS
    "tools/tests/test_deploy_files_{broker}.py",
    "infra/grafana/dashboards/backlog_{broker}.json",
    "tests/faults/test_broker_restart_{broker}.py",  # RabbitMQ only: tansu keeps topics in memory
    "tests/simulation/broker_{broker}.py",  # the simulated broker's model of it
]
LOCK = "requirements-{broker}.lock"  # third-party pins with hashes (make lock writes them)
# Each broker's docs, kept under the name without `-{broker}`: the README links them, so it
# reads the same for every broker. settings.md is written by `make catalog`. Likewise the
# bench's baseline, measured on that broker (make bench-accept rewrites it).
PER_BROKER_DOCS = [
    "docs/broker-{broker}.md",
    "docs/settings-{broker}.md",
    "reports/bench-baseline-{broker}.json",
]
# Folders only one broker's projects have: the IAM policies of the services' roles on AWS
# (written by make deploy-files from the roster).
ONLY_FOR = {"infra/k8s/iam": "sqs"}


def main() -> None:
    root = Path.cwd()
    for other in OTHERS:
        for pattern in PER_BROKER:
            (root / pattern.format(broker=other)).unlink(missing_ok=True)
        for pattern in [LOCK, *PER_BROKER_DOCS]:
            (root / pattern.format(broker=other)).unlink()
    for folder, broker in ONLY_FOR.items():
        if broker != BROKER:
            shutil.rmtree(root / folder)
    (root / LOCK.format(broker=BROKER)).rename(root / "requirements.lock")
    for pattern in PER_BROKER_DOCS:
        (root / pattern.format(broker=BROKER)).rename(root / pattern.replace("-{broker}", ""))
    for leftover in root.rglob("__pycache__"):
        shutil.rmtree(leftover, ignore_errors=True)
    git_init(root)


def git_init(root: Path) -> None:
    git = shutil.which("git")
    if git is None:
        return
    inside = subprocess.run(
        [git, "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True
    )
    if inside.returncode == 0:  # inside a repository already
        return
    init = subprocess.run([git, "init", "--quiet"], cwd=root, capture_output=True, text=True)
    if init.returncode != 0:  # the project is whole without it: say so, do not fail
        print(f"git init failed ({init.stderr.strip()}); run it yourself", file=sys.stderr)


if __name__ == "__main__":
    main()
