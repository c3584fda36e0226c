"""The router registry: discovery by module, duplicate names, fluid twins, layering, one DGD-LB step.

A router in a new module of ``lbsim/routers`` must appear without editing a
list; a name (and a router's fluid twin) belongs to one class; routers may
not depend on the engine, the fluid model, the optimum or the experiments at
import time; and DGD-LB's discrete tick and its fluid twin's tick are the
same computation.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import backend, scenario

import lbsim.routers
from lbsim.engine import Simulation
from lbsim.fluid.model import FluidModel
from lbsim.routers import (
    FLUID_ROUTERS,
    ROUTERS,
    FluidRouter,
    Router,
    fluid_twin,
    register,
)
from lbsim.routers.dgdlb import DGDLB, gradient_step
from lbsim.simplex import project_simplex
from lbsim.view import View

PACKAGE = Path(lbsim.routers.__file__).parent


def _module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules([str(PACKAGE)]) if not info.name.startswith("_"))


def test_every_module_is_imported_and_every_router_is_defined_in_one():
    modules = _module_names()
    assert lbsim.routers.discover() == modules
    for name in modules:
        assert f"lbsim.routers.{name}" in sys.modules
    for name, cls in ROUTERS.items():
        if name.startswith("_test"):  # test_invariants' spy
            continue
        assert cls.name == name
        assert cls.__module__.removeprefix("lbsim.routers.") in modules, (name, cls.__module__)
    for name, twin in FLUID_ROUTERS.items():
        assert issubclass(twin, FluidRouter) and ROUTERS[name].fluid is twin
        assert twin.__module__.removeprefix("lbsim.routers.") in modules, (name, twin.__module__)


def test_a_router_in_a_new_module_is_discovered(tmp_path, monkeypatch):
    """Drop a module into the package's search path: ``discover`` registers its router and its fluid twin."""
    (tmp_path / "zz_half_split.py").write_text(
        textwrap.dedent(
            '''
            from lbsim.routers.base import Router, register
            from lbsim.routers.fluid_base import FluidRouter, fluid_twin


            @register
            class FirstNeighbour(Router):
                """Every job to the frontend's first usable backend."""

                name = "_discovered_first"

                def route(self, frontend, job, view):
                    return self.neighbours[frontend][0]


            @fluid_twin(FirstNeighbour)
            class FluidFirstNeighbour(FluidRouter):
                """Everything to the first usable backend."""
            '''
        )
    )
    monkeypatch.setattr(lbsim.routers, "__path__", [*lbsim.routers.__path__, str(tmp_path)])
    try:
        assert "zz_half_split" in lbsim.routers.discover()
        assert ROUTERS["_discovered_first"].__module__ == "lbsim.routers.zz_half_split"
        assert FLUID_ROUTERS["_discovered_first"].__name__ == "FluidFirstNeighbour"
        assert "_discovered_first" in {row["router"] for row in lbsim.routers.parameter_table()}
    finally:
        ROUTERS.pop("_discovered_first", None)
        sys.modules.pop("lbsim.routers.zz_half_split", None)
    assert "_discovered_first" not in FLUID_ROUTERS


def test_a_taken_router_name_is_an_error():
    class Impostor(Router):
        name = "jsq"

    with pytest.raises(ValueError, match="router 'jsq' is already registered by lbsim.routers.jsq.JSQ"):
        register(Impostor)
    assert ROUTERS["jsq"].__module__ == "lbsim.routers.jsq"
    register(ROUTERS["jsq"])  # the same class again is fine (idempotent)


def test_a_second_fluid_twin_is_an_error_and_twins_are_not_inherited():
    class SecondTwin(FluidRouter):
        pass

    with pytest.raises(ValueError, match="router 'dgdlb' already has a fluid twin, lbsim.routers.dgdlb.FluidDGDLB"):
        fluid_twin(DGDLB)(SecondTwin)
    assert FLUID_ROUTERS["dgdlb"].__name__ == "FluidDGDLB"

    class Variant(DGDLB):
        name = "_test_variant"

    register(Variant)
    try:
        assert "_test_variant" not in FLUID_ROUTERS  # it routes differently: no twin until it declares one
    finally:
        ROUTERS.pop("_test_variant", None)


FORBIDDEN = ("lbsim.engine", "lbsim.fluid", "lbsim.optimum", "lbsim.experiments")


def _runtime_imports(tree: ast.Module, module: str) -> list[str]:
    """Absolute names of the modules imported at import time (not in functions, not under TYPE_CHECKING)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), module) if node.level else node.module
            found.append(base or "")
            found.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_routers_do_not_import_the_layers_above_them(path):
    imports = _runtime_imports(ast.parse(path.read_text()), "lbsim.routers")  # relative imports resolve in the package
    bad = [name for name in imports if name.startswith(FORBIDDEN)]
    assert not bad, f"lbsim/routers/{path.name} imports {bad} at import time"


class Counts(View):
    """Every frontend observes the job counts ``counts``."""

    def __init__(self, counts, num_frontends: int, mean_size: float):
        super().__init__([None] * len(counts), np.zeros((num_frontends, len(counts))), mean_size, env=None)
        self.counts = list(counts)

    def jobs(self, frontend, backend):
        return self.counts[backend]


@pytest.mark.parametrize("connect", [None, [[True, True, False], [True, True, True]]])
def test_dgdlb_discrete_and_fluid_ticks_are_one_update(connect):
    """From the same split and the same observed loads, the router and its fluid twin take the same step."""
    network = {"delay": [[0.01, 0.05, 0.3], [0.2, 0.02, 0.04]]}
    if connect is not None:
        network["connect"] = connect
    scn = scenario(
        [backend("saturating", c=4.0, k=2.0), backend("batch", a=0.2, b=0.15), backend("exponential", c=3.0, k=1.5)],
        [3.0, 2.5],
        network=network,
        router={"name": "dgdlb", "step": 0.5, "interval": 0.2},
    )
    router = Simulation(scn).router
    counts = [3, 0, 7]
    view = Counts(counts, 2, scn.mean_size)
    model = FluidModel(scn, band=1e-3, x0=None)
    twin = FLUID_ROUTERS["dgdlb"]("dgdlb", router.params, model)
    p = twin.initial_split()
    np.testing.assert_array_equal(p, router.split())
    observed = np.broadcast_to(twin.signal(np.array(counts) * scn.mean_size), p.shape)
    for _ in range(3):
        router.tick(0.0, view)
        p = twin.tick(0.0, observed, p)
        # The router renormalises the rows it installs (SplitRouter.set_split): equal to rounding.
        np.testing.assert_allclose(router.split(), p, rtol=0, atol=4 * np.finfo(float).eps)
    assert (p[~scn.connect] == 0).all()


@pytest.mark.parametrize("width", [3, 40])
def test_gradient_step_is_the_projection(width):
    """``gradient_step`` is ``Proj(p - eta g)`` over the mask, warm start or not (sort or Newton by width)."""
    rng = np.random.default_rng(width)
    p = project_simplex(rng.random((4, width)))
    g = rng.random((4, width)) * 5.0
    mask = rng.random((4, width)) < 0.7
    mask[:, 0] = True
    got = gradient_step(p, g, 0.1, mask)
    np.testing.assert_allclose(got, project_simplex(p - 0.1 * g, mask), rtol=0, atol=1e-15)
    assert (got[~mask] == 0).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0, atol=1e-14)
