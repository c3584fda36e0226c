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
A rest point satisfies ``c_ij + eps p_ij = nu_i`` on the used edges (and
``c_ij >= nu_i`` on the others) instead of equal costs: the optimality
conditions with an extra ``(eps/2) sum_ij lambda_i p_ij^2``, so it is
``O(band)`` away from the inclusion's rest point, and ``band -> 0`` recovers
the inclusion (``tests/test_fluid.py`` measures both, and the linear
convergence of whole trajectories). The price is stiffness: with an undelayed loop the split reacts
to its own effect at rate ``R ~ Lambda * |dc/dx| / eps``, so the default time
step keeps ``R dt <= 1``.

**Integration.** A fixed step ``dt`` on a grid ``t_n = n dt``, method of
steps with the delayed terms read from history ring buffers:

* arrivals are integrated *exactly* for splits that are constant on each
  step (static, ``dgdlb``, which updates on the grid): the flow history is
  kept as step averages ``F_n`` and the work arriving at ``j`` during step
  ``n`` is ``dt * sum_i [phi F_{n-m-1} + (1-phi) F_{n-m}]_ij`` for
  ``d_ij = (m + phi) dt``. It is kept as a running rate updated by pushing
  each change of ``F`` into a window of future increments (one sparse
  matrix-vector product per change, nothing per step). For continuous
  splits (argmin routers) ``F_n`` is the trapezoid average of the split at
  ``t_n`` and ``t_{n+1}``;
* service is Heun's method (explicit trapezoid, RK2): predictor
  ``x~ = x_n + A_n - dt mu(x_n)``, corrector with ``(mu(x_n) + mu(x~))/2``;
  each clamped at 0 (a backend that empties within a step serves only the
  work it had: served work is ``min(dt * rate, x_n + arrivals)``);
* observations ``h_j(x_j(t - d_ij))`` (``h`` the router's signal: the load,
  or a marginal cost) interpolate the signal of the stored states linearly
  (when ``d_ij < dt`` the predicted state at ``t_{n+1}`` is used, as in
  continuous Runge-Kutta methods for delay equations; Bellen and Zennaro,
  *Numerical Methods for Delay Differential Equations*, 2003, ch. 4);
* rate schedules and antagonist schedules enter as exact step averages.

The method is second order for smooth dynamics (``tests/test_fluid.py``
measures it against a ``dt/8`` reference). At a kink inside a step (an
arrival rate that jumps at ``t + d_ij``, ``servers`` or ``max_load`` knees,
the support of a split changing) the local error is ``O(dt^2)`` instead of
``O(dt^3)``: isolated kinks keep the global order 2, with a constant that
depends on where they fall in their steps. Jumps of the rate at 0
(``constant`` rates) are first order.

DGD-LB's ``step`` maps to the loop gain of the linearised flow as
``K = step * lambda_i * d/dx[1/mu_j'](x*)`` (:func:`dgdlb_critical_step`,
:func:`critical_gain`, :func:`loop_root`); its ticks add no delay to first
order in ``interval`` (holding an update for an interval lags by half of
it, applying the update at once leads by as much), which the fluid model
confirms: the measured critical step is within 1% of the ``T = 2d``
prediction for ``interval <= d``.

The default ``dt`` (:func:`default_time_step`) is the smallest of: ``0.1 / r``
with ``r`` the fastest backend's relaxation rate (``mu_j'(0)``, or a secant
where that is infinite); ``sample_interval / 10``; ``horizon / 100``; and, for
the continuous (argmin) routers, half the smallest positive observation delay
(the loop delay ``2 d`` spans 4 steps: the herding oscillations live on that
scale) or, if some loop has no delay, ``1/R`` (above). Static splits and DGD-LB
need no delay resolution: their arrivals are integrated exactly and their
observations interpolated at any ``dt``. Last, ``dt`` is shortened so that a
router's ``interval`` is a whole number of steps.

Initial condition: ``x0 = None`` is the simulator's: empty backends, nothing
in transit, and ``x(t < 0) = 0``. A given ``x0`` (an array, or
``"optimum"``) is a constant history: the system is taken to have been at
``x0`` with the router's initial split for ``t < 0``, so requests sent before
0 are in transit at 0.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .files import write_json, write_parquet
from .errors import ScenarioError, unknown
from .rates import RateFamily

if TYPE_CHECKING:  # pandas and scipy load on first use: importing lbsim stays quick
    import pandas as pd

__all__ = [
    "FLUID_ROUTERS",
    "FluidResult",
    "FluidRouter",
    "RateVector",
    "critical_gain",
    "default_time_step",
    "dgdlb_critical_step",
    "fluid",
    "loop_root",
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
        whole = len(self._groups) == 1 and np.array_equal(self._groups[0][1], np.arange(self.num_backends))
        if whole and self._groups[0][3]:  # one family, formulas vectorise: call it directly
            cls, _, params, _ = self._groups[0]
            self.value = partial(cls._value, params)
            self.derivative = partial(cls._derivative, params)
        # Per group: its backends and the bound formulas (or None: member by member).
        self._methods = {
            method: [
                (idx, partial(getattr(cls, method), params) if vectorised else None)
                for cls, idx, params, vectorised in self._groups
            ]
            for method in ("_value", "_derivative")
        }

    def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        out = np.empty_like(x)
        for idx, formula in self._methods[method]:
            xs = x[..., idx]
            if formula is not None:
                out[..., idx] = formula(xs)
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
                got = getattr(cls, method)(params, x)
                if np.shape(got) != x.shape:
                    return False
                want = np.stack([getattr(r, method)(probe) for r in members], axis=1)
                if not np.allclose(got, want, rtol=1e-12, atol=0.0, equal_nan=True):
                    return False
    except Exception:  # noqa: BLE001  (any failure means: evaluate member by member)
        return False
    return True


# ---------------------------------------------------------------------------------------
# Projections and tie splits
# ---------------------------------------------------------------------------------------
def project_rows(
    v: np.ndarray, lower: np.ndarray | None = None, finite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
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
    Rows up to :data:`SORT_BELOW` long are sorted instead (fewer numpy calls).
    ``finite=True`` promises no ``-inf`` (excluded entries at :data:`EXCLUDED`
    instead), which saves a pass.
    """
    if v.shape[1] <= SORT_BELOW:
        return _project_sorted(v)
    if not finite:  # finite, so that products with a 0/1 mask are 0 off the support
        v = np.maximum(v, EXCLUDED)
    theta = v.max(axis=1) - 1.0  # S(max v - 1) >= 1: always a lower bound
    if lower is not None:
        theta = np.maximum(theta, lower)
    count = None
    for _ in range(4 * v.shape[1] + 4):
        active = v > theta[:, None]
        n = np.count_nonzero(active, axis=1)
        theta = (np.einsum("ij,ij->i", v, active) - 1.0) / n
        if count is not None and (n == count).all():
            break
        count = n
    else:  # pragma: no cover  (finite termination; kept as a guard against rounding loops)
        raise RuntimeError("simplex projection did not converge")
    p = v - theta[:, None]
    return np.maximum(p, 0.0, out=p), theta


#: a finite stand-in for -inf: an entry the projection must leave out
EXCLUDED = -1e300
#: rows up to this long are projected by sorting (fewer numpy calls); longer ones by Newton's method
SORT_BELOW = 32


def _project_sorted(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Duchi et al.'s sort-based projection (-inf entries sort last and never enter the support)."""
    u = np.sort(v, axis=1)[:, ::-1]
    css = np.cumsum(u, axis=1)
    rows, k = _ranges(v.shape)
    rho = np.add.reduce(u * k > css - 1.0, axis=1)  # the condition holds on a prefix (Duchi et al., Lemma 2)
    theta = (css[rows, rho - 1] - 1.0) / rho
    p = v - theta[:, None]
    return np.maximum(p, 0.0, out=p), theta


@lru_cache(maxsize=16)
def _ranges(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(shape[0]), np.arange(1, shape[1] + 1)


def support_bound(v: np.ndarray, support: np.ndarray, finite: bool = False) -> np.ndarray:
    """``(sum_{j in S_i} v_ij - 1) / |S_i|``: a lower bound of the projection's ``theta`` (see :func:`project_rows`).

    ``S_i`` must be within the finite entries of ``v``; an empty ``S_i`` gives ``-inf`` (no bound).
    """
    n = np.count_nonzero(support, axis=1)
    total = np.einsum("ij,ij->i", v if finite else np.maximum(v, EXCLUDED), support)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total - 1.0) / n, -np.inf)


def tie_split(cost: np.ndarray, allowed: np.ndarray, eps: float, support: np.ndarray | None = None) -> np.ndarray:
    """The band-regularised argmin of each row of ``cost`` over ``allowed``: ``Proj_simplex(-(c - min c)/eps)``.

    ``allowed=None`` allows every entry. ``eps = 0`` is the plain argmin with exact ties shared equally (the limit
    of the band). ``support`` (optional) is the previous split's support, a
    warm start for the projection.
    """
    c = cost if allowed is None else np.where(allowed, cost, np.inf)
    best = c.min(axis=1, keepdims=True)
    if eps <= 0.0:
        tied = c <= best
        return tied / tied.sum(axis=1, keepdims=True)
    v = (best - c) / eps  # 0 at the best, -inf where not allowed
    lower = support_bound(v, support) if support is not None and v.shape[1] > SORT_BELOW else None
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
    """A router's fluid analogue: a split ``(F, B)`` as a function of time and what frontends observe.

    What a frontend observes of backend ``j`` is a *signal* ``h_j(x_j)`` of its
    load (the load itself, or a marginal cost), read with the delay of the
    telemetry: ``h_j(x_j(t - d_ij))``. The integrator evaluates ``h`` once per
    stored state (B numbers) and interpolates the delayed signal, which is
    ``h`` of the interpolated load to second order in ``dt`` and costs
    ``F * B`` times less than evaluating ``h`` on every edge.

    * static routers implement :meth:`initial_split` only;
    * ``continuous`` routers implement :meth:`split`, called at every stage
      with the observed signal (F, B);
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

    def signal(self, x: np.ndarray) -> np.ndarray:
        """``h_j(x[..., j])``: what the router reads of a backend at load ``x`` (default: the load)."""
        return x

    def initial_split(self) -> np.ndarray:
        return self.model.connect / self.model.connect.sum(axis=1, keepdims=True)

    def split(self, t: float, observed: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def tick(self, t: float, observed: np.ndarray, p: np.ndarray) -> np.ndarray:
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
    """``argmin_j offset_ij + h_j(xhat_ij)``, regularised by the tolerance band (module docstring)."""

    continuous = True
    #: add the round trip 2 d_ij to the cost
    network_aware: bool = False

    def __init__(self, name, params, model):
        super().__init__(name, params, model)
        self.offset = model.round_trip if self.network_aware else None
        self.band = model.band
        costs = self.cost(np.broadcast_to(model.reference_load, model.connect.shape))[model.connect]
        costs = costs[np.isfinite(costs) & (costs > 0)]
        self.cost_scale = float(np.median(costs)) if len(costs) else 1.0
        self.eps = self.band * self.cost_scale
        self._support: np.ndarray | None = None

    def cost(self, xhat: np.ndarray) -> np.ndarray:
        """``offset_ij + h_j(xhat_ij)`` on loads (F, B)."""
        h = self.signal(xhat)
        return h + self.offset if self.offset is not None else h

    def initial_split(self) -> np.ndarray:
        return self.split(0.0, np.broadcast_to(self.signal(self.model.x0), self.model.connect.shape))

    def split(self, t, observed):
        cost = observed + self.offset if self.offset is not None else observed
        p = tie_split(cost, self.model.allowed, self.eps, self._support)
        self._support = p > 0.0
        return p

    def stiffness(self) -> float:
        """``Lambda * max |dc/dx| / eps`` over loads between 0 and twice the reference."""
        if self.eps <= 0.0:
            return math.inf
        model = self.model
        slopes = []
        for s in (0.0, 0.5, 1.0, 2.0):
            x = s * model.reference_load
            h = 1e-6 * np.maximum(model.reference_load, 1e-9)
            slope = np.abs(self.signal(x + h) - self.signal(x)) / h
            slopes.append(np.where(np.isfinite(slope), slope, 0.0).max())
        return float(model.demand.sum() * max(slopes) / self.eps)


def _marginal_cost(model: _Model, x: np.ndarray, cap: float) -> np.ndarray:
    """``min(1/mu_j'(x), cap)``, the discrete routers' capped marginal cost (seconds)."""
    return np.minimum(1.0 / model.rates.derivative(x), cap)


@register_fluid
class GMSR(TieRouter):
    """``gmsr``: flow to ``argmax_j mu_j'(xhat_ij)``; variant ``latency``: ``argmin 2 d_ij + 1/mu_j'(xhat_ij)``.

    Zhang et al., arXiv:2411.17103. The cost is the capped marginal cost
    ``min(1/mu_j', cost_cap)`` (the same order as ``-mu_j'``), so the band is
    relative to the best marginal rate. ``discrete`` is the same rule in the
    fluid limit (``sbar -> 0``).
    """

    names = ("gmsr",)

    def __init__(self, name, params, model):
        self.network_aware = params.variant == "latency"
        super().__init__(name, params, model)

    def signal(self, x):
        return _marginal_cost(self.model, x, self.params.cost_cap)


@register_fluid
class LeastLatency(TieRouter):
    """``least_latency``: ``argmin_j 2 d_ij + xhat_ij / mu_j(xhat_ij)`` (``1/mu_j'(0)`` at 0, its limit)."""

    names = ("least_latency",)
    network_aware = True

    def signal(self, x):
        sojourn = np.where(x > 0.0, x / self.model.rates.value(x), self.model.cost_at_zero)
        return np.minimum(sojourn, 1e300)


@register_fluid
class LeastLoad(TieRouter):
    """``least_load`` and ``jsq``: ``argmin_j xhat_ij`` (``nhat = xhat / sbar`` orders the same)."""

    names = ("least_load", "jsq")


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
        self._shift = self._eta * model.round_trip  # eta * 2 d_ij, the part of the step that never changes

    def signal(self, x):
        return _marginal_cost(self.model, x, self.params.cost_cap)

    def initial_split(self):
        return np.array(_discrete_router(self.name, self.params, self.model).split(), dtype=float)

    def tick(self, t, observed, p):
        model = self.model
        v = p - self._shift
        v -= self._eta * observed
        if model.allowed is not None:
            v[~model.connect] = EXCLUDED
        lower = support_bound(v, p > 0.0, finite=True) if v.shape[1] > SORT_BELOW else None
        return project_rows(v, lower, finite=True)[0]


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
        #: the connect mask, or None when every frontend may use every backend (no masking needed)
        self.allowed = None if self.connect.all() else self.connect
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
        self.prehistory = x0 is not None
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

    @cached_property
    def cost_at_zero(self) -> np.ndarray:
        """``1/mu_j'(0)``: the limit of ``x/mu_j(x)`` at 0 (0 where ``mu_j'(0)`` is infinite)."""
        return 1.0 / self.rates.derivative(np.zeros(self.num_backends))

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
    #: eps = band * typical cost: the argmin routers' tie band in cost units (None for other routers)
    tie_tolerance: float | None
    steps: int
    wall_seconds: float
    x0: np.ndarray = field(repr=False, default=None)

    @cached_property
    def timeseries(self) -> pd.DataFrame:
        import pandas as pd

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
        import pandas as pd

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
        """The optimum's objective at a split, loads at their steady state ``mu_j^{-1}(Lambda_j)`` (inf: overloaded)."""
        split = self.final_split if split is None else split
        flow = self.scenario.demand[:, None] * split
        arrivals = flow.sum(axis=0)
        load = np.array([float(r.inverse(a)) for r, a in zip(self.scenario.service_rates, arrivals)])
        return self.mean_latency(load, split)

    def settling_time(self, load: np.ndarray, tolerance: float = 0.01) -> float:
        """The first sample time from which ``max_j |x_j - load_j| <= tolerance * max_j load_j`` (inf: never).

        "From which": the error stays within the tolerance at every later sample.
        """
        error = np.abs(self.load - np.asarray(load)).max(axis=1) / np.max(np.abs(load))
        outside = np.flatnonzero(error > tolerance)
        if not len(outside):
            return float(self.t[0]) if len(self.t) else math.inf
        return float(self.t[outside[-1] + 1]) if outside[-1] + 1 < len(self.t) else math.inf

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
            "tie_tolerance": self.tie_tolerance,
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
            write_parquet(out / f"{name}.parquet", frame)
        write_json(out / "summary.json", self.summary())
        return out


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
    started = time.perf_counter()
    name, validated, horizon = _prepare(scenario, router, horizon, band, router_params)
    # Rate formulas resolve their limits (k/0, 1/inf) with np.where, as in rates.py.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        model = _Model(scenario, band, x0)
        fluid_router = FLUID_ROUTERS[name](name, validated, model)
        if fluid_router.observes and model.telemetry == "none":
            raise ScenarioError("network.telemetry", f"router '{name}' needs telemetry; 'none' has no fluid model")
        dt = _time_step(model, fluid_router, horizon, dt)
        integrator = _Integrator(model, fluid_router, dt, horizon, record_split)
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
        tie_tolerance=fluid_router.eps if isinstance(fluid_router, TieRouter) else None,
        steps=integrator.n_steps,
        wall_seconds=time.perf_counter() - started,
        x0=model.x0,
    )


def default_time_step(
    scenario, router: str | None = None, horizon: float | None = None, *, band: float = BAND, **router_params
) -> float:
    """The ``dt`` :func:`fluid` would use for these arguments (module docstring), without integrating."""
    name, validated, horizon = _prepare(scenario, router, horizon, band, router_params)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        model = _Model(scenario, band, None)
        return _time_step(model, FLUID_ROUTERS[name](name, validated, model), horizon, None)


def _prepare(scenario, router, horizon, band, router_params):
    """Check the arguments: the router's name and validated parameters, and the horizon."""
    from .routers.base import validate_params

    name = router or scenario.router.name
    if name not in FLUID_ROUTERS:
        raise ScenarioError("router", unknown("router with a fluid model", name, FLUID_ROUTERS))
    params = dict(scenario.router.params) if name == scenario.router.name else {}
    params.update(router_params)
    validated = validate_params(name, params)
    if not (band >= 0.0 and math.isfinite(band)):
        raise ScenarioError("band", f"must be finite and >= 0, got {band}")
    horizon = float(scenario.simulation.horizon if horizon is None else horizon)
    if not horizon > 0:
        raise ScenarioError("horizon", f"must be > 0, got {horizon}")
    return name, validated, horizon


def _time_step(model: _Model, router: FluidRouter, horizon: float, dt: float | None) -> float:
    """The default step (module docstring), then shortened to put a router's ticks on the grid."""
    sample = model.scenario.simulation.sample_interval
    if dt is None:
        candidates = [sample / 10.0, horizon / 100.0]
        r = model.rate_scale()
        if r > 0:
            candidates.append(0.1 / r)
        if router.continuous:
            # The split follows the observed state continuously: resolve the loop delay 2d (4 steps), or,
            # where a loop has no delay, the split's own reaction rate (explicit methods need R dt < 2).
            lags = model.observation[model.connect]
            positive = lags[lags > 0]
            if len(positive):
                candidates.append(float(positive.min()) / 2.0)
            if len(positive) < len(lags) and (stiff := router.stiffness()) > 0:
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
            # The indices for each ring position, precomputed when that is not too much memory.
            if self.ring_len * F * B <= 4_000_000 and not self.periodic:
                offsets = (np.arange(self.ring_len) + self.ring_len) * B
                self._obs_a_at = [self._obs_a + o for o in offsets]
                self._obs_b_at = [self._obs_b + o for o in offsets] if self._obs_interp else None
            else:
                self._obs_a_at = None
        else:
            self.ring_len = 1
        # The ring holds the router's signal h(x) of each stored state (what frontends observe).
        self.ring = np.empty((2 * self.ring_len, B))
        self.ring[:] = router.signal(model.x0) if router.observes else model.x0
        self._signal = router.signal if router.observes else None

        # Arrivals: a running rate (B,) plus increments scheduled for future steps. A change of the
        # sent flow at step k adds (1 - phi) of it at step k + m and phi at k + m + 1 (d = (m + phi) dt):
        # one sparse (or, when small, dense) matrix maps a flow change (F*B,) to its increments.
        import scipy.sparse

        self.transit = _Lags.of(model.transit, dt)
        depth = self.transit.steps + 2
        rows = (self.transit.whole * B + np.arange(B)[None, :]).reshape(-1)
        cols = np.arange(F * B)
        frac = self.transit.fraction.reshape(-1)
        data = np.concatenate([1.0 - frac, frac])
        keep = data > 0
        matrix = scipy.sparse.csr_matrix(
            (data[keep], (np.concatenate([rows, rows + B])[keep], np.concatenate([cols, cols])[keep])),
            shape=(depth * B, F * B),
        )
        self._spread = matrix.toarray() if depth * B * F * B <= 250_000 else matrix
        self._depth = depth
        # Increments live in a window of rows (step - base); it slides when it runs out, so every push
        # adds to one contiguous block instead of wrapping around a ring.
        self._window = np.zeros((4 * depth + 8, B))
        self._base = 0

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
        if self._signal is None:
            return
        h = self._signal(x)
        s = k % self.ring_len
        self.ring[s] = h
        self.ring[s + self.ring_len] = h

    def observe(self, k: int) -> np.ndarray:
        """The observed signal at ``t_k``: ``h_j(x_j)`` at ``t_k - lag_ij``, linearly interpolated (F, B)."""
        flat = self.ring.reshape(-1)
        if self.periodic:
            return self._observe_periodic(k, flat)
        if self._obs_a_at is not None:
            slot = k % self.ring_len
            xa = flat.take(self._obs_a_at[slot])
            if not self._obs_interp:
                return xa
            xb = flat.take(self._obs_b_at[slot])
        else:
            base = (k % self.ring_len + self.ring_len) * self.model.num_backends
            xa = flat.take(self._obs_a + base)
            if not self._obs_interp:
                return xa
            xb = flat.take(self._obs_b + base)
        xb -= xa
        xb *= self.obs.fraction
        xb += xa
        return xb

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
        start = k - self._base
        self._window[start : start + self._depth] += (self._spread @ delta.reshape(-1)).reshape(self._depth, -1)

    def _slide(self, n: int) -> None:
        """Make row 0 of the window step ``n`` (rows before it have been consumed)."""
        shift = n - self._base
        kept = len(self._window) - shift
        self._window[:kept] = self._window[shift:]
        self._window[kept:] = 0.0
        self._base = n

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        model, router, dt = self.model, self.router, self.dt
        lam = model.demand
        x = model.x0.copy()
        self._store(0, x)
        p = router.initial_split()
        scale = self.lam_initial
        if model.prehistory:  # a constant history: the initial split has been in use before 0
            sent = (scale * lam)[:, None] * p
            rate = sent.sum(axis=0)
        else:
            sent = np.zeros_like(p)
            rate = np.zeros(model.num_backends)
        continuous, tick = router.continuous, router.tick_interval
        tick_every = round(tick / dt) if tick is not None else 0
        # When every observation lag is at least a step, the split at t_{n+1} reads only stored states,
        # so the one computed for the corrector is the next step's split: one evaluation per step.
        reuse = continuous and bool((self.obs.whole[model.connect] >= 1).all())
        p_next = None
        lam_events, capacity_events = self.lam_events, self.capacity_events
        multiplier = self.multiplier
        departure, push, observe, store = model.departure, self.push, self.observe, self._store
        window, room = self._window, len(self._window) - self._depth - 1
        sample_step, sample_frac = self._sample_step, self._sample_frac
        next_sample, n_samples = 0, len(sample_step)
        changed = True
        for n in range(self.n_steps):
            if n - self._base >= room:
                self._slide(n)
            if n in lam_events:
                scale = lam_events[n]
                changed = True
            if n in capacity_events:
                idx, values = capacity_events[n]
                multiplier[idx] = values
            if continuous:
                p = p_next if p_next is not None else router.split(n * dt, observe(n))
                changed = True
            elif tick_every and n and n % tick_every == 0:
                p = router.tick(n * dt, observe(n), p)
                changed = True
            if changed:
                flow = (scale * lam)[:, None] * p
                push(flow - sent, n)
                sent = flow
                changed = False
            row = n - self._base
            arrivals = rate + window[row]
            mu_now = departure(x, multiplier)
            predictor = x + dt * (arrivals - mu_now)
            np.maximum(predictor, 0.0, out=predictor)
            if continuous:
                if not reuse:
                    store(n + 1, predictor)
                p_next = router.split((n + 1) * dt, observe(n + 1))
                flow = (0.5 * scale * lam)[:, None] * (p + p_next)
                push(flow - sent, n)
                sent = flow
                arrivals = rate + window[row]
                if not reuse:
                    p_next = None
            x_next = x + dt * (arrivals - 0.5 * (mu_now + departure(predictor, multiplier)))
            np.maximum(x_next, 0.0, out=x_next)
            store(n + 1, x_next)
            while next_sample < n_samples and sample_step[next_sample] == n:
                f = sample_frac[next_sample]
                self.sample_load[next_sample] = x if f == 0.0 else x + f * (x_next - x)
                if self.sample_split is not None:
                    self.sample_split[next_sample] = p
                next_sample += 1
            rate = arrivals
            x = x_next
        if continuous:  # the split at the final state, as the other routers' is
            p = router.split(self.n_steps * dt, observe(self.n_steps))
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
    import scipy.optimize

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
    ``2d``.
    """
    a = float(rate.derivative(load))
    h = 1e-6 * max(load, 1e-6)
    slope = (1.0 / float(rate.derivative(load + h)) - 1.0 / float(rate.derivative(load - h))) / (2 * h)
    k_crit, _ = critical_gain(a, 2.0 * delay)
    return k_crit / (demand * slope)
