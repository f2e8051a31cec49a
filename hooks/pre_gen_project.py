"""Validate the answers before anything is written; one clear line per problem.

`broker` and `python_version` are choice lists, which cookiecutter checks itself before this
hook runs; their rules here only keep a hand-edited answer file (a replay) honest.
"""

import keyword
import re
import sys

ANSWERS = {
    "project_name": {{cookiecutter.project_name | tojson}},
    "project_slug": {{cookiecutter.project_slug | tojson}},
    "broker": {{cookiecutter.broker | tojson}},
    "python_version": {{cookiecutter.python_version | tojson}},
}

RULES = {
    "project_name": (r"\S.{0,79}", "a non-empty name of at most 80 characters"),
    "project_slug": (
        r"[a-z][a-z0-9_]{0,62}",
        "a Python identifier in lowercase (a letter, then letters, digits or underscores)"
        " that is not a Python keyword",
    ),
    "broker": (r"kafka|rabbitmq|sqs", "one of: kafka, rabbitmq, sqs"),
    "python_version": (r"3\.(1[1-9]|[2-9][0-9])", "a Python version 3.11 or newer, like 3.12"),
}


def main() -> int:
    errors = [
        f"ERROR: invalid {option} {ANSWERS[option]!r}: must be {allowed}."
        for option, (pattern, allowed) in RULES.items()
        if not re.fullmatch(pattern, ANSWERS[option])
        or (option == "project_slug" and keyword.iskeyword(ANSWERS[option]))
    ]
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
