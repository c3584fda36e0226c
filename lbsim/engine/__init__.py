"""The discrete-event engine (SimPy kernel, callbacks on lightweight events)."""

from .result import Result
from .simulation import Simulation


def simulate(scenario, router: str | None = None, seed: int | None = None, progress: bool = False, **router_params):
    """Run one scenario once: ``router`` (default: the scenario's), ``seed`` (default: the scenario's).

    Extra keyword arguments are router parameters (``simulate(s, "dgdlb", step=0.1)``).
    Arguments are checked first: a ScenarioError names the bad one.
    """
    from ..arguments import check_scenario, check_seed
    from ..errors import ScenarioError

    scenario = check_scenario(scenario)
    seed = check_seed(seed)
    if router is not None and not isinstance(router, str):
        raise ScenarioError("router", f"must be a router name, got {router!r}")
    if scenario.simulation.mode == "saturated":
        return run_saturated(scenario, seed)
    return Simulation(scenario, router=router, seed=seed, **router_params).run(progress=progress)


def run_saturated(scenario, seed: int | None = None):
    """``simulation.mode = "saturated"``: every request waits at t = 0 in the one llm backend (docs/llm.md).

    Requests are a pairs file's rows in file order, or ``jobs.count`` draws of
    the token workload from the sizes stream; the admission policy draws from
    the backend's stream, as in open mode.
    """
    import time

    from ..llm.saturated import run_saturated as play
    from ..llm.tokens import Pairs
    from .simulation import spawn_streams

    seed = scenario.simulation.seed if seed is None else int(seed)
    streams = spawn_streams(seed, 1, 1)
    workload = scenario.jobs.token_workload
    if isinstance(workload, Pairs) and scenario.jobs.count is None:
        prompts, outputs = workload.pairs()
    else:
        prompts, outputs = workload.sample(streams["sizes"][0], scenario.jobs.count)
    sim = scenario.simulation
    interval = sim.sample_interval if sim.record_steps == "sampled" else None
    started = time.perf_counter()
    params = scenario.backends[0].params
    run = play(params, prompts, outputs, streams["backends"][0], name="0", sample_interval=interval)
    return Result.from_saturated(scenario, seed, run, time.perf_counter() - started)


__all__ = ["Result", "Simulation", "simulate"]
