"""lbsim: distributed load balancing for globally served LLM inference, simulated.

The Python API mirrors the CLI::

    import lbsim
    scenario = lbsim.load_scenario("scenarios/two_regions.toml")
    result = lbsim.simulate(scenario, router="jsq", seed=1)
    result.jobs, result.timeseries, result.routing, result.summary()
    lbsim.optimum(scenario)
"""

from .engine import Result, simulate
from .errors import ScenarioError
from .scenario import Scenario, load_scenario

__version__ = "0.1.0"


def optimum(scenario):
    """The centralized optimal static split (DESIGN.md section 2): ``routing``, ``load``, ``mean_latency``."""
    from .optimum import optimum as _optimum

    return _optimum(scenario)


__all__ = ["Result", "Scenario", "ScenarioError", "load_scenario", "optimum", "simulate"]
