"""The project's developer tools: `python -m dev_tools <command>`, run by the Makefile.

They work on this tree (the roster, the lock, the deployment files, the local stack), so
the package is installed editable from it, like the services, and finds the tree from
here.
"""

from pathlib import Path

# tools/src/dev_tools/__init__.py -> the project's root
ROOT = Path(__file__).resolve().parents[3]
