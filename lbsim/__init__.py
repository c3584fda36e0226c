"""lbsim: distributed load balancing for globally served LLM inference, simulated.

The Python API mirrors the CLI::

    import lbsim
    scenario = lbsim.load_scenario("scenarios/two_regions.toml")
    result = lbsim.simulate(scenario, router="jsq", seed=1)
    result.jobs, result.timeseries, result.routing, result.summary()
    lbsim.optimum(scenario)
"""

from typing import TYPE_CHECKING

from .errors import ScenarioError
from .scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from .engine import Result

__version__ = "0.1.0"


def simulate(scenario, router=None, seed=None, progress=False, **router_params) -> "Result":
    """Run one scenario once; see :func:`lbsim.engine.simulate`."""
    from .engine import simulate as _simulate

    return _simulate(scenario, router=router, seed=seed, progress=progress, **router_params)


def __getattr__(name):
    # The engine (SimPy, pandas, pyarrow) loads on first use: `lbsim validate` stays quick.
    if name == "Result":
        from .engine import Result

        return Result
    raise AttributeError(f"module 'lbsim' has no attribute {name!r}")


# Imported eagerly: a submodule import would otherwise rebind ``lbsim.optimum``
# (``lbsim.fluid``, ``lbsim.scaling``) from the function to the module of the same name.
from .fluid import fluid  # noqa: E402
from .optimum import optimum  # noqa: E402
from .scaling import scaling  # noqa: E402

__all__ = ["Result", "Scenario", "ScenarioError", "fluid", "load_scenario", "optimum", "scaling", "simulate"]
