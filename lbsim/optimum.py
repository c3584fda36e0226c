"""The centralized optimal static split (docs/model.md section 2).

With flows ``f_ij = lambda_i p_ij`` and backend arrival rates
``Lambda_j = sum_i f_ij`` the problem is

    minimise  (1/Lambda) [ sum_ij f_ij 2 d_ij + sum_j G_j(Lambda_j) ],   G_j = mu_j^{-1}
    s.t.      sum_j f_ij = lambda_i,  f_ij >= 0,  f_ij = 0 off connect[i],
              Lambda_j < sup mu_j.

``G_j(Lambda)`` is backend ``j``'s steady-state load; by Little's law
``G_j(Lambda_j) / Lambda_j`` is its mean sojourn, so the objective is the mean
latency of a unit of work. ``G_j`` is convex and increasing (``mu_j`` is
concave and increasing) with derivative

    g_j(Lambda) = G_j'(Lambda) = 1 / mu_j'(mu_j^{-1}(Lambda)),

the marginal serving cost of one more unit of flow. The problem is convex and
its KKT conditions read: with backend prices ``pi_j = g_j(Lambda_j) + beta_j``,
every edge a frontend uses costs the same ``2 d_ij + pi_j = nu_i`` and no
connected edge is cheaper. ``beta_j >= 0`` is the shadow price of the
capacity constraint; it is nonzero only for a backend held at its capacity,
which happens only for families whose marginal cost stays finite up to the
supremum (``constant``, ``servers``). The strict constraint is enforced as
``Lambda_j <= (1 - margin) sup mu_j``.

Method (measured, see ``benchmarks/bench_optimum.py``):

1. *Feasibility.* A capacity-proportional split is scaled until every
   backend is strictly below capacity; failing that, the linear program
   ``min theta s.t. Lambda_j <= theta cap_j`` (HiGHS) decides. ``theta >= 1``
   means no split serves the demand, and the bottleneck (a Hall violation: a
   set of frontends whose demand is not below the capacity of all the
   backends they reach, the source side of a minimum cut) is reported as a
   :class:`~lbsim.errors.ScenarioError`.
2. *Primal-dual interior point method* with Mehrotra's predictor-corrector
   (Nocedal and Wright, Numerical Optimization, 2nd ed., 2006, section 14.2),
   from that strictly feasible split, to a duality gap of 1e-13 of the mean
   cost (20-40 iterations whatever the size). Its Newton matrix is
   ``diag(s/f) + S^T diag(q) S`` on the edges (``S`` sums columns, ``q_j =
   G_j'' + beta_j/u_j``); by the Woodbury identity its reduced system on the
   row multipliers is an ``F x F`` Laplacian plus a diagonal, so a step costs
   ``O(F^2 B)``. ``G''`` is not part of the rate interface; it is a central
   difference of ``g``, which only shapes the Newton direction: residuals are
   always evaluated with the exact ``g``.
3. *Polish.* An edge is kept when its relative flow exceeds its relative
   reduced cost, a backend is held at capacity when its capacity price exceeds
   its relative slack; an active-set Newton method on the kept edges then
   makes the used edges' costs equal to rounding (edges leave or enter, held
   backends are released, as the KKT conditions demand). The prices ``pi_j``
   are read off the used edges (a spanning tree per connected component) and
   ``nu_i = min_j 2 d_ij + pi_j``.

Ties between edges of equal cost (zero delays, identical linear or constant
backends) have many optimal splits; the interior point method returns one
near the analytic centre of the optimal face, which is deterministic and
spreads flow over the tied edges.

Limits. A ``power`` backend with ``a`` close to 1 has a marginal cost
``g(Lambda) ~ Lambda^((1-a)/a)`` that starts at 0 and rises so steeply that
its optimal flow can be 1e-10 to 1e-300 of the demand. Flows below 1e-20 of a
frontend's demand are set at the end from the prices (``g^{-1}`` through
``derivative_inverse``); below 1e-300 they underflow and the backend reports
the marginal cost ``g(0) = 0``, which undercuts every frontend: a violation no
floating-point flow removes (its effect on the objective is nil). Between
those, with ``a`` above about 0.9, the KKT conditions may be met only to about
1e-5 relative. Measured on random scenarios of up to 30 x 120 (tests and
``benchmarks/bench_optimum.py``): with ``a <= 0.9`` and every other family,
violations stay below 1e-9.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from typing import overload as _variant

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.sparse.csgraph

from .errors import ScenarioError
from .overload import Overload, bottleneck, check_capacity, saturating_routing
from .rates import RateFamily
from .threads import blas_threads

__all__ = ["Optimum", "Overload", "kkt_violation", "optimum", "solve", "solve_overload"]

# Routing entries below this are "unused" for the KKT statement (as in the tests).
USED = 1e-9
# The interior point method stops when its duality gap is this fraction of the
# mean cost; the polish does the rest.
IPM_GAP = 1e-13
# Flows below this fraction of a frontend's demand vanish in its row sum.
TINY = 1e-20


@dataclass(frozen=True, eq=False)
class Optimum:
    """The centralized optimum of a scenario.

    ``routing[i, j]`` is the split ``p_ij`` (rows sum to 1, zero off
    ``connect``), ``flow[j]`` is ``Lambda_j``, ``load[j] = mu_j^{-1}(Lambda_j)``,
    ``marginal_cost[j] = 1/mu_j'(load[j])`` (seconds), ``capacity_price[j]`` the
    shadow price of backend ``j``'s capacity (zero unless it is held at
    capacity), and ``frontend_cost[i] = nu_i = min_j 2 d_ij + marginal_cost[j]
    + capacity_price[j]``. ``mean_latency = mean_network + mean_sojourn`` is the
    objective: the mean latency of a unit of work.
    """

    routing: np.ndarray
    flow: np.ndarray
    load: np.ndarray
    marginal_cost: np.ndarray
    capacity_price: np.ndarray
    frontend_cost: np.ndarray
    mean_latency: float
    mean_network: float
    mean_sojourn: float
    iterations: int
    seconds: float

    @property
    def price(self) -> np.ndarray:
        """``pi_j = marginal_cost[j] + capacity_price[j]``: the full marginal cost of backend ``j``."""
        return self.marginal_cost + self.capacity_price

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: arrays as (nested) lists, non-finite numbers as ``None``."""

        def clean(a: Any) -> Any:
            if isinstance(a, np.ndarray):
                return [clean(v) for v in a.tolist()] if a.ndim else clean(a.item())
            if isinstance(a, list):
                return [clean(v) for v in a]
            if isinstance(a, float) and not math.isfinite(a):
                return None
            return a

        return {
            "routing": clean(self.routing),
            "flow": clean(self.flow),
            "load": clean(self.load),
            "marginal_cost": clean(self.marginal_cost),
            "capacity_price": clean(self.capacity_price),
            "frontend_cost": clean(self.frontend_cost),
            "mean_latency": clean(float(self.mean_latency)),
            "mean_network": clean(float(self.mean_network)),
            "mean_sojourn": clean(float(self.mean_sojourn)),
            "iterations": int(self.iterations),
            "seconds": float(self.seconds),
        }


@_variant
def optimum(scenario: Any, overload: Literal[False] = False, **options: Any) -> Optimum: ...
@_variant
def optimum(scenario: Any, overload: Literal[True], **options: Any) -> Overload: ...
def optimum(scenario: Any, overload: bool = False, **options: Any) -> Optimum | Overload:
    """The optimum of a scenario: reads ``demand``, ``delay``, ``connect`` and ``service_rates``.

    With ``overload=True``, the overload optimum (:func:`solve_overload`),
    defined whether or not the demand can be served; the capacities are the
    scenario's ``supremum`` (mu at a backend's load limit where it has one).
    """
    if not all(hasattr(scenario, name) for name in ("demand", "delay", "connect", "service_rates")):
        raise ScenarioError(
            "scenario",
            f"must be a Scenario (lbsim.load_scenario(path) reads one), got {type(scenario).__name__}",
        )
    F, B = np.shape(scenario.connect)
    fl = getattr(scenario, "frontend_label", None)
    bl = getattr(scenario, "backend_label", None)
    # (a Scenario names a backend without mu; any object with ``service_rates`` will do)
    rates = scenario.rate_functions("the optimum") if hasattr(scenario, "rate_functions") else scenario.service_rates
    flabels = [fl(i) for i in range(F)] if callable(fl) else None
    blabels = [bl(j) for j in range(B)] if callable(bl) else None
    if overload:
        sup = getattr(scenario, "supremum", None)
        capacity = np.array([sup(j) for j in range(B)], dtype=float) if callable(sup) else None
        return solve_overload(
            rates, scenario.demand, scenario.connect, capacity,
            frontend_labels=flabels, backend_labels=blabels, **options,
        )  # fmt: skip
    return solve(
        rates, scenario.demand, scenario.delay, scenario.connect,
        frontend_labels=flabels, backend_labels=blabels, **options,
    )  # fmt: skip


@blas_threads()  # one BLAS thread: faster on small machines (lbsim/threads.py)
def solve(
    rates: Sequence[RateFamily],
    demand: np.ndarray,
    delay: np.ndarray,
    connect: np.ndarray,
    tol: float = 1e-9,
    *,
    margin: float = 1e-9,
    frontend_labels: Sequence[str] | None = None,
    backend_labels: Sequence[str] | None = None,
) -> Optimum:
    """The optimal static split for ``demand`` (F,), one-way ``delay`` d_ij (F, B), ``connect`` (F, B).

    ``rates[j]`` is backend ``j``'s service rate. ``tol`` is the relative KKT
    tolerance of the result: every edge with ``p_ij > 1e-9`` costs ``2 d_ij +
    pi_j`` within ``tol * nu_i`` of its frontend's cheapest edge (see
    :func:`kkt_violation`). ``margin`` is the relative headroom kept below each
    capacity (``Lambda_j <= (1 - margin) sup mu_j``). Labels name frontends and
    backends in errors. Raises :class:`ScenarioError` (key ``frontends``) when
    no split keeps every backend below its capacity.
    """
    start = time.perf_counter()
    demand = np.asarray(demand, dtype=float)
    delay = np.asarray(delay, dtype=float)
    connect = np.asarray(connect, dtype=bool)
    F, B = _check_inputs(rates, demand, delay, connect)
    flabel = list(frontend_labels) if frontend_labels is not None else [str(i) for i in range(F)]
    blabel = list(backend_labels) if backend_labels is not None else [str(j) for j in range(B)]
    backends = _Backends(rates)
    cost = np.where(connect, 2.0 * delay, 0.0)

    # Work in normalised flows (total demand 1); frontends without demand and
    # backends nobody can reach are left out of the optimisation.
    total = float(demand.sum())
    rows = np.flatnonzero(demand > 0)
    cols = np.flatnonzero(connect[rows].any(axis=0))
    mask = connect[np.ix_(rows, cols)]
    lam = demand[rows] / total
    c = cost[np.ix_(rows, cols)]
    cap = backends.capacity[cols] * (1.0 - margin) / total
    sub = _Scaled(backends, cols, total)

    f0 = _initial_flow(lam, cap, mask, rows, cols, demand, backends.capacity, flabel, blabel)
    f, reduced, nu, beta, room, newton = _interior_point(c, mask, lam, cap, f0, sub, IPM_GAP)
    with np.errstate(invalid="ignore", over="ignore"):
        # An iterate past a capacity has non-finite prices and scores as inf.
        f, nu, beta, polish = _polish(c, mask, lam, cap, f, reduced, nu, beta, room, sub, tol)

    # Back to the full shape and physical units.
    routing = np.zeros((F, B))
    routing[np.ix_(rows, cols)] = f / lam[:, None]
    routing[rows] /= routing[rows].sum(axis=1, keepdims=True)
    flow = np.where(demand > 0, demand, 0.0) @ routing
    beta_full = np.zeros(B)
    beta_full[cols] = beta
    load = backends.load(flow)
    marginal = backends.marginal(flow)
    price = marginal + beta_full
    reachable = np.where(connect, cost + price[None, :], np.inf)
    frontend_cost = reachable.min(axis=1)
    for i in np.flatnonzero(demand <= 0):
        # No flow: any split is optimal; send it to the cheapest edges.
        cheapest = np.isclose(reachable[i], frontend_cost[i], rtol=1e-12, atol=0.0) & connect[i]
        routing[i] = cheapest / cheapest.sum()

    network = float((demand[:, None] * routing * cost).sum()) / total
    sojourn = float(load.sum()) / total
    return Optimum(
        routing=routing,
        flow=flow,
        load=load,
        marginal_cost=marginal,
        capacity_price=beta_full,
        frontend_cost=frontend_cost,
        mean_latency=network + sojourn,
        mean_network=network,
        mean_sojourn=sojourn,
        iterations=newton + polish,
        seconds=time.perf_counter() - start,
    )


def solve_overload(
    rates: Sequence[RateFamily],
    demand: np.ndarray,
    connect: np.ndarray,
    capacity: np.ndarray | None = None,
    tol: float = 1e-9,
    *,
    frontend_labels: Sequence[str] | None = None,
    backend_labels: Sequence[str] | None = None,
) -> Overload:
    """The overload optimum (GMSR's overload theorem, Zhang et al., arXiv:2411.17103; docs/model.md section 2).

    Among routings of the whole ``demand`` (F,) over ``connect`` (F, B): the
    greatest throughput ``sum_j min(Lambda_j, cap_j)``, then the most backends
    kept stable (``Lambda_j < cap_j``), then the least total steady-state load
    ``sum_{j stable} mu_j^{-1}(Lambda_j)`` of the stable ones. The first two
    are the maximum flow and its minimum cut (:mod:`lbsim.overload`); the
    third is :func:`solve` on the stable sub-problem (the frontends off the
    cut and the stable backends) without delays, whose objective is then the
    total load. Its KKT conditions hold on that sub-problem: the backends a
    frontend uses share the least marginal cost ``1/mu_j'(x_j)``.
    ``capacity`` (B,) defaults to ``sup mu_j``. Not an error when the demand
    can be served: every backend is then stable (``overloaded`` is False).
    """
    demand = np.asarray(demand, dtype=float)
    connect = np.asarray(connect, dtype=bool)
    F, B = _check_inputs(rates, demand, np.zeros(connect.shape), connect)
    cap = np.array([float(r.supremum) for r in rates]) if capacity is None else np.asarray(capacity, dtype=float)
    check_capacity(cap, demand, connect)
    flabel = list(frontend_labels) if frontend_labels is not None else [str(i) for i in range(F)]
    blabel = list(backend_labels) if backend_labels is not None else [str(j) for j in range(B)]
    neck = bottleneck(demand, cap, connect)
    stable = neck.stable
    routing = np.zeros((F, B))
    load, marginal, beta = np.full(B, np.nan), np.full(B, np.nan), np.full(B, np.nan)
    # The stable sub-problem: strictly feasible, so the optimum's solver applies as it is.
    rows, cols = np.flatnonzero(~neck.cut_frontends), np.flatnonzero(stable)
    if rows.size and demand[rows].sum() > 0:
        sub = solve(
            [rates[int(j)] for j in cols],
            demand[rows],
            np.zeros((rows.size, cols.size)),
            connect[np.ix_(rows, cols)],
            tol,
            frontend_labels=[flabel[i] for i in rows],
            backend_labels=[blabel[j] for j in cols],
        )
        routing[np.ix_(rows, cols)] = sub.routing
        load[cols], marginal[cols], beta[cols] = sub.load, sub.marginal_cost, sub.capacity_price
    else:
        if rows.size:  # frontends without demand: any split of nothing
            reach = connect[np.ix_(rows, cols)]
            routing[np.ix_(rows, cols)] = reach / reach.sum(axis=1, keepdims=True)
        load[cols] = [float(rates[int(j)].inverse(0.0)) for j in cols]
        marginal[cols] = _Backends([rates[int(j)] for j in cols]).marginal(np.zeros(cols.size))
        beta[cols] = 0.0
    # The cut's source side fills the unstable backends and sends them its excess.
    rows, cols = np.flatnonzero(neck.cut_frontends), np.flatnonzero(~stable)
    if rows.size:
        block = np.ix_(rows, cols)
        routing[block] = saturating_routing(neck.flow[block], demand[rows], cap[cols], connect[block])
    flow = demand @ routing
    served = np.where(stable, flow, cap)
    return Overload(
        overloaded=bool((~stable).any()),
        throughput=neck.throughput,
        demand=float(demand.sum()),
        stable_backends=np.flatnonzero(stable),
        unstable_backends=np.flatnonzero(~stable),
        routing=routing,
        flow=flow,
        served=served,
        load=load,
        total_load=float(load[stable].sum()),
        marginal_cost=marginal,
        capacity_price=beta,
    )


def kkt_violation(opt: Optimum, delay: np.ndarray, connect: np.ndarray, used: float = USED) -> float:
    """The largest relative excess ``(2 d_ij + pi_j - nu_i) / nu_i`` over edges with ``p_ij > used``.

    With ``nu_i = min_j 2 d_ij + pi_j`` no connected edge is cheaper than
    ``nu_i``, so this one number measures the KKT conditions.
    """
    connect = np.asarray(connect, dtype=bool)
    cost = np.where(connect, 2.0 * np.asarray(delay, dtype=float) + opt.price[None, :], np.inf)
    return _excess(cost, opt.routing > used)


def _excess(cost: np.ndarray, used: np.ndarray) -> float:
    """Max over used edges of ``(cost - nu_i) / nu_i``, ``nu_i`` the row minimum.

    A frontend whose cheapest edge costs next to nothing (no delay to a backend
    whose marginal cost starts at 0) is measured against 1e-9 of the largest
    ``nu`` instead: relative to ~0 every rounding error would be infinite.
    """
    nu = cost.min(axis=1)
    finite = np.isfinite(nu)
    top = float(np.abs(nu[finite]).max(initial=0.0))
    scale = np.maximum(np.abs(nu), max(1e-9 * top, 1e-300))
    with np.errstate(invalid="ignore"):
        excess = np.where(used, (cost - nu[:, None]) / scale[:, None], 0.0)
    return float(np.nan_to_num(excess, nan=np.inf).max(initial=0.0))


# --------------------------------------------------------------------------
# Inputs and rate evaluation
# --------------------------------------------------------------------------


def _check_inputs(
    rates: Sequence[RateFamily], demand: np.ndarray, delay: np.ndarray, connect: np.ndarray
) -> tuple[int, int]:
    if demand.ndim != 1:
        raise ScenarioError("frontends", f"demand must be a vector, got shape {demand.shape}")
    F, B = demand.size, len(rates)
    if F == 0 or B == 0:
        raise ScenarioError("frontends" if F == 0 else "backends", "needs at least one entry")
    if delay.shape != (F, B):
        raise ScenarioError("network.delay", f"must be {F} x {B}, got shape {delay.shape}")
    if connect.shape != (F, B):
        raise ScenarioError("network.connect", f"must be {F} x {B}, got shape {connect.shape}")
    if not np.all(np.isfinite(demand)) or np.any(demand < 0):
        raise ScenarioError("frontends", "rates must be finite and >= 0")
    if demand.sum() <= 0:
        raise ScenarioError("frontends", "total demand is zero: the optimum is undefined")
    if not np.all(np.isfinite(delay[connect])) or np.any(delay[connect] < 0):
        raise ScenarioError("network.delay", "must be finite and >= 0")
    lonely = np.flatnonzero(~connect.any(axis=1))
    if lonely.size:
        raise ScenarioError(f"network.connect[{lonely[0]}]", "frontend has no usable backend")
    return F, B


class _Backends:
    """Vectorised ``G``, ``g``, ``G''`` and ``g^{-1}`` over the B rate families.

    A rate call costs tens of microseconds, so one call per backend per
    evaluation would dominate the solver at 1000 backends. Backends of the same
    family are therefore evaluated as one *stacked* family whose parameters are
    arrays (``model_construct``; the families are elementwise numpy code). Each
    method is checked against the individual families once; a method that
    does not stack identically is called backend by backend.
    """

    METHODS = ("value", "derivative", "inverse", "derivative_inverse")

    def __init__(self, rates: Sequence[RateFamily]):
        self.rates = list(rates)
        self.capacity = np.array([float(r.supremum) for r in self.rates])
        by_type: dict[type, list[int]] = {}
        for j, r in enumerate(self.rates):
            by_type.setdefault(type(r), []).append(j)
        self.groups = []
        for cls, members in by_type.items():
            family = [self.rates[j] for j in members]
            stacked, methods = _stack(cls, family) if len(members) > 1 else (None, set())
            self.groups.append((np.array(members), family, stacked, methods))

    def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        for idx, family, stacked, methods in self.groups:
            if method in methods:
                out[idx] = getattr(stacked, method)(x[idx])
            else:
                out[idx] = [getattr(rate, method)(v) for rate, v in zip(family, x[idx])]
        return out

    def load(self, flow: np.ndarray) -> np.ndarray:
        """``x_j = G_j(Lambda_j) = mu_j^{-1}(Lambda_j)``."""
        return self._call("inverse", np.asarray(flow, dtype=float))

    def marginal(self, flow: np.ndarray) -> np.ndarray:
        """``g_j(Lambda_j) = 1/mu_j'(mu_j^{-1}(Lambda_j))``: 0 where ``mu'`` is infinite."""
        rate = self._call("derivative", self.load(flow))
        with np.errstate(divide="ignore"):
            return 1.0 / rate

    def flow_at_price(self, price: np.ndarray) -> np.ndarray:
        """``g_j^{-1}(price) = mu_j((mu_j')^{-1}(1/price))``: the flow whose marginal cost is ``price``."""
        with np.errstate(divide="ignore"):
            return self._call("value", self._call("derivative_inverse", 1.0 / np.asarray(price, dtype=float)))

    def curvature(self, flow: np.ndarray) -> np.ndarray:
        """``G_j''(Lambda_j)`` by a central difference of ``g`` (0 at zero flow)."""
        flow = np.asarray(flow, dtype=float)
        room = np.where(np.isfinite(self.capacity), self.capacity - flow, np.inf)
        h = 1e-5 * np.minimum(flow, room)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (self.marginal(flow + h) - self.marginal(flow - h)) / (2.0 * h)
        return np.where(h > 0, np.maximum(out, 0.0), 0.0)


def _stack(cls: type[RateFamily], members: list[RateFamily]) -> tuple[Any, set[str]]:
    """One family whose parameters are arrays over ``members``, and the methods it computes identically.

    Stacking relies on the family's code being elementwise, not on parameter
    values, so a few members (first, last, two between) are compared, at loads
    and rates on either side of their scales.
    """
    try:
        fields = list(cls.model_fields)
        full = cls.model_construct(None, **{k: np.array([float(getattr(m, k)) for m in members]) for k in fields})
        probe = sorted({0, len(members) // 3, 2 * len(members) // 3, len(members) - 1})
        sample = [members[i] for i in probe]
        stacked = cls.model_construct(None, **{k: np.array([float(getattr(m, k)) for m in sample]) for k in fields})
        caps = np.array([float(m.supremum) for m in sample])
    except Exception:
        return None, set()
    bounded = np.isfinite(caps)
    points = {
        "value": [np.full(len(sample), x) for x in (0.0, 0.5, 1.0, 3.0)],
        "derivative": [np.full(len(sample), x) for x in (0.0, 0.5, 1.0, 3.0)],
        "inverse": [np.where(bounded, p * np.where(bounded, caps, 0.0), 3.0 * p) for p in (0.0, 0.3, 0.7, 0.999)],
        "derivative_inverse": [np.full(len(sample), s) for s in (0.01, 0.3, 1.0, 3.0)],
    }
    methods = set()
    for method, inputs in points.items():
        try:
            same = all(
                np.allclose(np.asarray(getattr(stacked, method)(x)), [getattr(m, method)(v) for m, v in zip(sample, x)],
                            rtol=1e-13, atol=0.0, equal_nan=True)
                for x in inputs
            )
        except Exception:
            same = False
        if same:
            methods.add(method)
    return full, methods


class _Scaled:
    """The backends in ``cols``, with flows normalised by the total demand."""

    def __init__(self, backends: _Backends, cols: np.ndarray, total: float):
        self.backends, self.cols, self.total = backends, cols, total
        self.full = np.zeros(backends.capacity.size)
        self.capacity = backends.capacity[cols] / total

    def _expand(self, flow: np.ndarray) -> np.ndarray:
        out = self.full.copy()
        out[self.cols] = flow * self.total
        return out

    def marginal(self, flow: np.ndarray) -> np.ndarray:
        return self.backends.marginal(self._expand(flow))[self.cols]

    def curvature(self, flow: np.ndarray) -> np.ndarray:
        return self.backends.curvature(self._expand(flow))[self.cols] * self.total

    def flow_at_price(self, price: np.ndarray) -> np.ndarray:
        full = np.ones(self.full.size)
        full[self.cols] = price
        return self.backends.flow_at_price(full)[self.cols] / self.total


# --------------------------------------------------------------------------
# Feasibility
# --------------------------------------------------------------------------


def _initial_flow(lam, cap, mask, rows, cols, demand, capacity, flabel, blabel) -> np.ndarray:
    """A strictly feasible flow: positive on every edge, every backend below ``cap``."""
    finite = np.isfinite(cap)
    # Capacity-proportional weights, scaled down where a backend is overloaded.
    weight = np.where(finite, cap, 1.0)
    for _ in range(200):
        w = mask * weight
        f = lam[:, None] * w / w.sum(axis=1, keepdims=True)
        util = np.where(finite, f.sum(axis=0) / np.where(finite, cap, 1.0), 0.0)
        if util.max(initial=0.0) < 0.999:
            return f
        weight = np.where(util > 0.99, weight * 0.99 / np.maximum(util, 1e-300), weight)

    F, B = mask.shape
    ei, ej = np.nonzero(mask)
    E = ei.size
    fin = np.flatnonzero(finite)
    where = {j: k for k, j in enumerate(fin)}
    ub_rows = np.array([where[j] for j in ej if j in where], dtype=int)
    ub_edges = np.array([e for e, j in enumerate(ej) if j in where], dtype=int)
    a_ub = scipy.sparse.coo_matrix(
        (np.concatenate([1.0 / cap[ej[ub_edges]], -np.ones(fin.size)]),
         (np.concatenate([ub_rows, np.arange(fin.size)]), np.concatenate([ub_edges, np.full(fin.size, E)]))),
        shape=(fin.size, E + 1),
    ).tocsr()
    a_eq = scipy.sparse.coo_matrix((np.ones(E), (ei, np.arange(E))), shape=(F, E + 1)).tocsr()
    objective = np.zeros(E + 1)
    objective[E] = 1.0
    # scipy-stubs type A_ub/A_eq as dense arrays only; HiGHS takes the sparse matrices as documented
    lp = scipy.optimize.linprog(objective, A_ub=a_ub, b_ub=np.zeros(fin.size), A_eq=a_eq, b_eq=lam,  # type: ignore[call-overload]
                                bounds=(0, None), method="highs")
    if lp.status != 0:
        raise RuntimeError(f"feasibility LP failed: {lp.message}")
    theta = lp.x[E]
    best = np.zeros((F, B))
    best[ei, ej] = np.maximum(lp.x[:E], 0.0)
    best *= (lam / best.sum(axis=1))[:, None]
    if theta >= 1.0 - 1e-12:
        _raise_infeasible(best, theta, lam, cap, mask, rows, cols, demand, capacity, flabel, blabel)
    # Blend towards the uniform split: strictly positive, still below capacity.
    uniform = mask * (lam / mask.sum(axis=1))[:, None]
    lb, lu = best.sum(axis=0), uniform.sum(axis=0)
    target = 0.5 * (1.0 + theta) * cap
    grow = finite & (lu > lb)
    eps = np.min((target[grow] - lb[grow]) / (lu[grow] - lb[grow]), initial=0.5)
    eps = min(0.5, eps)
    return (1.0 - eps) * best + eps * uniform


def _raise_infeasible(f, theta, lam, cap, mask, rows, cols, demand, capacity, flabel, blabel):
    """Name a Hall violation: frontends whose demand exceeds the capacity of all they can reach.

    From a flow minimising the peak utilisation ``theta``: a tight backend can be
    relieved if a frontend sending to it can reach a relievable backend. The
    frontends that cannot reach any relievable backend, and the backends they
    reach, are the bottleneck (the source side of a minimum cut).
    """
    finite = np.isfinite(cap)
    tight = finite & (f.sum(axis=0) >= theta * np.where(finite, cap, 0.0) * (1 - 1e-7))
    relievable = ~tight
    sends = f > 1e-12 * lam[:, None]
    while True:
        flexible = (mask & relievable[None, :]).any(axis=1)
        more = relievable | (sends & flexible[:, None]).any(axis=0)
        if (more == relievable).all():
            break
        relievable = more
    stuck = ~flexible
    if not stuck.any():
        stuck = np.ones_like(stuck)
    reach = mask[stuck].any(axis=0)
    names_f = [flabel[rows[i]] for i in np.flatnonzero(stuck)]
    names_b = [blabel[cols[j]] for j in np.flatnonzero(reach)]
    need = float(demand[rows[stuck]].sum())
    have = float(capacity[cols[reach]].sum())
    raise ScenarioError(
        "frontends",
        f"demand {need:g} of frontends [{', '.join(names_f)}] is not below the total capacity {have:g} "
        f"of the backends they can reach [{', '.join(names_b)}]: no routing keeps every backend below "
        f"its capacity (lower those rates, add backends or connect them; the overload optimum, "
        f"`lbsim optimum --overload` or optimum(scenario, overload=True), gives the routing that serves the most)",
    )


# --------------------------------------------------------------------------
# The Newton step
# --------------------------------------------------------------------------


def _others(x: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``out[i, j] = sum_{k != i} x[k, j]``, summed directly for row ``top[j]`` of each column.

    ``colsum - x`` loses every digit where one row dominates a column, which is
    exactly where the Newton system is most ill-conditioned; ``top`` names
    that row (the largest ``dinv`` of the column).
    """
    out = x.sum(axis=0)[None, :] - x
    col = np.arange(x.shape[1])
    kept = x[top, col]
    x[top, col] = 0.0
    out[top, col] = x.sum(axis=0)
    x[top, col] = kept
    return out


class _Kkt:
    """The Newton system ``min grad.D + 1/2 D^T (diag(1/dinv) + S^T diag(q) S) D`` s.t. ``R D = rows``.

    ``dinv`` (F, B) is the inverse of the diagonal Hessian on the edges (0 off
    the support), ``q`` (B,) the curvature on column sums, ``R`` and ``S`` sum
    rows and columns. ``q_j = inf`` holds column ``j``'s sum: ``S_j D = cols_j``
    (default 0). By the Woodbury identity

        H^{-1} V = dinv * (d_j V_ij + a_j sum_{k != i} dinv_kj (V_ij - V_kj)),

    ``a_j = q_j/(1 + q_j s_j)``, ``d_j = 1/(1 + q_j s_j)``, ``s_j = sum_i dinv_ij``;
    the row multipliers ``w`` (the step solves ``H D + R^T w = -grad``) solve
    ``R H^{-1} R^T w = R (dinv a cols - H^{-1} grad) - rows``, a Laplacian
    (weights ``sum_j a_j dinv_ij dinv_kj``) plus the diagonal ``sum_j dinv_ij
    d_j``: an ``F x F`` system, factorised once for several right-hand sides.
    """

    def __init__(self, dinv: np.ndarray, q: np.ndarray):
        # Entries 1e-60 below the largest move nothing; as subnormal numbers
        # in the products below they would slow the arithmetic a hundredfold.
        dinv = np.where(dinv > 1e-60 * dinv.max(initial=0.0), dinv, 0.0)
        self.dinv = dinv
        s = dinv.sum(axis=0)
        self.s = s
        self.used = used = s > 0
        self.finite = finite = np.isfinite(q)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            a = np.where(finite, q / (1.0 + q * s), 1.0 / s)
            d = np.where(finite, 1.0 / (1.0 + q * s), 0.0)
        self.a = np.where(used, a, 0.0)
        self.d = np.where(used, d, 1.0)
        self.top = np.argmax(dinv, axis=0)
        self.o = _others(dinv, self.top)
        da = dinv * self.a
        weights = da @ dinv.T
        np.fill_diagonal(weights, 0.0)
        m = -weights
        np.fill_diagonal(m, (da * self.o).sum(axis=1) + (dinv * self.d).sum(axis=1))
        self.da = da
        self.scale = np.sqrt(np.maximum(np.diag(m), 1e-300))
        self.ms = m / self.scale[:, None] / self.scale[None, :]
        self.factor = None
        try:
            factor = scipy.linalg.cho_factor(self.ms, check_finite=False)
            if np.all(np.isfinite(factor[0])):
                self.factor = factor
        except (np.linalg.LinAlgError, ValueError):
            pass
        # Rounding leaves row sums slightly off; a step removes it along
        # dinv * d, i.e. off the stiff and held columns where a row can.
        free = dinv * self.d[None, :]
        free = np.where(free.sum(axis=1, keepdims=True) > 0, free, dinv)
        self.free = free / np.maximum(free.sum(axis=1, keepdims=True), 1e-300)

    def hinv(self, v: np.ndarray) -> np.ndarray:
        """``H^{-1} v``."""
        dinv = self.dinv
        # The column-constant part (dinv-weighted column means) maps to
        # dinv * d * mean exactly; only the rest goes through the differences,
        # which would otherwise carry the rounding of the large prices g_j.
        mean = (dinv * v).sum(axis=0) / np.where(self.used, self.s, 1.0)
        v = v - mean[None, :]
        t = _others(dinv * v, self.top)
        return dinv * (self.d * (v + mean[None, :]) + self.a * (v * self.o - t))

    def _solve_rows(self, rhs: np.ndarray) -> np.ndarray:
        b = rhs / self.scale
        if self.factor is not None:
            x = scipy.linalg.cho_solve(self.factor, b, check_finite=False)
            if np.all(np.isfinite(x)):
                return x / self.scale
        return np.linalg.lstsq(self.ms, b, rcond=1e-14)[0] / self.scale

    def solve(self, grad: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None):
        """The step ``D``, the row multipliers ``w`` and the step's column sums.

        The column sums are returned as computed from their own formula,
        ``-d_j sum_i dinv_ij (grad_ij + w_i)`` (the ``a`` part sums to zero):
        summing ``D`` instead would leave a rounding error of the size of
        ``D``, which the large curvature of a backend at capacity multiplies
        into its price.
        """
        held = np.where(self.finite, 0.0, 0.0 if cols is None else cols)
        # H^{-1} is linear: H^{-1}(grad + R^T w) = H^{-1} grad + H^{-1} R^T w.
        step = -self.hinv(grad)
        if np.any(held):
            step += self.da * held[None, :]
        rhs = step.sum(axis=1)
        if rows is not None:
            rhs = rhs - rows
        w = self._solve_rows(rhs)
        step -= self.hinv(np.broadcast_to(w[:, None], step.shape))
        for _ in range(2):
            # Iterative refinement: the row system is ill-conditioned.
            resid = step.sum(axis=1) - (0.0 if rows is None else rows)
            if np.abs(resid).max() <= 1e-15 * np.abs(step).sum(axis=1).max():
                break
            dw = self._solve_rows(resid)
            w = w + dw
            step -= self.hinv(np.broadcast_to(dw[:, None], step.shape))
        v = grad + w[:, None]
        dcol = np.where(self.finite, -self.d * (self.dinv * v).sum(axis=0), held)
        dcol = np.where(self.used, dcol, 0.0)
        step += (dcol - step.sum(axis=0)) * self.dinv / np.where(self.used, self.s, 1.0)
        resid = step.sum(axis=1) - (0.0 if rows is None else rows)
        step -= resid[:, None] * self.free
        return step, w, dcol


def _newton_step(dinv, q, grad, rows=None, cols=None):
    """One solve of the :class:`_Kkt` system: the step and the row multipliers."""
    return _Kkt(dinv, q).solve(grad, rows, cols)[:2]


# --------------------------------------------------------------------------
# Interior point method
# --------------------------------------------------------------------------


def _interior_point(c, mask, lam, cap, f, backends, gap: float, max_iter: int = 200):
    """Primal-dual interior point method (Mehrotra predictor-corrector) from the feasible ``f``.

    Nocedal and Wright, Numerical Optimization, 2006, section 14.2 (there for
    linear programs; here the objective's marginal cost ``g`` enters the dual
    residual and its derivative ``G''`` the Newton matrix). Unknowns: flows
    ``f > 0`` with reduced costs ``s > 0``, row prices ``nu``, and for each
    finite capacity the slack ``u > 0`` with its price ``beta > 0``:

        c_ij + g_j(Lambda_j) + beta_j - nu_i - s_ij = 0,   sum_j f_ij = lambda_i,
        Lambda_j + u_j = cap_j,   f_ij s_ij = u_j beta_j = sigma * mu.

    Eliminating ``s``, ``u`` and ``beta`` leaves the :class:`_Kkt` system with
    ``dinv = f/s`` and ``q = G'' + beta/u``. Stops when the duality gap
    ``sum f s + sum u beta`` is below ``gap`` times the mean marginal cost and
    the residuals are small. Returns ``f``, ``s``, ``nu``, ``beta``, ``u``, iterations.
    """
    fin = np.isfinite(cap)
    capf = np.where(fin, cap, 0.0)
    m = int(mask.sum() + fin.sum())
    flow = f.sum(axis=0)
    u = np.where(fin, cap - flow, 0.0)
    g = backends.marginal(flow)
    cost = np.where(mask, c + g[None, :], 0.0)
    nu = (f * cost).sum(axis=1) / lam
    scale = float(lam @ nu)
    ref = float(cost.max(initial=0.0))
    if not scale > 0:
        scale = ref if ref > 0 else 1.0
    # Start dual feasible: capacity prices beta = mu0/u, row prices nu below
    # every edge's cost by ``scale``, reduced costs s what is left.
    mu0 = scale / m
    maskf = mask.astype(float)
    with np.errstate(divide="ignore"):
        beta = np.where(fin, mu0 / np.where(fin, u, 1.0), 0.0)
    full = np.where(mask, c + (g + beta)[None, :], np.inf)
    nu = full.min(axis=1) - scale
    s = np.where(mask, full - nu[:, None], 0.0)
    iterations = 0
    best, since = None, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007  (returned: the count of Newton steps)
        flow = f.sum(axis=0)
        g = backends.marginal(flow)
        curvature = backends.curvature(flow)
        r_dual = np.where(mask, c + (g + beta)[None, :] - nu[:, None] - s, 0.0)
        r_rows = lam - f.sum(axis=1)
        r_cap = np.where(fin, capf - flow - u, 0.0)
        comp = float((f * s).sum() + (u * beta).sum())
        mu = comp / m
        level = max(float(lam @ np.abs(nu)), 1e-9 * max(ref, scale))
        if comp <= gap * level and np.abs(r_dual).max() <= 1e-9 * level and np.abs(r_rows).max() <= 1e-12:
            break
        # Where g is badly non-linear (a power law near a = 1 at a tiny flow)
        # the dual residual can stall once the gap is closed: then stop after
        # ten iterations without a better iterate, and keep the best.
        merit = max(comp / (gap * level), float(np.abs(r_dual).max()) / (1e-9 * level))
        if comp > 1e-6 * level:
            pass
        elif best is None or merit < best[0]:
            best, since = (merit, f, s, nu, beta, u), 0
        else:
            since += 1
            if since >= 10:
                _, f, s, nu, beta, u = best
                break
        with np.errstate(divide="ignore", invalid="ignore"):
            dinv = np.where(mask, f / np.where(mask, s, 1.0), 0.0)
            q = curvature + np.where(fin, beta / np.where(fin, u, 1.0), 0.0)
            inv_u = np.where(fin, 1.0 / np.where(fin, u, 1.0), 0.0)
            inv_f = np.where(mask, 1.0 / np.where(mask, f, 1.0), 0.0)
        kkt = _Kkt(dinv, q)

        def direction(comp_edge, comp_cap):
            # s df + f ds = comp_edge, beta du + u dbeta = comp_cap, du = r_cap - dLambda.
            grad = r_dual - comp_edge * inv_f + (comp_cap * inv_u - beta * inv_u * r_cap)[None, :] * maskf
            df, w, dflow = kkt.solve(grad, rows=r_rows)
            du = np.where(fin, r_cap - dflow, 0.0)
            ds = np.where(mask, (comp_edge - s * df) * inv_f, 0.0)
            dbeta = np.where(fin, (comp_cap - beta * du) * inv_u, 0.0)
            return df, ds, du, dbeta, -w, dflow

        def longest(df, ds, du, dbeta):
            with np.errstate(divide="ignore", invalid="ignore"):
                lim = [np.where(mask & (df < 0), -f / df, np.inf), np.where(mask & (ds < 0), -s / ds, np.inf),
                       np.where(fin & (du < 0), -u / du, np.inf), np.where(fin & (dbeta < 0), -beta / dbeta, np.inf)]
            return min(1.0, *(x.min(initial=np.inf) for x in lim))

        aff = direction(-f * s, -u * beta)
        alpha = longest(*aff[:4])
        comp_aff = float(((f + alpha * aff[0]) * (s + alpha * aff[1])).sum()
                         + ((u + alpha * aff[2]) * (beta + alpha * aff[3])).sum())
        sigma = min(1.0, (comp_aff / comp) ** 3)
        # Keep the gap from closing far ahead of dual feasibility: an iterate
        # with no gap left but a dual residual cannot move any more.
        dual_rel = float(np.abs(r_dual).max()) / level
        sigma = max(sigma, min(0.5, 1e-2 * dual_rel / max(comp / level, 1e-300)))
        df, ds, du, dbeta, dnu, dflow = direction(sigma * mu * maskf - f * s - aff[0] * aff[1],
                                           np.where(fin, sigma * mu - u * beta - aff[2] * aff[3], 0.0))
        if not all(np.all(np.isfinite(x)) for x in (df, ds, du, dbeta, dnu)):
            break
        alpha = min(1.0, 0.995 * longest(df, ds, du, dbeta))
        # The Newton step linearises g. Its error at the new flows, g(Lambda
        # + alpha dLambda) - g(Lambda) - alpha G'' dLambda, goes into the
        # reduced costs s of the column where they can take it (s stays above
        # half its linear prediction), so that the dual residual still falls
        # by (1 - alpha); elsewhere it stays in the residual for the next step.
        # A step on which g is not finite (past a capacity) is halved.
        for _ in range(60):
            f_try = np.where(mask, f + alpha * df, 0.0)
            bend = backends.marginal(f_try.sum(axis=0)) - g - alpha * curvature * dflow
            if np.all(np.isfinite(bend)):
                break
            alpha *= 0.5
        else:
            break
        s_lin = np.where(mask, s + alpha * ds, 0.0)
        s_try = s_lin + bend[None, :]
        s_try = np.where(mask & (s_try >= 0.5 * s_lin), s_try, s_lin)
        f = f_try
        s = s_try
        u = np.where(fin, u + alpha * du, 0.0)
        beta = np.where(fin, beta + alpha * dbeta, 0.0)
        nu = nu + alpha * dnu
    return f, s, nu, beta, u, iterations


# --------------------------------------------------------------------------
# Polish and prices
# --------------------------------------------------------------------------


def _polish(c, mask, lam, cap, f, reduced, nu, beta, room, backends, tol, max_steps: int = 60, rho: float = 1e-6):
    """Exact KKT conditions by an active-set Newton method; returns ``f``, ``nu``, ``beta``, steps.

    Start from the interior point method's flows ``f``, reduced costs,
    prices and capacity slacks ``room``: an edge is active when its relative
    flow exceeds its relative reduced cost (their product is the small gap);
    a backend is held at its flow when its capacity price exceeds its relative
    slack. Each step is a proximal Newton step on the active edges (proximal
    term ``rho * nu_i / lambda_i``: small against the curvature, it only fixes
    the directions in which the objective is flat, such as ties), with a line
    search on the objective. An edge whose flow reaches zero leaves; a
    connected edge cheaper than its frontend's cost enters; a held backend
    whose capacity price turns negative is released. Stops when the relative
    KKT violation is below ``tol``; returns the best iterate.
    """
    fin = np.isfinite(cap)
    f0 = f
    flow = f.sum(axis=0)
    g = backends.marginal(flow)
    # The cost scale: the mean marginal cost, or where everything is free
    # (zero delays, constant rates) the largest edge cost, or 1 s.
    ref = float(np.max(np.where(mask, c + g[None, :], 0.0), initial=0.0))
    level = max(float(lam @ np.abs(nu)), 1e-9 * ref, 1e-300 if ref > 0 else 1.0)
    kappa = np.maximum(np.abs(nu), 1e-6 * level)
    # Flows below TINY of their frontend's are left to the end (see _tiny_flows).
    active = mask & (f / lam[:, None] >= reduced / kappa[:, None]) & (f >= TINY * lam[:, None])
    active[np.arange(f.shape[0]), np.argmax(f, axis=1)] = True
    pinned = fin & (beta / level > room / np.where(fin, cap, 1.0))
    hold = np.minimum(flow, cap)
    # Dropping the inactive edges leaves the rows short: put their flow back on
    # the active edges with the smallest change that keeps the held backends.
    kept = np.where(active, f, 0.0)
    restored, active, pinned, hold = _restore(kept, active, pinned, hold, lam, cap, rho, kappa, backends)
    f = restored if restored is not None else kept * (lam / kept.sum(axis=1))[:, None]

    # The interior point method's own point (dense, without its capacity prices
    # where a backend has room) is the fallback should the polish do worse.
    beta0 = np.where(room <= 1e-9 * np.where(fin, cap, 1.0), beta, 0.0)
    fallback = (_violation(c, mask, f0, beta0, backends), f0, nu, beta0)
    best = (np.inf, f0, nu, beta0)
    nu_hat = nu.copy()
    steps = stale = 0
    progress = np.inf
    # Edges whose optimal flow underflows (a power law with a near 1 rises
    # from g(0) = 0 so steeply that it is worth using only below 1e-300).
    barred = np.zeros_like(mask)
    for _ in range(max_steps):
        flow = f.sum(axis=0)
        g = backends.marginal(flow)
        nu_p, price = _prices(c, f, active, pinned, nu_hat, backends)
        beta_raw = np.where(pinned, price - g, 0.0)
        beta_p = np.maximum(beta_raw, 0.0)
        score = _violation(c, mask & ~barred, f, beta_p, backends)
        if score < best[0]:
            best = (score, f, nu_p, beta_p)
        if score < progress:
            progress, stale = score, 0
        else:
            stale += 1
            if stale > 8:
                break
        kappa = np.maximum(np.abs(nu_p), 1e-6 * level)
        cheaper = mask & ~active & ~barred & (c + (g + beta_p)[None, :] - nu_p[:, None] < -tol * kappa[:, None])
        # An edge into an unused backend that would take only a negligible flow
        # at its frontend's price is left to the end as well.
        fresh = cheaper & (flow <= 0)[None, :]
        if fresh.any():
            need = backends.flow_at_price(np.where(fresh, nu_p[:, None] - c, -np.inf).max(axis=0))
            barred |= fresh & (need < TINY * lam.min())[None, :]
            cheaper &= ~barred
        release = pinned & (beta_raw < -tol * level)
        if score <= tol and not cheaper.any() and not release.any():
            break
        active |= cheaper
        pinned &= ~release
        q = np.where(pinned, np.inf, backends.curvature(flow))
        while True:
            dinv = np.where(active, (lam / (rho * kappa))[:, None], 0.0)
            grad = np.where(active, c + g[None, :] - nu_p[:, None], 0.0)
            step, w = _newton_step(dinv, q, grad)
            # An edge without flow that the step would make negative leaves now.
            stuck = active & (f <= 0) & (step < 0)
            if not stuck.any():
                break
            active &= ~stuck
        steps += 1
        if not np.all(np.isfinite(step)):
            break
        nu_hat = nu_p - w
        # Fraction to the boundary: an edge reaching zero leaves, a backend
        # reaching its capacity is held there. Within that, an exact line
        # search on the objective (its curvature can be far from the Newton
        # model's, e.g. at a backend whose marginal cost rises steeply from 0).
        with np.errstate(divide="ignore", invalid="ignore"):
            dflow = step.sum(axis=0)
            cap_limit = np.where(fin & ~pinned & (dflow > 0), (cap - flow) / dflow, np.inf)
            edge_limit = np.where(active & (step < 0), -f / step, np.inf)
        s_max = min(1.0, cap_limit.min(initial=np.inf), edge_limit.min(initial=np.inf))
        if edge_limit.min(initial=np.inf) < 1e-6 * min(1.0, cap_limit.min(initial=np.inf)):
            # Edges with next to no flow block the step: all that would reach
            # zero within a thousandth of it leave at once.
            active &= ~(edge_limit < 1e-3)
            f, active, pinned, hold = _restore(
                np.where(active, f, 0.0), active, pinned, hold, lam, cap, rho, kappa, backends
            )
            if f is None:
                break
            continue
        s = _objective_search(c, active, step, flow, dflow, s_max, backends)
        if s == 0.0:
            if not (cheaper & active).any():
                break
            barred |= cheaper & active
            active &= ~barred
            continue
        if s < s_max:
            # Near the optimum the objective is too flat along a tiny flow
            # (1e-30 at a steep power law) for its line search to see, while
            # that flow's price still matters: take the longer step if it
            # satisfies the KKT conditions better.
            scores = [_step_score(c, mask & ~barred, f, step, t, active, pinned, nu_hat, backends) for t in (s, s_max)]
            if scores[1] < scores[0]:
                s = s_max
        newly = cap_limit <= s * (1 + 1e-9)
        pinned |= newly
        hold = np.where(newly, cap, np.where(pinned, hold, flow + s * dflow))
        f = np.where(active, f + s * step, 0.0)
        leaving = active & ((edge_limit <= s * (1 + 1e-9)) | (f <= 0))
        if leaving.any():
            active &= ~leaving
            f, active, pinned, hold = _restore(
                np.where(active, f, 0.0), active, pinned, hold, lam, cap, rho, kappa, backends
            )
            if f is None:
                break
    if best[0] > max(tol, fallback[0]):
        best = fallback
    _, f, nu, beta = best
    return _tiny_flows(c, mask, lam, f, nu, backends), nu, beta, steps


def _step_score(c, mask, f, step, t, active, pinned, nu_est, backends) -> float:
    """The KKT violation after moving ``t`` along ``step``."""
    moved = np.where(active, np.maximum(f + t * step, 0.0), 0.0)
    _, price = _prices(c, moved, active & (moved > 0), pinned, nu_est, backends)
    beta = np.where(pinned, np.maximum(price - backends.marginal(moved.sum(axis=0)), 0.0), 0.0)
    return _violation(c, mask, moved, beta, backends)


def _tiny_flows(c, mask, lam, f, nu, backends):
    """Give an unused backend the flow its frontends' prices ask for, when that is negligible.

    A backend whose marginal cost starts at ``g_j(0) = 0`` (a power law) is
    used by every frontend whose price ``nu_i`` exceeds its delay, but near
    ``a = 1`` so steeply that the flow ``g_j^{-1}(nu_i - 2 d_ij)`` may be 1e-75
    of the demand: invisible in every sum, yet it sets the backend's price.
    Such flows go to the frontend that values the backend most, without
    changing its row sum (they are below its rounding).
    """
    flow = f.sum(axis=0)
    value = np.where(mask, nu[:, None] - c, -np.inf)
    want = value.max(axis=0)
    unused = (flow <= 0) & np.isfinite(want) & (want > backends.marginal(np.zeros_like(flow)))
    if not unused.any():
        return f
    need = np.where(unused, backends.flow_at_price(np.where(unused, want, 1.0)), 0.0)
    take = unused & (need > 0) & (need < TINY * lam.min())
    f = f.copy()
    rows = value.argmax(axis=0)
    f[rows[take], np.flatnonzero(take)] = need[take]
    return f


def _objective_search(c, active, step, flow, dflow, s_max, backends) -> float:
    """The minimiser of the objective on ``[0, s_max]`` along ``step`` (regula falsi on its slope)."""
    linear = float(np.where(active, step * c, 0.0).sum())

    moving = dflow != 0

    def slope(s: float) -> float:
        return linear + float(dflow[moving] @ backends.marginal(flow + s * dflow)[moving])

    return _root(slope, s_max)


def _root(slope, s_max: float) -> float:
    """Where the increasing ``slope`` crosses zero in ``[0, s_max]`` (``s_max`` if it stays negative).

    Regula falsi with the Illinois modification; while the bracket still
    starts at 0 and the slope at its end is steep, the end shrinks a
    thousandfold at a time: the crossing can be many orders of magnitude below
    ``s_max`` (``g`` rising steeply from 0).
    """
    lo, d_lo = 0.0, slope(0.0)
    start = abs(d_lo)
    hi, d_hi = s_max, slope(s_max)
    if d_hi <= 0.0 or not d_lo < 0.0:
        # A slope >= 0 at the start is rounding (a Newton step descends).
        return s_max
    side = 0
    for _ in range(200):
        if lo == 0.0 and hi > 1e-300:
            s = hi * 1e-3 if d_hi > 1e3 * abs(d_lo) else hi - d_hi * hi / (d_hi - d_lo)
        else:
            s = hi - d_hi * (hi - lo) / (d_hi - d_lo)
        if not lo < s < hi:
            s = 0.5 * (lo + hi)
        d = slope(s)
        if abs(d) <= 1e-6 * (start if lo == 0 else abs(d_lo)) or hi - lo <= 1e-15 * hi:
            return s if d <= 0 else max(lo, s * (1 - 1e-15))
        if d < 0:
            lo, d_lo = s, d
            if side == -1:
                d_hi *= 0.5
            side = -1
        else:
            hi, d_hi = s, d
            if side == 1:
                d_lo *= 0.5
            side = 1
    return lo


def _restore(f, active, pinned, hold, lam, cap, rho, kappa, backends, rounds: int = 20):
    """The nearest flow on ``active`` with row sums ``lam`` and held column sums ``hold``.

    Edges that would turn negative leave, backends that would pass ``cap`` are
    held at it, and the projection is repeated. Returns ``f, active, pinned, hold``.
    """
    pinned, hold = pinned.copy(), hold.copy()
    curvature = backends.curvature(f.sum(axis=0))
    for _ in range(rounds):
        q = np.where(pinned, np.inf, curvature)
        dinv = np.where(active, (lam / (rho * kappa))[:, None], 0.0)
        # Unheld backends are pulled back to ``hold`` by their curvature: the
        # penalty q_j/2 (Lambda_j - hold_j)^2 has gradient -q_j (hold_j - Lambda_j).
        short = hold - f.sum(axis=0)
        pull = np.where(active, -np.where(pinned, 0.0, curvature * short)[None, :], 0.0)
        step, _ = _newton_step(dinv, q, pull, rows=lam - f.sum(axis=1), cols=short)
        new = np.where(active, f + step, 0.0)
        negative = active & (new <= 0)
        over = ~pinned & np.isfinite(cap) & (new.sum(axis=0) >= cap)
        if over.any():
            # A backend pushed to its capacity is held there.
            pinned |= over
            hold = np.where(over, cap, hold)
            continue
        if not negative.any():
            return new, active, pinned, hold
        # Keep each row's largest edge so no frontend is left without one.
        keep = np.zeros_like(active)
        keep[np.arange(f.shape[0]), np.argmax(np.where(active, f, -np.inf), axis=1)] = True
        active = active & (~negative | keep)
        f = np.where(active, np.maximum(f, 0.0), 0.0)
    return None, active, pinned, hold


def _prices(c, f, active, pinned, nu_est, backends):
    """``nu`` and backend prices with ``2 d_ij + price_j = nu_i`` on the active edges.

    An unheld backend's price is its marginal cost ``g_j``; a held one's is
    read off the tree: prices are propagated along a spanning tree of each
    component of the active graph, rooted at an unheld backend. A component of
    held backends only is anchored at the estimate ``nu_est`` and lifted until
    its capacity prices are >= 0. Unused backends are priced at ``g_j(0)``.
    """
    F, B = f.shape
    flow = f.sum(axis=0)
    g = backends.marginal(flow)
    known = ~pinned | ~active.any(axis=0)
    price = np.where(known, g, np.nan)
    nu = np.full(F, np.nan)
    graph = scipy.sparse.coo_matrix((np.ones(int(active.sum())), np.nonzero(active)), shape=(F, B))
    adjacency = scipy.sparse.bmat([[None, graph], [graph.T, None]]).tocsr()
    n, label = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    for comp in range(n):
        nodes = np.flatnonzero(label == comp)
        fronts = nodes[nodes < F]
        if fronts.size == 0:
            continue
        backs = nodes[nodes >= F] - F
        anchors = backs[known[backs]]
        if anchors.size:
            root = F + anchors[np.argmax(flow[anchors])]
        else:
            root = fronts[np.argmax(f[fronts].sum(axis=1))]
            nu[root] = nu_est[root]
        order, pred = scipy.sparse.csgraph.breadth_first_order(
            adjacency, root, directed=False, return_predecessors=True
        )
        for v in order[1:]:
            p = pred[v]
            if v < F:
                nu[v] = c[v, p - F] + price[p - F]
            elif not known[v - F]:
                price[v - F] = nu[p] - c[p, v - F]
        if not anchors.size:
            lift = max(0.0, float(np.max(g[backs] - price[backs])))
            nu[fronts] += lift
            price[backs] += lift
    return nu, price


def _violation(c, mask, f, beta, backends) -> float:
    """Relative KKT excess of used edges over the cheapest connected edge (see :func:`kkt_violation`)."""
    flow = f.sum(axis=0)
    price = backends.marginal(flow) + beta
    cost = np.where(mask, c + price[None, :], np.inf)
    return _excess(cost, f > USED * f.sum(axis=1, keepdims=True))
