"""`python -m dev_tools <command> [arguments]`: one command per module; `--help` on each.

A command's module is imported only when it runs: `lock` and `service` run before
`make install` has put the project's packages in place (the Makefile says how).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "admin": ("admin", "dead letters, replays, poison and rebuilds of a running service"),
    "bench": ("bench.cli", "the fan-out benchmark against the running stack"),
    "catalog": ("catalog", "docs/events.md and the README's diagram, from the roster"),
    "demo": ("demo", "sign up a few users on the running stack and show every read model"),
    "deploy-files": ("deploy_files", "compose, Kubernetes, Prometheus, Postgres init"),
    "local": ("local", "the local stack: up, down, status, dev"),
    "lock": ("lock", "requirements.lock, from every pyproject.toml"),
    "migration": ("migration", "a service's next database migration"),
    "schema-check": ("schema_check", "event schema changes that need a new version"),
    "service": ("new_service", "add a service to the roster, with its folder"),
    "settings-table": ("settings_table", "docs/settings.md, the settings table"),
}


def usage() -> str:
    lines = [f"  {name:<16}{what}" for name, (_, what) in COMMANDS.items()]
    return "usage: python -m dev_tools <command> [arguments]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(f"dev_tools.{COMMANDS[argv[0]][0]}")
    code: int = module.main(argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
