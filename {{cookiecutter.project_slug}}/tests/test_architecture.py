"""The rooms of ARCHITECTURE.md import only what it allows: eventkit knows no other room,
contracts knows eventkit, a service knows eventkit and contracts and never another
service, and the tools know eventkit and contracts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("eventkit", "contracts", "dev_tools")


def own_imports(folder: Path, root: Path = ROOT) -> dict[str, set[str]]:
    """The project's own top-level packages each file under `folder` imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        ours = {name for name in names if name in OURS or name.endswith("_service")}
        found[path.relative_to(root).as_posix()] = ours
    return found


def rooms() -> list[tuple[Path, set[str]]]:
    """Each room's source folder and the packages it may import (besides its own)."""
    allowed = [
        (ROOT / "libs/eventkit/src", {"eventkit"}),
        (ROOT / "libs/contracts/src", {"contracts", "eventkit"}),
        (ROOT / "tools/src", {"dev_tools", "eventkit", "contracts"}),
    ]
    for service in sorted((ROOT / "services").iterdir()):
        if (service / "src").is_dir():
            allowed.append((service / "src", {f"{service.name}_service", "eventkit", "contracts"}))
    return allowed


@pytest.mark.parametrize(("folder", "allowed"), rooms(), ids=lambda v: getattr(v, "name", ""))
def test_a_room_imports_only_what_architecture_md_allows(folder: Path, allowed: set[str]) -> None:
    assert folder.is_dir(), f"{folder} is gone: ARCHITECTURE.md and this test name it"
    crossing = {
        path: sorted(names - allowed)
        for path, names in own_imports(folder).items()
        if names - allowed
    }
    assert crossing == {}, f"imports ARCHITECTURE.md does not allow: {crossing}"


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    """Its own teeth: a service file importing another service is reported."""
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing/handlers.py").write_text("from user_service.domain import User\n")
    assert own_imports(tmp_path / "billing", tmp_path) == {"billing/handlers.py": {"user_service"}}
