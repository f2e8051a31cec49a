"""Pin every third-party package of the project, with hashes: `make lock`, `make lock-check`.

    python -m dev_tools lock            write requirements.lock, keeping each pin that still fits
    python -m dev_tools lock --upgrade  write it with the newest versions that fit
    python -m dev_tools lock --check    fail, naming what would change, when it is stale

requirements.lock is what `make install`, CI and the Dockerfile install from. uv writes it
from every pyproject.toml of the workspace (the root's dev extra, libs/*, services/*), for
every platform and every Python from the project's oldest on, so one file serves a laptop,
CI and the images. It holds names, versions, environment markers and hashes only: no index
and no download address. The project's own packages are left out: they install from this
tree.

Stale means that the pyproject.toml files ask for something the pins do not give: a package
added or dropped, or a version range a pin no longer fits. New releases alone do not make it
stale (the pins are kept until `--upgrade`), nor do wheels added to a pinned release.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from dev_tools import ROOT

LOCK = ROOT / "requirements.lock"


def pyprojects() -> list[Path]:
    """The root pyproject.toml and those of every workspace member."""
    root = ROOT / "pyproject.toml"
    members = tomllib.loads(root.read_text())["tool"]["uv"]["workspace"]["members"]
    return [root, *sorted(p for pattern in members for p in ROOT.glob(f"{pattern}/pyproject.toml"))]


def compile_lock(output: Path, upgrade: bool = False) -> None:
    """uv writes the lock to `output`, preferring the pins already there."""
    if importlib.util.find_spec("uv") is None:
        sys.exit(f"lock: uv is not installed in {sys.prefix}: run `make install` first")
    projects = [tomllib.loads(p.read_text())["project"] for p in pyprojects()]
    oldest = re.fullmatch(r">=\s*(\d+\.\d+)", projects[0]["requires-python"])
    if oldest is None:
        sys.exit(f"lock: requires-python {projects[0]['requires-python']!r}: expected >=X.Y")
    command = [
        *[sys.executable, "-m", "uv", "pip", "compile", "--quiet"],
        *["--universal", "--python-version", oldest[1]],
        *["--generate-hashes", "--no-header", "--no-annotate", "--extra", "dev"],
        *[arg for project in projects for arg in ("--no-emit-package", project["name"])],
        *(["--upgrade"] if upgrade else []),
        *[p.relative_to(ROOT).as_posix() for p in pyprojects()],
        *["--output-file", str(output)],
    ]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        sys.exit("lock: uv could not pin the packages (it said why above)")


def pins(lock: Path) -> set[str]:
    """`name==version ; marker` of every package in `lock`, without the hashes."""
    lines = lock.read_text().splitlines() if lock.exists() else []
    return {line.rstrip(" \\") for line in lines if line and not line.startswith((" ", "#"))}


def check() -> int:
    with tempfile.TemporaryDirectory() as folder:
        fresh = Path(folder) / LOCK.name
        if LOCK.exists():
            shutil.copy(LOCK, fresh)
        compile_lock(fresh)
        have, want = pins(LOCK), pins(fresh)
    if have == want:
        print(f"lock: {LOCK.name} pins what every pyproject.toml asks for ({len(have)} packages)")
        return 0
    changes = [f"-{pin}" for pin in sorted(have - want)]
    changes += [f"+{pin}" for pin in sorted(want - have)]
    print(
        f"lock: {LOCK.name} is stale against the pyproject.toml files ({', '.join(changes)}): "
        "run `make lock` and commit it",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the lock is stale")
    parser.add_argument("--upgrade", action="store_true", help="the newest versions that fit")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    compile_lock(LOCK, upgrade=args.upgrade)
    print(f"lock: wrote {LOCK.name} ({len(pins(LOCK))} packages)")
    return 0
