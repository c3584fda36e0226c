"""No module imports upward: the package is layered, and each layer imports only the ones below it.

The layers, lowest first (docs/model.md section 5). Components within one
layer do not import each other; a module may import anything from its own
component. Imports inside functions count too (a lazy import is still a
dependency), except under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lbsim

LAYERS: list[set[str]] = [
    {"errors", "files", "events", "jobs", "simplex", "stats", "threads"},
    {"registry", "examples"},
    {"rates", "view", "overload"},
    {"distributions", "optimum"},
    {"llm"},
    {"backends", "routers"},
    {"scenario"},
    {"engine"},
    {"fluid", "plots"},
    {"experiments"},
    {"scaling"},
    {"cli"},
    {"__main__"},
]
PACKAGE = Path(lbsim.__file__).parent


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "lbsim":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, outside TYPE_CHECKING blocks."""
    module = "lbsim." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")] + ".__init__"
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if not node.module:  # from . import x: x is a submodule
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def _layer(component: str) -> int | None:
    return next((k for k, layer in enumerate(LAYERS) if component in layer), None)


def test_every_component_has_a_layer():
    components = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    components -= {"__init__"}
    missing = sorted(c for c in components if _layer(c) is None)
    assert not missing, f"components without a layer in LAYERS: {missing}"


def test_no_module_imports_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _component("lbsim." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if own == "__init__":
            continue  # the package's front door re-exports the API
        mine = _layer(own)
        for line, target in _imports(path):
            other = _component(target)
            if other is None or other == own or other == "__init__" and target == "lbsim":
                continue
            theirs = _layer(other)
            if theirs is None or mine is None or theirs >= mine:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)
