"""The discrete-event engine (SimPy kernel, callbacks on lightweight events)."""

from .result import Result
from .simulation import Simulation


def simulate(scenario, router: str | None = None, seed: int | None = None, progress: bool = False, **router_params):
    """Run one scenario once: ``router`` (default: the scenario's), ``seed`` (default: the scenario's).

    Extra keyword arguments are router parameters (``simulate(s, "dgdlb", step=0.1)``).
    """
    return Simulation(scenario, router=router, seed=seed, **router_params).run(progress=progress)


__all__ = ["Result", "Simulation", "simulate"]
