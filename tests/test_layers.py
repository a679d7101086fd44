"""The packages of src/mxflow form layers: every import points down (docs/design.md §6).

Late imports inside functions and `TYPE_CHECKING` imports count too: a cycle hidden in a
function is still a cycle. A new top-level package or module must be given its layer
here (the failure says so), which is where its place in the architecture is decided.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mxflow"

LAYERS: list[set[str]] = [
    {"mail", "errors", "data", "metrics", "logjson", "durable"},
    {"mime"},
    {"dns"},
    {"auth"},
    {"config"},
    {"datadir"},
    {"records"},
    {"store"},
    {"smtp"},
    {"checks"},
    {"delivery"},
    {"queue"},
    {"intake"},
    {"roles"},
    {"lab", "web", "commands", "cli", "__main__"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _package_of(module: str) -> str | None:
    """`mxflow.checks.pipeline` -> `checks`; None for modules outside mxflow."""
    parts = module.split(".")
    if parts[0] != "mxflow" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "mxflow":
                found += [f"mxflow.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def _own_package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def test_every_package_has_a_layer() -> None:
    packages = {
        _own_package(p) for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC
    }
    missing = sorted(packages - set(RANK))
    assert not missing, f"give these a layer in tests/test_layers.py: {missing}"


def test_imports_point_down() -> None:
    upward = []
    for path in SRC.rglob("*.py"):
        if path.parent == SRC and path.name == "__init__.py":
            continue
        own = _own_package(path)
        for module in _imports(path):
            target = _package_of(module)
            if target is None or target == own:
                continue
            if RANK.get(target, -1) > RANK[own]:
                upward.append(f"{path.relative_to(SRC)} imports {module}")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))
