"""DGD-LB: distributed gradient descent on each frontend's routing split.

Balseiro, Mirrokni, Wydrowski, "Load Balancing with Network Latencies via
Distributed Gradient Descent", arXiv:2504.10693 (2025). Frontend i routes by
sampling its split p_i and, every ``interval`` seconds, takes a projected
gradient step on the approximate gradient

    g_ij = 2 d_ij + 1 / mu_j'(xhat_ij)

(the network round trip plus the marginal serving cost of one more unit of
flow, evaluated at the delayed state the frontend observes):

    p_i <- Proj_{simplex over N(i)}(p_i - step * interval * g_i).

Rest points are exactly the KKT points of the centralized optimum (every used
edge has the same g_ij, no unused one is cheaper), so with a small enough step
it settles at the optimal split; too large a step for the loop delay 2 d_ij
makes it oscillate (docs/routers.md). :func:`dgdlb_critical_step` is that
limit for one frontend and two identical backends.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ScenarioError
from ..simplex import EXCLUDED, SORT_BELOW, project_rows, support_bound
from .base import SplitRouter, register
from .fluid_base import FluidContext, FluidRouter, fluid_twin
from .tables import COST_CAP, marginal_cost, marginal_cost_table

if TYPE_CHECKING:
    from ..rates import RateFamily
    from ..view import View


def gradient_step(split: np.ndarray, gradient: np.ndarray, eta: float, allowed: np.ndarray | None) -> np.ndarray:
    """One DGD-LB update of every frontend: ``p_i <- Proj_{simplex over N(i)}(p_i - eta * g_i)``.

    Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693; ``eta = step *
    interval``. ``allowed`` is the connect mask (None: every edge usable);
    entries off it are 0 in the result whatever ``split`` and ``gradient``
    hold there. The discrete router and its fluid twin both call this, so
    the two updates are the same computation. The projection
    (:func:`lbsim.simplex.project_rows`) is warm-started from the support of
    ``split``, which changes little from one tick to the next.
    """
    v = split - eta * gradient
    if allowed is not None:
        v[~allowed] = EXCLUDED
    lower = support_bound(v, split > 0.0, finite=True) if v.shape[1] > SORT_BELOW else None
    return project_rows(v, lower, finite=True)[0]


#: the largest ``step * interval * cost_cap``: three orders of magnitude inside double precision (1/eps ~ 4.5e15)
MAX_STEP_SIZE = 1e12
def given_split(weights: list[float] | list[list[float]], connect: np.ndarray) -> np.ndarray:
    """``init`` given as weights: B for every frontend or an (F, B) matrix, >= 0, positive somewhere on N(i).

    Returned as (F, B) weights; :meth:`SplitRouter.set_split` renormalises them over N(i).
    """
    F, B = connect.shape
    w = np.array(weights, dtype=float)
    w = np.broadcast_to(w, (F, B)).copy() if w.shape == (B,) else w
    if w.shape != (F, B):
        raise ScenarioError("router.init", f"weights must have {B} entries or be {F} x {B}, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or not ((w * connect).sum(axis=1) > 0).all():
        raise ScenarioError("router.init", "weights must be finite, >= 0 and positive on a usable backend")
    return w


class DGDLBParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: float = Field(
        0.05,
        gt=0,
        description=(
            "gradient step (1/s^2): each tick moves p_i by step*interval*g_i (g in seconds). "
            "Ours; stable on the bundled scenarios, see docs/routers.md for the delay limit"
        ),
    )
    interval: float = Field(0.1, gt=0, description="seconds between gradient steps")
    init: Literal["uniform", "nearest", "optimal"] | list[float] | list[list[float]] = Field(
        "uniform",
        description=(
            "initial split: 'uniform' over N(i), 'nearest' (all on the closest backends), 'optimal', "
            "or weights (B for every frontend, or an F x B matrix) renormalised over N(i)"
        ),
    )
    cost_cap: float = Field(
        COST_CAP,
        gt=0,
        description="cap (s) on the marginal cost 1/mu_j' where the marginal rate vanishes (saturation)",
    )

    @model_validator(mode="after")
    def _step_within_precision(self) -> DGDLBParams:
        # The projection compares p_i (in [0, 1]) with step * interval * g_i, g_i up to about
        # cost_cap: past ~1e15 a double no longer holds p_i beside it and the split becomes NaN.
        # Far below that every tick already jumps to a vertex, so nothing is lost by refusing it.
        if self.step * self.interval * self.cost_cap > MAX_STEP_SIZE:
            raise ScenarioError(
                "step",
                f"step * interval * cost_cap must be <= {MAX_STEP_SIZE:.0e} (beyond, the projected split "
                f"loses all precision), got {self.step:g} * {self.interval:g} * {self.cost_cap:g}",
            )
        return self


@register
class DGDLB(SplitRouter):
    """Distributed gradient descent on routing splits (DGD-LB): a projected gradient step every interval.

    Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693. Every ``interval`` s each
    frontend computes ``g_ij = 2 d_ij + 1/mu_j'(xhat_ij)`` on its delayed view
    and sets ``p_i <- Proj_simplex(p_i - step * interval * g_i)`` over N(i)
    (Duchi et al. 2008 projection, :func:`gradient_step`). Between ticks
    each job samples its backend from p_i.

    ``step * interval`` is the discrete step, so ``step`` is the rate of the
    continuous-time dynamics ``dp_i/dt = -step * Proj_T(g_i)`` that the
    ticks integrate (forward Euler), whatever the interval. With one
    frontend and two identical backends the linearised loop is
    ``D'' + a D' + K D(t - T) = 0`` (docs/routers.md) with ``a = mu'(x*)``,
    ``K = step * lambda_i * d/dx[1/mu'](x*)`` and ``T = 2 d``: the projection
    subtracts the mean of g, so ``p_1`` moves by ``-step * interval *
    (g_1 - g_2) / 2`` per tick, and the load difference D responds to
    ``2 lambda_i p_1``. Ticking does not lengthen the loop delay to first
    order: the split is held for an interval (lagging the continuous
    dynamics by interval/2) but is the Euler step's end value, computed
    from the gradient at the tick's start (leading by interval/2). A
    simulation of the sampled loop confirms the limit moves by under 3%
    for intervals up to T/4 (``tests/test_routers.py``), where ``T = 2 d +
    interval`` would predict 8-19% lower. (When the interval is long next
    to 2 d the tick itself becomes the limit.) The default ``step = 0.05``
    is ours, not the paper's: about an eighth of the limit of the slowest
    loop (the cross-region edges) on the bundled ``two_regions`` and
    ``dgdlb_delays``.

    Where ``mu_j' -> 0`` (a saturated backend) ``1/mu_j'`` is clipped to
    ``cost_cap`` (default 1e4 s), so gradients stay finite (no NaN or inf),
    and a saturated backend is pushed out of the split within a tick or two.
    """

    name = "dgdlb"
    uses_rates = True
    Params = DGDLBParams
    params: DGDLBParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.tick_interval = params.interval
        self._costs = [marginal_cost_table(r, ctx.mean_size, params.cost_cap) for r in ctx.rates]
        self._round_trip = 2.0 * np.where(ctx.connect, ctx.delay, 0.0)
        self._allowed = None if ctx.connect.all() else ctx.connect
        self.set_split(self.initial_split(params.init))

    @classmethod
    def check_scenario(cls, params: BaseModel, scenario: Any) -> None:
        init = params.init  # type: ignore[attr-defined]  # a DGDLBParams
        if not isinstance(init, str):
            given_split(init, scenario.connect)

    def initial_split(self, init: str | list[float] | list[list[float]]) -> np.ndarray:
        ctx = self.ctx
        connect = ctx.connect
        if not isinstance(init, str):
            return given_split(init, connect)
        if init == "uniform":
            return connect.astype(float)
        if init == "nearest":
            d = np.where(connect, ctx.delay, np.inf)
            return (d == d.min(axis=1, keepdims=True)).astype(float)
        from ..optimum import optimum

        return np.array(optimum(ctx.scenario).routing, dtype=float)

    def gradient(self, view: View) -> np.ndarray:
        """``g_ij = 2 d_ij + min(1/mu_j'(xhat_ij), cost_cap)`` (seconds), shape (F, B); 0 off N(i)."""
        costs = self._costs
        marginal = np.zeros(self._round_trip.shape)
        for i, nb in enumerate(self.neighbours):
            marginal[i, nb] = [costs[j][n] for j, n in zip(nb, view.jobs_of(i, nb))]
        return self._round_trip + marginal

    def tick(self, now: float, view: View) -> None:
        eta = self.params.step * self.params.interval
        self.set_split(gradient_step(self._split, self.gradient(view), eta, self._allowed))


@fluid_twin(DGDLB)
class FluidDGDLB(FluidRouter):
    """``dgdlb``: every ``interval``, ``p_i <- Proj_simplex(p_i - step * interval * g_i)`` on the delayed state.

    Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693; ``g_ij = 2 d_ij +
    min(1/mu_j'(xhat_ij), cost_cap)``: the discrete router's update
    (:func:`gradient_step`), with the fluid model's delayed marginal costs as
    the observed signal. As ``interval -> 0`` it is the projected gradient
    flow ``dp_i/dt = -step * Proj_T(g_i)``; for one frontend and two identical
    backends its linearisation is ``D'' + a D' + K D(t - 2d) = 0`` with
    ``K = step * lambda * d/dx[1/mu'](x*)`` (:func:`dgdlb_critical_step`).
    """

    def __init__(self, name: str, params: Any, model: FluidContext):
        super().__init__(name, params, model)
        self.tick_interval = params.interval
        self._eta = params.step * params.interval

    def signal(self, x: np.ndarray) -> np.ndarray:
        return marginal_cost(self.model.rates.derivative(x), self.params.cost_cap)

    def initial_split(self) -> np.ndarray:
        return np.array(self.discrete_router().split(), dtype=float)

    def tick(self, t: float, observed: np.ndarray, p: np.ndarray) -> np.ndarray:
        return gradient_step(p, self.model.round_trip + observed, self._eta, self.model.allowed)


# -- the linearised stability limit (docs/routers.md) ----------------------------------------
def critical_gain(a: float, loop_delay: float) -> tuple[float, float]:
    """``(K_crit, w)`` of ``D'' + a D' + K D(t - T) = 0``: stable iff ``K < K_crit``.

    On the stability boundary ``s = i w`` solves ``-w^2 + i a w + K e^{-i w T} = 0``:
    ``K cos(wT) = w^2`` and ``K sin(wT) = a w``, so ``w T = arctan(a / w)`` (a
    root in ``(0, pi / (2T))``) and ``K_crit = w sqrt(w^2 + a^2)``.
    """
    import scipy.optimize  # loads on first use: importing the routers stays quick

    if loop_delay <= 0:
        return math.inf, math.inf
    w = scipy.optimize.brentq(
        lambda w: w * loop_delay - math.atan(a / w), 1e-12 / loop_delay, math.pi / (2 * loop_delay), xtol=1e-15
    )
    return w * math.sqrt(w * w + a * a), w


def loop_root(a: float, gain: float, loop_delay: float) -> complex:
    """The rightmost root ``s`` of ``s^2 + a s + K e^{-s T} = 0`` (the oscillating one near the boundary).

    ``Re s < 0``: perturbations decay like ``e^{Re(s) t}``; ``Re s > 0``: they
    grow. Found by Newton's method from the boundary root ``i w`` of
    :func:`critical_gain`, following ``K`` from ``K_crit`` in small steps.
    """
    k_crit, w = critical_gain(a, loop_delay)
    s = complex(0.0, w)
    for k in np.linspace(k_crit, gain, 41)[1:]:
        for _ in range(50):
            e = k * np.exp(-s * loop_delay)
            f = s * s + a * s + e
            step = f / (2 * s + a - loop_delay * e)
            s -= step
            if abs(step) < 1e-14 * max(1.0, abs(s)):
                break
    return complex(s)


def dgdlb_critical_step(rate: RateFamily, load: float, demand: float, delay: float) -> float:
    """DGD-LB's largest stable ``step`` for one frontend of rate ``demand`` and two identical backends ``rate``.

    With ``D = x_1 - x_2`` and ``q = p_1 - p_2`` near the rest point ``x* =
    load``: ``D' = lambda q(t - d) - a D`` with ``a = mu'(x*)``, and the flow
    ``dp_i/dt = -step * Proj_T(g_i)`` gives ``q' = -step * c'(x*) D(t - d)``
    with ``c = 1/mu'`` (the projection onto the tangent space subtracts the
    mean gradient: ``p_1' - p_2' = -step (g_1 - g_2)``). Hence ``D'' + a D' +
    K D(t - 2d) = 0`` with ``K = step * lambda * c'(x*)`` and the limit is
    ``K_crit / (lambda * c'(x*))`` (:func:`critical_gain`). The discrete
    router's ticks apply each update at once: holding it for an interval
    lags by half an interval and the sum that includes the current tick
    leads by as much, so to first order in ``interval`` the loop delay stays
    ``2d``; the fluid model confirms it (the measured critical step is within
    1% of this prediction for ``interval <= d``).
    """
    a = float(rate.derivative(load))
    h = 1e-6 * max(load, 1e-6)
    slope = (1.0 / float(rate.derivative(load + h)) - 1.0 / float(rate.derivative(load - h))) / (2 * h)
    k_crit, _ = critical_gain(a, 2.0 * delay)
    return k_crit / (demand * slope)
