"""The fluid model of a scenario (docs/model.md section 2), integrated with delays: ``lbsim fluid``.

State: every backend's load ``x_j(t)``; each router acts through its fluid
twin (:data:`lbsim.routers.FLUID_ROUTERS`, a small class beside the router:
static splits, band-regularised argmin rules, DGD-LB's ticks). This is the
limit of the stochastic system as ``job_scale -> 0``.

* :mod:`lbsim.fluid.model`: the dynamics and the scenario's arrays
  (:class:`~lbsim.fluid.model.FluidModel`, :class:`~lbsim.fluid.model.RateVector`);
* :mod:`lbsim.fluid.integrator`: Heun's method with exact arrival integrals
  and delayed observations, and the default time step;
* :mod:`lbsim.fluid.stiff`: the undelayed loop of an argmin router, a stiff
  ODE integrated by LSODA (chosen automatically);
* :mod:`lbsim.fluid.result`: :class:`FluidResult`, the sampled trajectory;
* :mod:`lbsim.routers.fluid_base`: the fluid twins' base classes and how ties
  are regularised.

DGD-LB's ``step`` maps to the loop gain of the linearised flow as
``K = step * lambda_i * d/dx[1/mu_j'](x*)`` (:func:`~lbsim.routers.dgdlb.dgdlb_critical_step`,
:func:`~lbsim.routers.dgdlb.critical_gain`, :func:`~lbsim.routers.dgdlb.loop_root`, re-exported
here); its ticks add no delay to first
order in ``interval`` (holding an update for an interval lags by half of
it, applying the update at once leads by as much), which the fluid model
confirms: the measured critical step is within 1% of the ``T = 2d``
prediction for ``interval <= d``.

"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..errors import ScenarioError, unknown
from ..routers.base import validate_params
from ..routers.dgdlb import critical_gain, dgdlb_critical_step, loop_root
from ..routers.fluid_base import BAND, FLUID_ROUTERS, FluidRouter, TieRouter, tie_split
from ..simplex import project_rows, support_bound
from ..threads import blas_threads
from .integrator import Integrator, time_step
from .model import FluidModel, RateVector
from .result import FluidResult
from .stiff import StiffIntegrator, loop_delays, short_delays, undelayed

__all__ = [
    "BAND",
    "FLUID_ROUTERS",
    "FluidModel",
    "FluidResult",
    "FluidRouter",
    "RateVector",
    "critical_gain",
    "default_time_step",
    "dgdlb_critical_step",
    "fluid",
    "loop_root",
    "project_rows",
    "support_bound",
    "tie_split",
]


def fluid(
    scenario,
    router: str | None = None,
    dt: float | None = None,
    horizon: float | None = None,
    x0: Any = None,
    *,
    band: float = BAND,
    record_split: bool = True,
    progress: bool = False,
    **router_params,
) -> FluidResult:
    """Integrate the fluid model of ``scenario`` under ``router`` (default: the scenario's).

    ``router_params`` override the scenario's ``[router]`` parameters (when
    the router is the scenario's) and are validated by the discrete router's
    ``Params``. ``dt`` defaults as :func:`lbsim.fluid.integrator.time_step`
    says (shortened, never lengthened, to make a router's ``interval`` a
    whole number of steps);
    ``horizon`` defaults to the scenario's; ``x0`` is ``None`` (empty), loads
    (B,) or ``"optimum"``; ``band`` regularises the argmin routers (relative
    to the typical cost; 0 is the raw argmin, usable only with delays);
    ``record_split=False`` keeps no (T, F, B) split history (large scenarios);
    ``progress`` shows a progress bar over model time on stderr (none when
    stderr is not a terminal).

    The method is chosen from the scenario: an argmin router whose loops
    have no delay is a stiff ODE, integrated by LSODA
    (:mod:`lbsim.fluid.stiff`; ``dt`` is then its mean step), and so is one
    whose loops all herd on delays short against the backends' relaxation
    (:func:`lbsim.fluid.stiff.short_delays`: the delays are left out, which
    moves the loads by at most the work sent in one loop delay,
    ``FluidResult.neglected_delay``); everything
    else, or any given ``dt``, is Heun's method on a fixed grid
    (:mod:`lbsim.fluid.integrator`). BLAS runs on one thread
    (:func:`lbsim.threads.blas_threads`).
    """
    started = time.perf_counter()
    from ..arguments import check_positive

    check_positive(dt, "dt")
    name, validated, horizon = _prepare(scenario, router, horizon, band, router_params)
    # Rate formulas resolve their limits (k/0, 1/inf) with np.where, as in rates.py.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        model = FluidModel(scenario, band, x0)
        fluid_router = FLUID_ROUTERS[name](name, validated, model)
        if fluid_router.observes and model.telemetry == "none":
            raise ScenarioError("network.telemetry", f"router '{name}' needs telemetry; 'none' has no fluid model")
        bar = _progress_bar(horizon) if progress else None
        update = (lambda t: bar.update(t - bar.n)) if bar is not None else None
        try:
            short = dt is None and not undelayed(model, fluid_router) and short_delays(model, fluid_router)
            if dt is None and (short or undelayed(model, fluid_router)):
                integrator: Integrator | StiffIntegrator = StiffIntegrator(
                    model, fluid_router, horizon, record_split, update
                )
                method = "lsoda"
            else:
                dt = time_step(model, fluid_router, horizon, dt)
                integrator = Integrator(model, fluid_router, dt, horizon, record_split, update)
                method = "heun"
            with blas_threads():
                integrator.run()
        finally:
            if bar is not None:
                bar.close()
    steps = integrator.n_steps
    return FluidResult(
        scenario=scenario,
        router=name,
        params=validated.model_dump(),
        t=integrator.sample_t,
        load=integrator.sample_load,
        split=integrator.sample_split,
        final_load=integrator.x,
        final_split=integrator.p,
        dt=dt if dt is not None else horizon / max(steps, 1),
        method=method,
        neglected_delay=float(loop_delays(model).max(initial=0.0)) if short else 0.0,
        band=band if isinstance(fluid_router, TieRouter) else None,
        tie_tolerance=fluid_router.eps if isinstance(fluid_router, TieRouter) else None,
        steps=steps,
        wall_seconds=time.perf_counter() - started,
        x0=model.x0,
        served=integrator.sample_served,
        final_served=integrator.served,
        served_warmup=integrator.served_warmup,
    )


def _progress_bar(horizon: float) -> Any:
    """A bar over model seconds, as ``lbsim run``'s (``disable=None``: silent when stderr is not a terminal)."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=horizon, unit="s", desc="integrating", leave=False, disable=None)


def default_time_step(
    scenario, router: str | None = None, horizon: float | None = None, *, band: float = BAND, **router_params
) -> float:
    """Heun's method's default ``dt`` for these arguments, without integrating.

    See :func:`lbsim.fluid.integrator.time_step`. It is the step :func:`fluid`
    takes unless the loop is undelayed (then LSODA chooses its own steps).
    """
    name, validated, horizon = _prepare(scenario, router, horizon, band, router_params)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        model = FluidModel(scenario, band, None)
        return time_step(model, FLUID_ROUTERS[name](name, validated, model), horizon, None)


def _prepare(scenario, router, horizon, band, router_params):
    """Check the arguments: the router's name and validated parameters, and the horizon."""
    from ..arguments import check_positive, check_scenario

    check_scenario(scenario)
    check_positive(horizon, "horizon")
    name = router or scenario.router.name
    if name not in FLUID_ROUTERS:
        raise ScenarioError("router", unknown("router with a fluid model", name, FLUID_ROUTERS))
    params = dict(scenario.router.params) if name == scenario.router.name else {}
    params.update(router_params)
    validated = validate_params(name, params)
    if not (band >= 0.0 and math.isfinite(band)):
        raise ScenarioError("band", f"must be finite and >= 0, got {band}")
    horizon = float(scenario.simulation.horizon if horizon is None else horizon)
    return name, validated, horizon
