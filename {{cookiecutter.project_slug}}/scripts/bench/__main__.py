"""`python -m scripts.bench` or `python scripts/bench`: the fan-out benchmark (see __init__.py)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/bench`: import the package from the root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from scripts.bench.cli import main

sys.exit(main())
