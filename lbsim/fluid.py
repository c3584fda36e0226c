"""The fluid model of a scenario (DESIGN.md section 2), integrated with delays.

State: every backend's load ``x_j(t)`` (work units). Dynamics::

    dx_j/dt = sum_i lambda_i(t - d_ij) p_ij(t - d_ij) - m_j(t) mu_j(min(x_j, L_j)),   x_j >= 0

with ``lambda_i(t)`` the frontend's volume rate (times the rate schedule),
``p_ij(t)`` its routing split, ``d_ij`` the one-way delay (plus the mean of
any jitter: requests are in transit), ``m_j(t)`` an antagonist's capacity
multiplier and ``L_j`` the ``max_load`` of a ``ps`` backend (``+inf``
otherwise). The split is what the router makes of the *observed* loads
``xhat_ij(t) = x_j(t - d_ij)`` (``delayed`` telemetry; ``instant``:
``x_j(t)``; ``periodic``: the last report ``x_j(k P)`` with ``k P <= t -
d_ij``). This is the limit of the stochastic system as ``job_scale -> 0``
(the fluid limits of GMSR in Zhang, Balseiro, Kleinberg, Mirrokni, Sivan,
Wydrowski, arXiv:2411.17103, and the delay-differential model of DGD-LB in
Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693).

Routers with a fluid analogue are one small class each in :data:`FLUID_ROUTERS`:

* static splits: ``weighted`` (given / capacity / optimal, exactly as the
  discrete router computes it), ``random`` and ``round_robin`` (uniform over
  ``N(i)``), ``nearest``;
* argmin rules with ties, regularised by a tolerance band (below):
  ``gmsr`` (``argmax mu_j'(xhat_ij)``; variant ``latency``: ``argmin 2 d_ij +
  1/mu_j'(xhat_ij)``), ``least_latency`` (``argmin 2 d_ij + xhat/mu(xhat)``),
  ``least_load`` and ``jsq`` (``argmin xhat_ij``: ``nhat = xhat/sbar`` has the
  same order);
* ``dgdlb``: the discrete router's update, vectorised: at ``t = k * interval``
  (k >= 1) every frontend sets ``p_i <- Proj_simplex(p_i - step * interval *
  g_i)`` with ``g_ij = 2 d_ij + min(1/mu_j'(xhat_ij), cost_cap)``.

**Ties (differential inclusions).** An argmin router's fluid limit is a
differential inclusion: flow goes to the cheapest backends, and among tied
ones it is split so that they stay tied (a sliding mode, Filippov). We
regularise the argmin by water-filling within a band: with costs ``c_ij``,

    p_i = Proj_simplex(-(c_i - min_j c_ij) / eps),   eps = band * c_ref,

i.e. ``p_ij = max(0, (nu_i - c_ij) / eps)`` with ``nu_i`` set so the row sums
to 1 ("sparsemax", Martins and Astudillo, ICML 2016, the same Euclidean
projection as DGD-LB's). Backends more than ``eps`` above the cheapest get
nothing; exact ties get equal shares; near-ties share by how close they are,
which is what holds them together. ``c_ref`` is the median cost over the
usable edges at a reference state (every backend at the load its
capacity-proportional share of the demand gives it), so ``band`` is
dimensionless: "within a relative band of the best marginal rate" for GMSR.
A rest point satisfies ``|c_ij - c_ij'| <= eps`` on the used edges instead of
equality, so it is ``O(band)`` away from the inclusion's; ``band -> 0``
recovers the inclusion (``tests/test_fluid.py`` measures the linear
convergence). The price is stiffness: with an undelayed loop the split reacts
to its own effect at rate ``R ~ Lambda * |dc/dx| / eps``, so the default time
step keeps ``R dt <= 1``.

**Integration.** A fixed step ``dt`` on a grid ``t_n = n dt``, method of
steps with the delayed terms read from history ring buffers:

* arrivals are integrated *exactly* for splits that are constant on each
  step (static, ``dgdlb``, which updates on the grid): the flow history is
  kept as step averages ``F_n`` and the work arriving at ``j`` during step
  ``n`` is ``dt * sum_i [phi F_{n-m-1} + (1-phi) F_{n-m}]_ij`` for
  ``d_ij = (m + phi) dt``. It is kept as a running rate updated by pushing
  each change of ``F`` into a ring of future increments (one ``bincount`` per
  change, nothing per step). For continuous splits (argmin routers) ``F_n``
  is the trapezoid average of the split at ``t_n`` and ``t_{n+1}``;
* service is Heun's method (explicit trapezoid, RK2): predictor
  ``x~ = x_n + A_n - dt mu(x_n)``, corrector with ``(mu(x_n) + mu(x~))/2``;
  each clamped at 0 (a backend that empties within a step serves only the
  work it had: served work is ``min(dt * rate, x_n + arrivals)``);
* observations ``x_j(t - d_ij)`` interpolate the stored states linearly (when
  ``d_ij < dt`` the predicted state at ``t_{n+1}`` is used, as in
  continuous Runge-Kutta methods for delay equations; Bellen and Zennaro,
  *Numerical Methods for Delay Differential Equations*, 2003, ch. 4);
* rate schedules and antagonist schedules enter as exact step averages.

The method is second order for smooth dynamics (``tests/test_fluid.py``
measures it against a ``dt/8`` reference); at kinks (``servers``, ``max_load``,
a clamp at 0 with ``constant`` rates, active-set changes of a split) it is
locally first order.

The default ``dt`` is the smallest of: ``0.1 / r`` with ``r`` the fastest
backend's rate scale (``mu_j'(0)``, or a secant where that is infinite);
``sample_interval / 10``; ``horizon / 100``; for routers that observe, half the
smallest positive delay (so the loop delay ``2 d`` spans 4 steps) and, when a
loop has an observation lag shorter than a step, ``1/R`` (above); then
shortened so that a router's ``interval`` is a whole number of steps.

Initial condition: ``x0 = None`` is the simulator's: empty backends, nothing
in transit, and ``x(t < 0) = 0``. A given ``x0`` (an array, or
``"optimum"``) is a constant history: the system is taken to have been at
``x0`` with the router's initial split for ``t < 0``, so requests sent before
0 are in transit at 0.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.optimize

from .errors import ScenarioError, unknown
from .rates import RateFamily

__all__ = [
    "FLUID_ROUTERS",
    "FluidResult",
    "FluidRouter",
    "RateVector",
    "critical_gain",
    "dgdlb_critical_step",
    "fluid",
    "project_rows",
    "tie_split",
]

#: default tolerance band of the argmin routers (relative to the typical cost)
BAND = 1e-3


# ---------------------------------------------------------------------------------------
# Rate functions of every backend at once
# ---------------------------------------------------------------------------------------
class RateVector:
    """``mu_j`` of all backends as one vectorised function of the last axis (backends).

    Backends are grouped by family and each family's own ``_value`` /
    ``_derivative`` is called once per group with its parameters as arrays
    (the families' formulas are elementwise numpy), so there is no Python loop
    over backends. A family whose formula does not vectorise this way (a
    user-registered one, say) is detected at construction and evaluated
    backend by backend instead.
    """

    def __init__(self, rates: Sequence[RateFamily]):
        self.rates = list(rates)
        self.num_backends = len(self.rates)
        by_family: dict[type, list[int]] = {}
        for j, r in enumerate(self.rates):
            by_family.setdefault(type(r), []).append(j)
        self._groups = []
        for cls, members in by_family.items():
            idx = np.array(members)
            params = SimpleNamespace(
                **{name: np.array([getattr(self.rates[j], name) for j in members], float) for name in cls.model_fields}
            )
            vectorised = _vectorises(cls, params, [self.rates[j] for j in members])
            self._groups.append((cls, idx, params, vectorised))
        self._whole = len(self._groups) == 1 and np.array_equal(self._groups[0][1], np.arange(self.num_backends))

    def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self._whole and self._groups[0][3]:
            cls, _, params, _ = self._groups[0]
            return np.broadcast_to(getattr(cls, method)(params, x), x.shape)
        out = np.empty_like(x)
        for cls, idx, params, vectorised in self._groups:
            xs = x[..., idx]
            if vectorised:
                out[..., idx] = getattr(cls, method)(params, xs)
            else:
                for k, j in enumerate(idx):
                    out[..., j] = getattr(self.rates[j], method)(xs[..., k])
        return out

    def value(self, x: np.ndarray) -> np.ndarray:
        """``mu_j(x[..., j])``."""
        return self._call("_value", x)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """``mu_j'(x[..., j])``."""
        return self._call("_derivative", x)

    @cached_property
    def supremum(self) -> np.ndarray:
        return np.array([r.supremum for r in self.rates], dtype=float)


def _vectorises(cls: type, params: SimpleNamespace, members: list[RateFamily]) -> bool:
    """Whether ``cls``'s formulas give, on parameter arrays, what each member gives alone."""
    probe = np.array([0.0, 1e-3, 0.3, 1.0, 2.5, 10.0, 1e3])
    x = np.repeat(probe[:, None], len(members), axis=1)
    try:
        with np.errstate(all="ignore"):
            for method in ("_value", "_derivative"):
                got = np.broadcast_to(getattr(cls, method)(params, x), x.shape)
                want = np.stack([getattr(r, method)(probe) for r in members], axis=1)
                if not np.allclose(got, want, rtol=1e-12, atol=0.0, equal_nan=True):
                    return False
    except Exception:  # noqa: BLE001  (any failure means: evaluate member by member)
        return False
    return True


# ---------------------------------------------------------------------------------------
# Projections and tie splits
# ---------------------------------------------------------------------------------------
def project_rows(v: np.ndarray, lower: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean projection of each row of ``v`` onto the probability simplex; returns ``(p, theta)``.

    ``p_ij = max(v_ij - theta_i, 0)`` with ``theta_i`` the root of the convex,
    decreasing, piecewise-linear ``S_i(theta) = sum_j max(v_ij - theta, 0) = 1``
    (Held, Wolfe, Crowder 1974; Duchi et al., ICML 2008). Entries set to
    ``-inf`` are excluded. Instead of sorting, Newton's method on ``S`` from a
    lower bound of ``theta`` (Michelot's algorithm, J. Optim. Theory Appl.,
    1986): on a convex function it never overshoots, the active set only
    shrinks, and it stops when the set no longer changes, with the exact
    answer. ``lower`` (optional) is a known lower bound, e.g. from the
    previous split's support: ``(sum_{S} v - 1)/|S|`` is one for *any* set
    ``S`` because ``S_i(theta) >= sum_S (v - theta)``. Warm-started this way a
    slowly changing split converges in one or two passes over the array.
    """
    theta = v.max(axis=1) - 1.0  # S(max v - 1) >= 1: always a lower bound
    if lower is not None:
        theta = np.maximum(theta, lower)
    count = np.full(len(v), -1)
    for _ in range(4 * v.shape[1] + 4):
        active = v > theta[:, None]
        n = active.sum(axis=1)
        theta = (np.sum(v, axis=1, where=active) - 1.0) / n
        if np.array_equal(n, count):
            break
        count = n
    else:  # pragma: no cover  (finite termination; kept as a guard against rounding loops)
        raise RuntimeError("simplex projection did not converge")
    return np.maximum(v - theta[:, None], 0.0), theta


def support_bound(v: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``(sum_{j in S_i} v_ij - 1) / |S_i|``: a lower bound of the projection's ``theta`` (see :func:`project_rows`)."""
    n = support.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = (np.sum(v, axis=1, where=support) - 1.0) / n
    return np.where(n > 0, bound, -np.inf)


def tie_split(cost: np.ndarray, allowed: np.ndarray, eps: float, support: np.ndarray | None = None) -> np.ndarray:
    """The band-regularised argmin of each row of ``cost`` over ``allowed``: ``Proj_simplex(-(c - min c)/eps)``.

    ``eps = 0`` is the plain argmin with exact ties shared equally (the limit
    of the band). ``support`` (optional) is the previous split's support, a
    warm start for the projection.
    """
    c = np.where(allowed, cost, np.inf)
    best = c.min(axis=1, keepdims=True)
    if eps <= 0.0:
        tied = c <= best
        return tied / tied.sum(axis=1, keepdims=True)
    v = (best - c) / eps  # 0 at the best, -inf where not allowed
    lower = support_bound(v, support) if support is not None else None
    return project_rows(v, lower)[0]


# ---------------------------------------------------------------------------------------
# Routers
# ---------------------------------------------------------------------------------------
FLUID_ROUTERS: dict[str, type[FluidRouter]] = {}


def register_fluid(cls: type[FluidRouter]) -> type[FluidRouter]:
    """Class decorator: the fluid analogue of the discrete router(s) named in ``cls.names``."""
    for name in cls.names:
        FLUID_ROUTERS[name] = cls
    return cls


class FluidRouter:
    """A router's fluid analogue: a split ``(F, B)`` as a function of time and the observed loads.

    * static routers implement :meth:`initial_split` only;
    * ``continuous`` routers implement :meth:`split`, called at every stage of
      every step with the observed loads ``xhat`` (F, B);
    * ``tick_interval`` routers implement :meth:`tick`, called at
      ``k * tick_interval`` (k >= 1) as the discrete router's ``tick`` is.

    ``params`` is the discrete router's validated ``Params`` (the same
    defaults and checks); ``model`` holds the scenario's arrays.
    """

    names: ClassVar[tuple[str, ...]] = ()
    continuous: ClassVar[bool] = False
    tick_interval: float | None = None

    def __init__(self, name: str, params: Any, model: _Model):
        self.name = name
        self.params = params
        self.model = model

    @property
    def observes(self) -> bool:
        return self.continuous or self.tick_interval is not None

    def initial_split(self) -> np.ndarray:
        return self.model.connect / self.model.connect.sum(axis=1, keepdims=True)

    def split(self, t: float, xhat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def tick(self, t: float, xhat: np.ndarray, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def stiffness(self) -> float:
        """The rate (1/s) at which the split reacts to its own effect without delay (0: it does not)."""
        return 0.0


def _discrete_router(name: str, params: Any, model: _Model):
    """The simulator's router itself (for the splits it computes once: weighted, dgdlb's init)."""
    from .routers.base import RouterContext, make_router

    ctx = RouterContext(
        num_frontends=model.num_frontends,
        num_backends=model.num_backends,
        latency=model.scenario.latency,
        connect=model.connect,
        rates=model.scenario.service_rates,
        mean_size=model.scenario.mean_size,
        demand=model.scenario.demand,
        rng=np.random.default_rng(0),
        now=lambda: 0.0,
        probe=lambda *args: None,
        scenario=model.scenario,
    )
    return make_router(name, params.model_dump(), ctx)


@register_fluid
class Uniform(FluidRouter):
    """``random`` and ``round_robin``: each frontend splits its flow evenly over N(i)."""

    names = ("random", "round_robin")


@register_fluid
class Weighted(FluidRouter):
    """``weighted``: the discrete router's fixed split (given, capacity or optimal)."""

    names = ("weighted",)

    def initial_split(self) -> np.ndarray:
        return np.array(_discrete_router(self.name, self.params, self.model).split(), dtype=float)


@register_fluid
class Nearest(FluidRouter):
    """``nearest``: all of a frontend's flow to its closest usable backends (ties share equally)."""

    names = ("nearest",)

    def initial_split(self) -> np.ndarray:
        return tie_split(self.model.latency, self.model.connect, 0.0)


class TieRouter(FluidRouter):
    """An argmin rule ``argmin_j cost_ij(xhat_ij)``, regularised by the tolerance band (module docstring)."""

    continuous = True

    def __init__(self, name, params, model):
        super().__init__(name, params, model)
        self.band = model.band
        reference = np.broadcast_to(model.reference_load, model.connect.shape)
        costs = self.cost(reference)[model.connect]
        costs = costs[np.isfinite(costs) & (costs > 0)]
        self.cost_scale = float(np.median(costs)) if len(costs) else 1.0
        self.eps = self.band * self.cost_scale
        self._support: np.ndarray | None = None

    def cost(self, xhat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def initial_split(self) -> np.ndarray:
        return self.split(0.0, np.broadcast_to(self.model.x0, self.model.connect.shape))

    def split(self, t, xhat):
        p = tie_split(self.cost(xhat), self.model.connect, self.eps, self._support)
        self._support = p > 0.0
        return p

    def stiffness(self) -> float:
        """``Lambda * max |dc/dx| / eps`` over loads between 0 and twice the reference."""
        if self.eps <= 0.0:
            return math.inf
        model = self.model
        slopes = []
        for s in (0.0, 0.5, 1.0, 2.0):
            x = np.broadcast_to(s * model.reference_load, model.connect.shape)
            h = 1e-6 * np.maximum(model.reference_load, 1e-9)
            slope = (self.cost(x + h) - self.cost(x)) / h
            slopes.append(np.abs(np.where(model.connect, slope, 0.0)).max())
        slope = np.nanmax(np.where(np.isfinite(slopes), slopes, 0.0))
        return float(model.demand.sum() * slope / self.eps)


def _marginal_cost(model: _Model, xhat: np.ndarray, cap: float) -> np.ndarray:
    """``min(1/mu_j'(xhat), cap)``, the discrete routers' capped marginal cost (seconds)."""
    with np.errstate(divide="ignore"):
        return np.minimum(1.0 / model.rates.derivative(xhat), cap)


@register_fluid
class GMSR(TieRouter):
    """``gmsr``: flow to ``argmax_j mu_j'(xhat_ij)``; variant ``latency``: ``argmin 2 d_ij + 1/mu_j'(xhat_ij)``.

    Zhang et al., arXiv:2411.17103. The cost is the capped marginal cost
    ``min(1/mu_j', cost_cap)`` (the same order as ``-mu_j'``), so the band is
    relative to the best marginal rate. ``discrete`` is the same rule in the
    fluid limit (``sbar -> 0``).
    """

    names = ("gmsr",)

    def cost(self, xhat):
        c = _marginal_cost(self.model, xhat, self.params.cost_cap)
        return self.model.round_trip + c if self.params.variant == "latency" else c


@register_fluid
class LeastLatency(TieRouter):
    """``least_latency``: ``argmin_j 2 d_ij + xhat_ij / mu_j(xhat_ij)`` (``1/mu_j'(0)`` at 0, its limit)."""

    names = ("least_latency",)

    def cost(self, xhat):
        rates = self.model.rates
        with np.errstate(divide="ignore", invalid="ignore"):
            sojourn = np.where(xhat > 0.0, xhat / rates.value(xhat), 1.0 / rates.derivative(np.zeros_like(xhat)))
        return self.model.round_trip + np.minimum(sojourn, 1e300)


@register_fluid
class LeastLoad(TieRouter):
    """``least_load`` and ``jsq``: ``argmin_j xhat_ij`` (``nhat = xhat / sbar`` orders the same)."""

    names = ("least_load", "jsq")

    def cost(self, xhat):
        return np.array(xhat, dtype=float, copy=True)


@register_fluid
class DGDLB(FluidRouter):
    """``dgdlb``: every ``interval``, ``p_i <- Proj_simplex(p_i - step * interval * g_i)`` on the delayed state.

    Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693; ``g_ij = 2 d_ij +
    min(1/mu_j'(xhat_ij), cost_cap)``, exactly the discrete router's update,
    done for all frontends at once (:func:`project_rows`, warm-started from
    the previous support). As ``interval -> 0`` it is the projected gradient
    flow ``dp_i/dt = -step * Proj_T(g_i)``; for one frontend and two identical
    backends its linearisation is ``D'' + a D' + K D(t - 2d) = 0`` with
    ``K = step * lambda * d/dx[1/mu'](x*)`` (:func:`dgdlb_critical_step`).
    """

    names = ("dgdlb",)

    def __init__(self, name, params, model):
        super().__init__(name, params, model)
        self.tick_interval = params.interval
        self._eta = params.step * params.interval

    def initial_split(self):
        return np.array(_discrete_router(self.name, self.params, self.model).split(), dtype=float)

    def tick(self, t, xhat, p):
        model = self.model
        v = p - self._eta * (model.round_trip + _marginal_cost(model, xhat, self.params.cost_cap))
        v[~model.connect] = -np.inf
        return project_rows(v, support_bound(v, p > 0.0))[0]


# ---------------------------------------------------------------------------------------
# The scenario's arrays, delays on the step grid
# ---------------------------------------------------------------------------------------
@dataclass
class _Lags:
    """Fixed lags ``(m + phi) * dt`` (F, B): integer steps and the fraction for linear interpolation."""

    whole: np.ndarray  # m, int
    fraction: np.ndarray  # phi in [0, 1)

    @classmethod
    def of(cls, lag: np.ndarray, dt: float) -> _Lags:
        u = np.asarray(lag, dtype=float) / dt
        near = np.round(u)
        u = np.where(np.abs(u - near) <= 1e-9 * np.maximum(1.0, u), near, u)  # on the grid: no interpolation
        m = np.floor(u)
        return cls(m.astype(np.int64), u - m)

    @property
    def steps(self) -> int:
        return int(self.whole.max()) if self.whole.size else 0


class _Model:
    """Everything the integrator and the routers read: arrays of the scenario, validated once."""

    def __init__(self, scenario, band: float, x0):
        self.scenario = scenario
        self.num_frontends, self.num_backends = scenario.num_frontends, scenario.num_backends
        self.demand = scenario.demand
        self.connect = scenario.connect
        self.latency = scenario.latency
        self.round_trip = 2.0 * self.latency
        self.rates = RateVector(scenario.service_rates)
        self.band = band
        net = scenario.network
        jitter = net.jitter_distribution
        #: transit delay of a request: d_ij plus the mean jitter (the fluid sees delays through their mean)
        self.transit = self.latency + (jitter[1] if jitter is not None else 0.0)
        self.telemetry = net.telemetry
        self.period = net.period
        self.observation = np.zeros_like(self.latency) if net.telemetry == "instant" else self.latency
        limits = [b.max_load if b.max_load is not None else math.inf for b in scenario.backends]
        self.max_load = np.array(limits) if any(math.isfinite(v) for v in limits) else None
        self.x0 = self._initial_state(x0)
        self.reference_load = self._reference_load()

    def _initial_state(self, x0) -> np.ndarray:
        B = self.num_backends
        if x0 is None:
            return np.zeros(B)
        if isinstance(x0, str):
            if x0 != "optimum":
                raise ScenarioError("x0", f"must be loads (one per backend), a number or 'optimum', got {x0!r}")
            from .optimum import optimum

            return np.array(optimum(self.scenario).load, dtype=float)
        x = np.broadcast_to(np.asarray(x0, dtype=float), (B,)).copy() if np.ndim(x0) == 0 else np.asarray(x0, float)
        if x.shape != (B,) or not np.all(np.isfinite(x)) or (x < 0).any():
            raise ScenarioError("x0", f"must be {B} finite loads >= 0, got {x0!r}")
        return x

    def _reference_load(self) -> np.ndarray:
        """Each backend's load under a capacity-proportional split (capped at 95% of capacity)."""
        cap = self.rates.supremum
        weights = np.where(self.connect, np.where(np.isfinite(cap), cap, 1.0), 0.0)
        flow = (self.demand[:, None] * weights / weights.sum(axis=1, keepdims=True)).sum(axis=0)
        flow = np.minimum(flow, 0.95 * cap)
        load = np.array([float(r.inverse(f)) for r, f in zip(self.rates.rates, flow)])
        return np.where(np.isfinite(load), load, 0.0)

    def rate_scale(self) -> float:
        """The fastest backend's relaxation rate (1/s): ``mu_j'(0)``, or twice a secant where that is infinite."""
        zero = self.rates.derivative(np.zeros(self.num_backends))
        x = np.maximum(self.reference_load, 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = 2.0 * self.rates.value(x) / x
        scale = np.where(np.isfinite(zero), zero, np.where(self.reference_load > 0, secant, 0.0))
        scale = scale[np.isfinite(scale)]
        return float(scale.max()) if len(scale) else 0.0

    def departure(self, x: np.ndarray, multiplier: np.ndarray | None) -> np.ndarray:
        """``m_j mu_j(min(x_j, L_j))``: the service rate of each backend."""
        rate = self.rates.value(x if self.max_load is None else np.minimum(x, self.max_load))
        return rate if multiplier is None else multiplier * rate


def _schedule_average(steps: Sequence[tuple[float, float]], initial: float, dt: float, n_steps: int, step_idx):
    """Step averages ``(1/dt) int_{t_n}^{t_{n+1}} m(s) ds`` of a piecewise-constant ``m`` at the steps ``step_idx``."""
    starts = np.array([0.0] + [t for t, _ in steps if t > 0.0])
    values = np.array([initial] + [m for t, m in steps if t > 0.0])
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(starts) * values[:-1])])

    def integral(t):
        k = np.searchsorted(starts, t, side="right") - 1
        return cumulative[k] + (t - starts[k]) * values[k]

    n = np.asarray(step_idx, dtype=float)
    return (integral((n + 1) * dt) - integral(n * dt)) / dt


def _changing_steps(times: Sequence[float], dt: float, n_steps: int) -> np.ndarray:
    """The steps whose average a breakpoint at one of ``times`` changes: its own step and the next."""
    steps = set()
    for t in times:
        if t <= 0.0:
            continue
        u = t / dt
        k = int(math.floor(u + 1e-9))
        steps.update((k - 1, k) if abs(u - round(u)) <= 1e-9 else (k, k + 1))
    return np.array(sorted(s for s in steps if 0 <= s < n_steps), dtype=np.int64)


# ---------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------
@dataclass
class FluidResult:
    """A fluid trajectory sampled every ``sample_interval``.

    ``t`` (T,), ``load`` (T, B), ``split`` (T, F, B) (None if not recorded:
    the split in effect at each sample time), ``final_load`` (B,) and
    ``final_split`` (F, B) at the horizon; ``timeseries`` and ``routing`` are
    the simulator's table shapes (``jobs = load / sbar``, a real number here).
    """

    scenario: Any
    router: str
    params: dict[str, Any]
    t: np.ndarray
    load: np.ndarray
    split: np.ndarray | None
    final_load: np.ndarray
    final_split: np.ndarray
    dt: float
    band: float | None
    steps: int
    wall_seconds: float
    x0: np.ndarray = field(repr=False, default=None)

    @cached_property
    def timeseries(self) -> pd.DataFrame:
        T, B = self.load.shape
        load = self.load.reshape(-1)
        return pd.DataFrame(
            {
                "t": np.repeat(self.t, B),
                "backend": np.tile(np.arange(B, dtype=np.int32), T),
                "load": load,
                "jobs": load / self.scenario.mean_size,
            }
        )

    @cached_property
    def routing(self) -> pd.DataFrame:
        frontend, backend = np.nonzero(self.scenario.connect)
        T = len(self.t) if self.split is not None else 0
        prob = self.split[:, frontend, backend].reshape(-1) if T else np.empty(0)
        return pd.DataFrame(
            {
                "t": np.repeat(self.t[:T], len(frontend)),
                "frontend": np.tile(frontend.astype(np.int32), T),
                "backend": np.tile(backend.astype(np.int32), T),
                "prob": prob,
            }
        )

    def mean_latency(self, load: np.ndarray | None = None, split: np.ndarray | None = None) -> float:
        """Little's law on a fluid state: ``(sum_ij f_ij 2 d_ij + sum_j x_j) / sum_ij f_ij`` (final state by default).

        ``f_ij = lambda_i p_ij`` is the flow being sent. At a rest point
        ``x_j = mu_j^{-1}(Lambda_j)``, so this is the optimum's objective
        (DESIGN.md section 2) evaluated at the router's split.
        """
        load = self.final_load if load is None else load
        split = self.final_split if split is None else split
        flow = self.scenario.demand[:, None] * split
        network = float((flow * 2.0 * self.scenario.latency).sum())
        return (network + float(np.sum(load))) / float(flow.sum())

    def steady_mean_latency(self, split: np.ndarray | None = None) -> float:
        """The optimum's objective at a split: loads at their steady state ``mu_j^{-1}(Lambda_j)`` (inf if overloaded)."""
        split = self.final_split if split is None else split
        flow = self.scenario.demand[:, None] * split
        arrivals = flow.sum(axis=0)
        load = np.array([float(r.inverse(a)) for r, a in zip(self.scenario.service_rates, arrivals)])
        return self.mean_latency(load, split)

    def summary(self) -> dict[str, Any]:
        def clean(v):
            return [clean(u) for u in v] if isinstance(v, list) else (v if math.isfinite(v) else None)

        return {
            "scenario": self.scenario.name,
            "router": self.router,
            "params": self.params,
            "model": "fluid",
            "horizon": float(self.steps * self.dt),
            "dt": self.dt,
            "steps": self.steps,
            "band": self.band,
            "final_load": clean(self.final_load.tolist()),
            "final_split": clean(self.final_split.tolist()),
            "mean_latency": clean(self.mean_latency()),
            "steady_mean_latency": clean(self.steady_mean_latency()),
            "wall_seconds": round(self.wall_seconds, 6),
        }

    def write(self, out: str | Path) -> Path:
        """``timeseries.parquet``, ``routing.parquet`` (if the split was recorded) and ``summary.json``, atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tables = {"timeseries": self.timeseries}
        if self.split is not None:
            tables["routing"] = self.routing
        for name, frame in tables.items():
            _atomic(out / f"{name}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
        text = json.dumps(self.summary(), indent=2) + "\n"
        _atomic(out / "summary.json", lambda p: Path(p).write_text(text))
        return out


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary name beside ``path`` and rename: the file appears whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
def fluid(
    scenario,
    router: str | None = None,
    dt: float | None = None,
    horizon: float | None = None,
    x0: Any = None,
    *,
    band: float = BAND,
    record_split: bool = True,
    **router_params,
) -> FluidResult:
    """Integrate the fluid model of ``scenario`` under ``router`` (default: the scenario's).

    ``router_params`` override the scenario's ``[router]`` parameters (when
    the router is the scenario's) and are validated by the discrete router's
    ``Params``. ``dt`` defaults as in the module docstring (it is shortened, never
    lengthened, to make a router's ``interval`` a whole number of steps);
    ``horizon`` defaults to the scenario's; ``x0`` is ``None`` (empty), loads
    (B,) or ``"optimum"``; ``band`` regularises the argmin routers (relative
    to the typical cost; 0 is the raw argmin, usable only with delays);
    ``record_split=False`` keeps no (T, F, B) split history (large scenarios).
    """
    from .routers.base import validate_params

    started = time.perf_counter()
    name = router or scenario.router.name
    if name not in FLUID_ROUTERS:
        raise ScenarioError("router", unknown("router with a fluid model", name, FLUID_ROUTERS))
    params = dict(scenario.router.params) if name == scenario.router.name else {}
    params.update(router_params)
    validated = validate_params(name, params)
    if not (band >= 0.0 and math.isfinite(band)):
        raise ScenarioError("band", f"must be finite and >= 0, got {band}")
    model = _Model(scenario, band, x0)
    fluid_router = FLUID_ROUTERS[name](name, validated, model)
    if fluid_router.observes and model.telemetry == "none":
        raise ScenarioError("network.telemetry", f"router '{name}' needs telemetry; 'none' has no fluid model")
    horizon = float(scenario.simulation.horizon if horizon is None else horizon)
    if not horizon > 0:
        raise ScenarioError("horizon", f"must be > 0, got {horizon}")
    dt = _time_step(model, fluid_router, horizon, dt)
    integrator = _Integrator(model, fluid_router, dt, horizon, record_split)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        integrator.run()
    return FluidResult(
        scenario=scenario,
        router=name,
        params=validated.model_dump(),
        t=integrator.sample_t,
        load=integrator.sample_load,
        split=integrator.sample_split,
        final_load=integrator.x,
        final_split=integrator.p,
        dt=dt,
        band=band if isinstance(fluid_router, TieRouter) else None,
        steps=integrator.n_steps,
        wall_seconds=time.perf_counter() - started,
        x0=model.x0,
    )


def _time_step(model: _Model, router: FluidRouter, horizon: float, dt: float | None) -> float:
    sample = model.scenario.simulation.sample_interval
    if dt is None:
        candidates = [sample / 10.0, horizon / 100.0]
        r = model.rate_scale()
        if r > 0:
            candidates.append(0.1 / r)
        if router.observes:
            positive = model.observation[model.connect & (model.observation > 0)]
            if len(positive):
                candidates.append(float(positive.min()) / 2.0)
            stiff = router.stiffness()
            shortest = float(model.observation[model.connect].min())
            if stiff > 0 and shortest < min(candidates):  # an undelayed loop: its own reaction must be resolved
                candidates.append(1.0 / stiff)
        dt = min(candidates)
    if not (dt > 0 and math.isfinite(dt)):
        raise ScenarioError("dt", f"must be finite and > 0, got {dt}")
    if router.tick_interval is not None:
        dt = router.tick_interval / math.ceil(router.tick_interval / dt * (1 - 1e-12))
    return float(dt)


# ---------------------------------------------------------------------------------------
# The integrator
# ---------------------------------------------------------------------------------------
class _Integrator:
    """Heun's method with exact arrival integrals and history rings (module docstring)."""

    def __init__(self, model: _Model, router: FluidRouter, dt: float, horizon: float, record_split: bool):
        self.model, self.router, self.dt = model, router, dt
        F, B = model.num_frontends, model.num_backends
        self.n_steps = n_steps = max(1, math.ceil(horizon / dt - 1e-9))
        sim = model.scenario.simulation

        # Samples at k * sample_interval < horizon, as the simulator takes them.
        self.sample_t = np.arange(0.0, horizon, sim.sample_interval)
        self.sample_t = self.sample_t[self.sample_t < horizon]
        u = self.sample_t / dt
        self._sample_step = np.floor(u + 1e-9).astype(np.int64)
        self._sample_frac = np.where(np.abs(u - np.round(u)) <= 1e-9, 0.0, u - self._sample_step)
        self.sample_load = np.empty((len(self.sample_t), B))
        self.sample_split = np.empty((len(self.sample_t), F, B)) if record_split else None

        # Observations: x_j at t - lag_ij, from a doubled ring (rows s and s + L hold x at the same step,
        # so the rows k, k-1, ..., k-L+1 are a contiguous range and an index is a constant plus a base).
        self.periodic = model.telemetry == "periodic"
        if router.observes:
            span = model.observation.max() + (model.period if self.periodic else 0.0)
            self.obs = _Lags.of(model.observation, dt)
            self.ring_len = int(math.ceil(span / dt)) + 3
            cols = np.arange(B)[None, :]
            self._obs_a = cols - self.obs.whole * B
            self._obs_b = self._obs_a - B
            self._obs_interp = bool((self.obs.fraction > 0).any())
        else:
            self.ring_len = 1
        self.ring = np.empty((2 * self.ring_len, B))
        self.ring[:] = model.x0

        # Arrivals: running rate a (B,), future increments in a ring (rows n mod L).
        self.transit = _Lags.of(model.transit, dt)
        depth = self.transit.steps + 2
        self.inc_len = depth + 1
        self.increments = np.zeros((self.inc_len, B))
        rows = self.transit.whole * B + np.arange(B)[None, :]
        frac = self.transit.fraction
        if (frac > 0).any():
            self._push_index = np.concatenate([rows.reshape(-1), (rows + B).reshape(-1)])
            self._push_weights = (1.0 - frac, frac)
        else:
            self._push_index = rows.reshape(-1)
            self._push_weights = None
        self._push_rows = depth
        self._push_offsets = np.arange(depth)

        # Time-varying multipliers as step averages, only at the steps where they change.
        schedule = sim.rate_schedule or []
        initial = schedule[0][1] if schedule and schedule[0][0] == 0.0 else 1.0
        self.lam_initial = initial
        steps = _changing_steps([t for t, _ in schedule], dt, n_steps)
        values = _schedule_average(schedule, initial, dt, n_steps, steps) if len(steps) else []
        self.lam_events = {int(s): float(v) for s, v in zip(steps, values)}
        self.capacity_events, self.multiplier = self._antagonists(n_steps)

    def _antagonists(self, n_steps: int):
        events: dict[int, list[tuple[int, float]]] = {}
        multiplier = None
        for j, spec in enumerate(self.model.scenario.backends):
            ant = spec.antagonist
            if ant is None:
                continue
            if multiplier is None:
                multiplier = np.ones(self.model.num_backends)
            if ant.schedule is None:
                warnings.warn(
                    f"backends[{j}].antagonist: random levels have no deterministic fluid model; "
                    "using their time average (the mean level)",
                    stacklevel=4,
                )
                multiplier[j] = float(np.mean(ant.levels))
                continue
            initial = ant.schedule[0][1] if ant.schedule[0][0] == 0.0 else 1.0
            multiplier[j] = initial
            steps = _changing_steps([t for t, _ in ant.schedule], self.dt, n_steps)
            for s, v in zip(steps, _schedule_average(ant.schedule, initial, self.dt, n_steps, steps)):
                events.setdefault(int(s), []).append((j, float(v)))
        folded = {s: (np.array([j for j, _ in ch]), np.array([v for _, v in ch])) for s, ch in events.items()}
        return folded, multiplier

    # -- histories -------------------------------------------------------------------------
    def _store(self, k: int, x: np.ndarray) -> None:
        s = k % self.ring_len
        self.ring[s] = x
        self.ring[s + self.ring_len] = x

    def observe(self, k: int) -> np.ndarray:
        """``xhat_ij`` at ``t_k``: x_j at ``t_k - lag_ij``, linearly interpolated (F, B)."""
        flat = self.ring.reshape(-1)
        if self.periodic:
            return self._observe_periodic(k, flat)
        base = (k % self.ring_len + self.ring_len) * self.model.num_backends
        xa = flat.take(self._obs_a + base)
        if not self._obs_interp:
            return xa
        phi = self.obs.fraction
        return xa + phi * (flat.take(self._obs_b + base) - xa)

    def _observe_periodic(self, k: int, flat: np.ndarray) -> np.ndarray:
        """The last report: sent at the largest ``q P <= t - d_ij`` (before 0: the initial history)."""
        dt, P, B = self.dt, self.model.period, self.model.num_backends
        t = k * dt
        sent = np.floor((t - self.model.observation) / P + 1e-9) * P
        lags = _Lags.of(np.minimum(t - sent, (self.ring_len - 2) * dt), dt)
        base = (k % self.ring_len + self.ring_len) * B
        idx = np.arange(B)[None, :] - lags.whole * B + base
        xa = flat.take(idx)
        return xa + lags.fraction * (flat.take(idx - B) - xa)

    def push(self, delta: np.ndarray, k: int) -> None:
        """A change ``delta`` (F, B) of the sent flow from step ``k`` on: schedule its arrival increments."""
        if self._push_weights is None:
            weights = delta.reshape(-1)
        else:
            weights = np.concatenate([(self._push_weights[0] * delta).reshape(-1), (self._push_weights[1] * delta).reshape(-1)])
        B = self.model.num_backends
        contrib = np.bincount(self._push_index, weights=weights, minlength=self._push_rows * B)
        self.increments[(k + self._push_offsets) % self.inc_len] += contrib.reshape(self._push_rows, B)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        model, router, dt = self.model, self.router, self.dt
        lam = model.demand
        x = model.x0.copy()
        self._store(0, x)
        p = router.initial_split()
        scale = self.lam_initial
        if model.x0.any():  # a constant history: the initial split has been in use before 0
            sent = (scale * lam)[:, None] * p
            rate = sent.sum(axis=0)
        else:
            sent = np.zeros_like(p)
            rate = np.zeros(model.num_backends)
        continuous, tick = router.continuous, router.tick_interval
        tick_every = round(tick / dt) if tick is not None else 0
        lam_events, capacity_events = self.lam_events, self.capacity_events
        multiplier = self.multiplier
        departure, push, observe, store = model.departure, self.push, self.observe, self._store
        increments, inc_len = self.increments, self.inc_len
        sample_step, sample_frac = self._sample_step, self._sample_frac
        next_sample, n_samples = 0, len(sample_step)
        changed = True
        for n in range(self.n_steps):
            if n in lam_events:
                scale = lam_events[n]
                changed = True
            if n in capacity_events:
                idx, values = capacity_events[n]
                multiplier[idx] = values
            if continuous:
                p = router.split(n * dt, observe(n))
                changed = True
            elif tick_every and n and n % tick_every == 0:
                p = router.tick(n * dt, observe(n), p)
                changed = True
            if changed:
                flow = (scale * lam)[:, None] * p
                push(flow - sent, n)
                sent = flow
                changed = not continuous and n + 1 in lam_events
            slot = n % inc_len
            arrivals = rate + increments[slot]
            mu_now = departure(x, multiplier)
            predictor = np.maximum(x + dt * (arrivals - mu_now), 0.0)
            if continuous:
                store(n + 1, predictor)
                p_next = router.split((n + 1) * dt, observe(n + 1))
                flow = (0.5 * scale * lam)[:, None] * (p + p_next)
                push(flow - sent, n)
                sent = flow
                arrivals = rate + increments[slot]
            x_next = np.maximum(x + dt * (arrivals - 0.5 * (mu_now + departure(predictor, multiplier))), 0.0)
            store(n + 1, x_next)
            while next_sample < n_samples and sample_step[next_sample] == n:
                f = sample_frac[next_sample]
                self.sample_load[next_sample] = x if f == 0.0 else x + f * (x_next - x)
                if self.sample_split is not None:
                    self.sample_split[next_sample] = p
                next_sample += 1
            increments[slot] = 0.0
            rate = arrivals
            x = x_next
        self.x, self.p = x, p


# ---------------------------------------------------------------------------------------
# DGD-LB's linearised stability limit (ALGORITHMS.md)
# ---------------------------------------------------------------------------------------
def critical_gain(a: float, loop_delay: float) -> tuple[float, float]:
    """``(K_crit, w)`` of ``D'' + a D' + K D(t - T) = 0``: stable iff ``K < K_crit``.

    On the stability boundary ``s = i w`` solves ``-w^2 + i a w + K e^{-i w T} = 0``:
    ``K cos(wT) = w^2`` and ``K sin(wT) = a w``, so ``w T = arctan(a / w)`` (a
    root in ``(0, pi / (2T))``) and ``K_crit = w sqrt(w^2 + a^2)``.
    """
    if loop_delay <= 0:
        return math.inf, math.inf
    w = scipy.optimize.brentq(
        lambda w: w * loop_delay - math.atan(a / w), 1e-12 / loop_delay, math.pi / (2 * loop_delay), xtol=1e-15
    )
    return w * math.sqrt(w * w + a * a), w


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
    ``2d``.
    """
    a = float(rate.derivative(load))
    h = 1e-6 * max(load, 1e-6)
    slope = (1.0 / float(rate.derivative(load + h)) - 1.0 / float(rate.derivative(load - h))) / (2 * h)
    k_crit, _ = critical_gain(a, 2.0 * delay)
    return k_crit / (demand * slope)
