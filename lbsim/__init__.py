"""lbsim: distributed load balancing for globally served LLM inference, simulated.

The Python API mirrors the CLI::

    import lbsim
    scenario = lbsim.load_scenario("scenarios/two_regions.toml")
    result = lbsim.simulate(scenario, router="jsq", seed=1)
    result.jobs, result.timeseries, result.routing, result.summary()
    lbsim.optimum(scenario)

Every public name loads on first use (PEP 562, a module ``__getattr__``):
``import lbsim`` costs only this file, so ``lbsim --help`` and ``lbsim
validate`` start without pandas, scipy or SimPy.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import ScenarioError

if TYPE_CHECKING:
    from .engine import Result
    from .fluid import fluid
    from .optimum import optimum
    from .scaling import scaling
    from .scenario import Scenario, load_scenario

__version__ = "0.2.0"

#: public name -> the submodule that defines it
_LAZY: dict[str, str] = {
    "Result": "engine",
    "Scenario": "scenario",
    "load_scenario": "scenario",
    "fluid": "fluid",
    "optimum": "optimum",
    "scaling": "scaling",
}


def simulate(scenario: Scenario, router: str | None = None, seed: int | None = None, progress: bool = False,
             **router_params: Any) -> Result:  # fmt: skip
    """Run one scenario once; see :func:`lbsim.engine.simulate`."""
    from .engine import simulate as _simulate

    return _simulate(scenario, router=router, seed=seed, progress=progress, **router_params)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        setattr(sys.modules[__name__], name, value)
        return value
    try:  # a submodule not imported yet (``lbsim.stats``), as an eager package would have it
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """The ``lbsim`` module, keeping ``lbsim.optimum`` (``fluid``, ``scaling``) the function.

    Importing a submodule binds it on its package (``import lbsim.optimum``
    sets ``lbsim.optimum`` to the module); three submodules share their name
    with the function they define, and the function is the public API, so
    their binding is replaced by the function. The module stays reachable as
    ``sys.modules["lbsim.optimum"]`` and by ``from lbsim.optimum import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["Result", "Scenario", "ScenarioError", "fluid", "load_scenario", "optimum", "scaling", "simulate"]
