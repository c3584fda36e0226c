"""The centralized optimal static split (DESIGN.md section 2).

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
   ``min theta s.t. Lambda_j <= theta cap_j`` decides. ``theta >= 1`` means no
   split serves the demand, and the bottleneck (a Hall violation: a set of
   frontends whose demand exceeds the capacity of every backend they reach) is
   reported as a :class:`~lbsim.errors.ScenarioError`.
2. *Barrier method* (Boyd and Vandenberghe, Convex Optimization, 2004,
   section 11.3): minimise ``t * objective - sum log f_ij - sum log(cap_j -
   Lambda_j)`` on the row constraints with Newton's method, then increase
   ``t``. The Newton system has Hessian ``D + S^T Q S`` (``D`` diagonal on the
   edges, ``S`` the column sums, ``Q`` diagonal on backends); by the Woodbury
   identity its reduced system on the row multipliers is an ``F x F``
   Laplacian-plus-diagonal matrix, so one step costs ``O(F^2 B)``.
   ``G''`` is not part of the rate interface; it is a central difference of
   ``g``, which only affects the Newton direction, not the fixed point.
3. *Polish.* Edges whose reduced cost exceeds their flow (relatively) are
   dropped, backends whose capacity price exceeds their slack are held at
   their flow, and a proximal Newton iteration on the remaining equality
   constrained problem makes the used edges' costs equal to rounding.
   Prices are then read off the active graph (a spanning tree per component)
   and ``nu_i = min_j 2 d_ij + pi_j``.

Ties between edges of equal cost (zero delays, linear backends) have many
optimal splits; the barrier method returns the one nearest the analytic
centre of the optimal face, which is deterministic and spreads flow over the
tied edges.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.sparse.csgraph

from .errors import ScenarioError
from .rates import RateFamily

__all__ = ["Optimum", "solve", "optimum", "kkt_violation"]

# Routing entries below this are "unused" for the KKT statement (as in the tests).
USED = 1e-9


@dataclass(frozen=True)
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


def optimum(scenario: Any, **options: Any) -> Optimum:
    """The optimum of a scenario: reads ``demand``, ``latency``, ``connect`` and ``service_rates``."""
    F, B = np.shape(scenario.connect)
    fl = getattr(scenario, "frontend_label", None)
    bl = getattr(scenario, "backend_label", None)
    return solve(
        scenario.service_rates,
        scenario.demand,
        scenario.latency,
        scenario.connect,
        frontend_labels=[fl(i) for i in range(F)] if callable(fl) else None,
        backend_labels=[bl(j) for j in range(B)] if callable(bl) else None,
        **options,
    )


def solve(
    rates: Sequence[RateFamily],
    demand: np.ndarray,
    latency: np.ndarray,
    connect: np.ndarray,
    tol: float = 1e-9,
    *,
    margin: float = 1e-9,
    frontend_labels: Sequence[str] | None = None,
    backend_labels: Sequence[str] | None = None,
) -> Optimum:
    """The optimal static split for ``demand`` (F,), one-way ``latency`` (F, B), ``connect`` (F, B).

    ``tol`` is the relative duality gap the barrier method reaches before the
    polish; ``margin`` the relative headroom kept below each capacity
    (``Lambda_j <= (1 - margin) sup mu_j``). Raises :class:`ScenarioError`
    (key ``frontends``) when no split can serve the demand.
    """
    start = time.perf_counter()
    demand = np.asarray(demand, dtype=float)
    latency = np.asarray(latency, dtype=float)
    connect = np.asarray(connect, dtype=bool)
    F, B = _check_inputs(rates, demand, latency, connect)
    flabel = list(frontend_labels) if frontend_labels is not None else [str(i) for i in range(F)]
    blabel = list(backend_labels) if backend_labels is not None else [str(j) for j in range(B)]
    backends = _Backends(rates)
    cost = np.where(connect, 2.0 * latency, 0.0)

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
    f, nu, beta, newton = _barrier(c, mask, lam, cap, f0, sub, tol)
    f, nu, beta, polish = _polish(c, mask, lam, cap, f, nu, beta, sub)

    # Back to the full shape and physical units.
    flow_sub = f.sum(axis=0)
    flow = np.zeros(B)
    flow[cols] = flow_sub * total
    beta_full = np.zeros(B)
    beta_full[cols] = beta
    load = backends.load(flow)
    marginal = backends.marginal(flow)
    price = marginal + beta_full
    reachable = np.where(connect, cost + price[None, :], np.inf)
    frontend_cost = reachable.min(axis=1)

    routing = np.zeros((F, B))
    routing[np.ix_(rows, cols)] = f / lam[:, None]
    routing[rows] /= routing[rows].sum(axis=1, keepdims=True)
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


def kkt_violation(opt: Optimum, latency: np.ndarray, connect: np.ndarray, used: float = USED) -> float:
    """The largest relative excess ``(2 d_ij + pi_j - nu_i) / nu_i`` over edges with ``p_ij > used``.

    With ``nu_i = min_j 2 d_ij + pi_j`` no connected edge is cheaper than
    ``nu_i``, so this one number measures the KKT conditions.
    """
    connect = np.asarray(connect, dtype=bool)
    cost = np.where(connect, 2.0 * np.asarray(latency, dtype=float) + opt.price[None, :], np.inf)
    nu = cost.min(axis=1)
    scale = np.maximum(np.abs(nu), 1e-300)
    excess = np.where(opt.routing > used, (cost - nu[:, None]) / scale[:, None], 0.0)
    return float(excess.max(initial=0.0))


# --------------------------------------------------------------------------
# Inputs and rate evaluation
# --------------------------------------------------------------------------


def _check_inputs(rates: Sequence[RateFamily], demand: np.ndarray, latency: np.ndarray, connect: np.ndarray) -> tuple[int, int]:
    if demand.ndim != 1:
        raise ScenarioError("frontends", f"demand must be a vector, got shape {demand.shape}")
    F, B = demand.size, len(rates)
    if F == 0 or B == 0:
        raise ScenarioError("frontends" if F == 0 else "backends", "needs at least one entry")
    if latency.shape != (F, B):
        raise ScenarioError("network.latency", f"must be {F} x {B}, got shape {latency.shape}")
    if connect.shape != (F, B):
        raise ScenarioError("network.connect", f"must be {F} x {B}, got shape {connect.shape}")
    if not np.all(np.isfinite(demand)) or np.any(demand < 0):
        raise ScenarioError("frontends", "rates must be finite and >= 0")
    if demand.sum() <= 0:
        raise ScenarioError("frontends", "total demand is zero: the optimum is undefined")
    if not np.all(np.isfinite(latency[connect])) or np.any(latency[connect] < 0):
        raise ScenarioError("network.latency", "must be finite and >= 0")
    lonely = np.flatnonzero(~connect.any(axis=1))
    if lonely.size:
        raise ScenarioError(f"network.connect[{lonely[0]}]", "frontend has no usable backend")
    return F, B


class _Backends:
    """Vectorised ``G``, ``g`` and ``G''`` over the B rate families.

    A rate call costs tens of microseconds, so one call per backend per
    evaluation would dominate the solver at 1000 backends. Backends of the same
    family are therefore evaluated as one *stacked* family whose parameters are
    arrays (``model_construct``; the families are elementwise numpy code), and
    checked against the individual families once; a family that does not stack
    identically is evaluated backend by backend.
    """

    def __init__(self, rates: Sequence[RateFamily]):
        self.rates = list(rates)
        self.capacity = np.array([float(r.supremum) for r in self.rates])
        by_type: dict[type, list[int]] = {}
        for j, r in enumerate(self.rates):
            by_type.setdefault(type(r), []).append(j)
        self.groups: list[tuple[np.ndarray, Any]] = []
        for cls, members in by_type.items():
            idx = np.array(members)
            stacked = _stack(cls, [self.rates[j] for j in members]) if len(members) > 1 else None
            if stacked is None and len(members) > 1:
                self.groups.extend((np.array([j]), self.rates[j]) for j in members)
            else:
                self.groups.append((idx, stacked if stacked is not None else self.rates[members[0]]))

    def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        for idx, family in self.groups:
            out[idx] = getattr(family, method)(x[idx])
        return out

    def load(self, flow: np.ndarray) -> np.ndarray:
        """``x_j = G_j(Lambda_j) = mu_j^{-1}(Lambda_j)``."""
        return self._call("inverse", np.asarray(flow, dtype=float))

    def marginal(self, flow: np.ndarray) -> np.ndarray:
        """``g_j(Lambda_j) = 1/mu_j'(mu_j^{-1}(Lambda_j))``: 0 where ``mu'`` is infinite."""
        rate = self._call("derivative", self.load(flow))
        with np.errstate(divide="ignore"):
            return 1.0 / rate

    def curvature(self, flow: np.ndarray) -> np.ndarray:
        """``G_j''(Lambda_j)`` by a central difference of ``g`` (0 at zero flow)."""
        flow = np.asarray(flow, dtype=float)
        room = np.where(np.isfinite(self.capacity), self.capacity - flow, np.inf)
        h = 1e-5 * np.minimum(flow, room)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (self.marginal(flow + h) - self.marginal(flow - h)) / (2.0 * h)
        return np.where(h > 0, np.maximum(out, 0.0), 0.0)


def _stack(cls: type, members: list[RateFamily]) -> Any | None:
    """One family whose parameters are arrays over ``members``, or None if it is not identical."""
    try:
        fields = list(cls.model_fields)
        stacked = cls.model_construct(**{k: np.array([float(getattr(m, k)) for m in members]) for k in fields})
        caps = np.array([float(m.supremum) for m in members])
        probe_x = np.array([0.0, 0.5, 1.0, 3.0])
        probe_y = np.array([0.0, 0.3, 0.7, 0.999])
        for p in probe_x:
            x = np.full(len(members), p)
            for method in ("value", "derivative"):
                got = np.asarray(getattr(stacked, method)(x))
                want = np.array([getattr(m, method)(p) for m in members])
                if got.shape != want.shape or not np.allclose(got, want, rtol=1e-13, atol=0.0, equal_nan=True):
                    return None
        for p in probe_y:
            y = np.where(np.isfinite(caps), p * np.where(np.isfinite(caps), caps, 0.0), 3.0 * p)
            got = np.asarray(stacked.inverse(y))
            want = np.array([m.inverse(v) for m, v in zip(members, y)])
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-13, atol=0.0, equal_nan=True):
                return None
        return stacked
    except Exception:  # noqa: BLE001 - any failure means "evaluate one by one"
        return None


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
    lp = scipy.optimize.linprog(objective, A_ub=a_ub, b_ub=np.zeros(fin.size), A_eq=a_eq, b_eq=lam,
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
        f"its capacity (lower those rates, add backends or connect them)",
    )


# --------------------------------------------------------------------------
# The Newton step
# --------------------------------------------------------------------------


def _others(x: np.ndarray) -> np.ndarray:
    """``out[i, j] = sum_{k != i} x[k, j]``, summed directly for each column's largest entry.

    ``colsum - x`` loses everything where one row dominates a column, which is
    exactly where the Newton system is most ill-conditioned.
    """
    out = x.sum(axis=0)[None, :] - x
    top = np.argmax(np.abs(x), axis=0)
    col = np.arange(x.shape[1])
    rest = x.copy()
    rest[top, col] = 0.0
    out[top, col] = rest.sum(axis=0)
    return out


def _newton_step(
    dinv: np.ndarray,
    q: np.ndarray,
    grad: np.ndarray,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``min grad.D + 1/2 D^T (diag(1/dinv) + S^T diag(q) S) D`` s.t. ``R D = rows``.

    ``dinv`` (F, B) is the inverse of the diagonal Hessian on the edges (0 off
    the support), ``q`` (B,) the curvature on column sums, ``R`` and ``S`` sum
    rows and columns. ``q_j = inf`` holds column ``j``'s sum: ``S_j D = cols_j``
    (default 0). By the Woodbury identity

        H^{-1} V = dinv * (d_j V_ij + a_j sum_{k != i} dinv_kj (V_ij - V_kj)),

    ``a_j = q_j/(1 + q_j s_j)``, ``d_j = 1/(1 + q_j s_j)``, ``s_j = sum_i dinv_ij``;
    the row multipliers ``w`` solve ``R H^{-1} R^T w = R (dinv a cols - H^{-1} grad) - rows``,
    a Laplacian (weights ``sum_j a_j dinv_ij dinv_kj``) plus the diagonal
    ``sum_j dinv_ij d_j``: an ``F x F`` system. Returns the step and ``w``.
    """
    s = dinv.sum(axis=0)
    used = s > 0
    finite = np.isfinite(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(finite, q / (1.0 + q * s), 1.0 / s)
        d = np.where(finite, 1.0 / (1.0 + q * s), 0.0)
    a = np.where(used, a, 0.0)
    d = np.where(used, d, 1.0)
    o = _others(dinv)

    def hinv(v: np.ndarray) -> np.ndarray:
        t = _others(dinv * v)
        return dinv * (d * v + a * (v * o - t))

    da = dinv * a
    weights = da @ dinv.T
    np.fill_diagonal(weights, 0.0)
    m = -weights
    np.fill_diagonal(m, (da * o).sum(axis=1) + (dinv * d).sum(axis=1))
    shift = da * np.where(finite, 0.0, 0.0 if cols is None else cols)[None, :]
    rhs = (shift - hinv(grad)).sum(axis=1)
    if rows is not None:
        rhs -= rows
    w = _solve_psd(m, rhs)
    step = shift - hinv(grad + w[:, None])
    # Rounding leaves row sums slightly off; remove it along dinv.
    resid = step.sum(axis=1) - (0.0 if rows is None else rows)
    step -= resid[:, None] * dinv / dinv.sum(axis=1, keepdims=True)
    return step, w


def _solve_psd(m: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    scale = np.sqrt(np.maximum(np.diag(m), 1e-300))
    ms = m / scale[:, None] / scale[None, :]
    try:
        x = scipy.linalg.solve(ms, rhs / scale, assume_a="pos", check_finite=False)
        if np.all(np.isfinite(x)):
            return x / scale
    except (np.linalg.LinAlgError, ValueError):
        pass
    return np.linalg.lstsq(ms, rhs / scale, rcond=1e-14)[0] / scale


# --------------------------------------------------------------------------
# Barrier method
# --------------------------------------------------------------------------


def _barrier(c, mask, lam, cap, f, backends, tol, max_newton: int = 400):
    """Barrier method from the strictly feasible ``f``; returns ``f``, ``nu``, ``beta``, Newton steps."""
    fin = np.isfinite(cap)
    m = int(mask.sum() + fin.sum())
    flow = f.sum(axis=0)
    g = backends.marginal(flow)
    nu_hat = (f * (c + g)).sum(axis=1) / lam
    scale = float(lam @ nu_hat)
    if not scale > 0:
        scale = 1.0
    t = m / scale
    beta = np.zeros(cap.size)
    steps = 0
    while steps < max_newton:
        for _ in range(60):
            flow = f.sum(axis=0)
            g = backends.marginal(flow)
            room = np.where(fin, cap - flow, np.inf)
            inv_room = np.where(fin, 1.0 / room, 0.0)
            with np.errstate(divide="ignore"):
                inv_f = np.where(mask, 1.0 / f, 0.0)
            grad = np.where(mask, t * (c + g[None, :] - nu_hat[:, None]) - inv_f + inv_room[None, :], 0.0)
            q = t * backends.curvature(flow) + inv_room**2
            step, w = _newton_step(f * f, q, grad)
            steps += 1
            nu_hat = nu_hat - w / t
            beta = inv_room / t
            decrement = float(-(grad * step).sum())
            if decrement < 1e-7 or steps >= max_newton:
                break
            # Re-centre the gradient on the new multipliers before the line search.
            s = _line_search(c, mask, lam, cap, f, step, nu_hat, t, backends)
            f = f + s * step
            f = np.where(mask, np.maximum(f, 1e-300), 0.0)
            f *= (lam / f.sum(axis=1))[:, None]
            if decrement < 1e-3 and s == 1.0:
                break
        cost = float(lam @ nu_hat)
        if m / t <= tol * max(cost, 1e-12 * scale):
            break
        t *= 10.0
    return f, nu_hat, beta, steps


def _line_search(c, mask, lam, cap, f, step, nu, t, backends) -> float:
    """A step along ``step`` where the barrier's directional derivative is about zero (regula falsi)."""
    fin = np.isfinite(cap)
    dflow = step.sum(axis=0)
    flow = f.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        limit_f = np.where(mask & (step < 0), -f / step, np.inf).min(initial=np.inf)
        limit_c = np.where(fin & (dflow > 0), (cap - flow) / dflow, np.inf).min(initial=np.inf)
    s_max = min(limit_f, limit_c)

    def slope(s: float) -> float:
        g = backends.marginal(flow + s * dflow)
        with np.errstate(divide="ignore", invalid="ignore"):
            edge = np.where(mask, step * (t * (c + g[None, :] - nu[:, None]) - 1.0 / (f + s * step)), 0.0)
            capacity = np.where(fin, dflow / (cap - flow - s * dflow), 0.0)
        return float(edge.sum() + capacity.sum())

    lo, d_lo = 0.0, slope(0.0)
    hi = min(1.0, 0.99 * s_max)
    d_hi = slope(hi)
    if d_hi <= 0.0 or not d_lo < 0.0:
        return hi
    best = lo
    for _ in range(12):
        s = hi - d_hi * (hi - lo) / (d_hi - d_lo)
        if not lo < s < hi:
            s = 0.5 * (lo + hi)
        d = slope(s)
        if abs(d) <= 0.1 * abs(d_lo) or hi - lo < 1e-12 * hi:
            return s
        if d < 0:
            lo, d_lo, best = s, d, s
        else:
            hi, d_hi = s, d
    return max(best, lo) if lo > 0 else 0.5 * hi


# --------------------------------------------------------------------------
# Polish and prices
# --------------------------------------------------------------------------


def _polish(c, mask, lam, cap, f, nu, beta, backends, max_steps: int = 40, rho: float = 1e-9):
    """Exact KKT on the active edges; returns ``f``, ``nu``, ``beta`` (B,), Newton steps.

    An edge is active when its relative flow exceeds its relative reduced cost
    (at the barrier's central point their product is ``1/t``); a backend is held
    at its flow when its capacity price exceeds its relative slack. On the
    active edges a proximal Newton iteration (proximal term ``rho * nu_i / f_ij``,
    the Hessian of ``rho * nu_i * f log f``: small, and scale-free) drives the
    used edges' costs together; an edge whose flow would turn negative leaves.
    The result is kept only if it satisfies the KKT conditions better than
    the barrier's own point.
    """
    fin = np.isfinite(cap)
    flow = f.sum(axis=0)
    g = backends.marginal(flow)
    level = max(float(lam @ np.abs(nu)), 1e-300)
    kappa = np.maximum(np.abs(nu), 1e-6 * level)
    reduced = c + g[None, :] + beta[None, :] - nu[:, None]
    active = mask & (f / lam[:, None] >= reduced / kappa[:, None])
    active[np.arange(f.shape[0]), np.argmax(f, axis=1)] = True
    room = np.where(fin, cap - flow, np.inf)
    pinned = fin & (beta / level > room / np.where(fin, cap, 1.0))

    # Drop the inactive edges; put their flow on the active ones of the same
    # frontend, keeping the held backends' flows (the smallest such change).
    curvature = backends.curvature(flow)
    q = np.where(pinned, np.inf, curvature)
    kept = np.where(active, f, 0.0)
    dinv = np.where(active, f / (rho * kappa[:, None]), 0.0)
    step, _ = _newton_step(dinv, q, np.zeros_like(f), rows=lam - kept.sum(axis=1),
                           cols=np.minimum(flow, cap) - kept.sum(axis=0))
    start = np.where(active, kept + step, 0.0)
    if not np.all(start[active] > 0):
        start = kept * (lam / kept.sum(axis=1))[:, None]
    start_nu, start_beta = _prices(c, start, active, pinned, nu, beta, backends)
    start_score = _violation(c, mask, start, start_nu, start_beta, backends)

    f = start.copy()
    nu_hat = nu.copy()
    steps = 0
    for _ in range(max_steps):
        flow = f.sum(axis=0)
        g = backends.marginal(flow)
        kappa = np.maximum(np.abs(nu_hat), 1e-6 * level)
        grad = np.where(active, c + g[None, :] - nu_hat[:, None], 0.0)
        q = np.where(pinned, np.inf, backends.curvature(flow))
        dinv = np.where(active, f / (rho * kappa[:, None]), 0.0)
        step, w = _newton_step(dinv, q, grad)
        steps += 1
        if not np.all(np.isfinite(step)):
            break
        nu_hat = nu_hat - w
        if np.all(np.abs(step[active]) <= 1e-13 * f[active]):
            break
        # Fraction to the boundary: an edge reaching zero leaves the active set,
        # a backend reaching its capacity is held there.
        with np.errstate(divide="ignore", invalid="ignore"):
            edge_limit = np.where(active & (step < 0), -f / step, np.inf)
            dflow = step.sum(axis=0)
            cap_limit = np.where(fin & ~pinned & (dflow > 0), (cap - flow) / dflow, np.inf)
        s = min(1.0, edge_limit.min(initial=np.inf), cap_limit.min(initial=np.inf))
        f = np.where(active, f + s * step, 0.0)
        leaving = active & (edge_limit <= s * (1 + 1e-12))
        if leaving.any():
            active &= ~leaving
            f = np.where(active, np.maximum(f, 0.0), 0.0)
        pinned |= cap_limit <= s * (1 + 1e-12)
        f *= (lam / f.sum(axis=1))[:, None]

    nu_p, beta_p = _prices(c, f, active, pinned, nu_hat, beta, backends)
    score = _violation(c, mask, f, nu_p, beta_p, backends)
    if score <= start_score and np.all(f.sum(axis=0)[fin] < backends.capacity[fin]):
        return f, nu_p, beta_p, steps
    return start, start_nu, start_beta, steps


def _prices(c, f, active, pinned, nu_est, beta_est, backends):
    """``nu`` and ``beta`` consistent with ``2 d_ij + g_j + beta_j = nu_i`` on the active edges.

    Prices are propagated along a spanning tree of each component of the
    active graph, rooted at an unheld backend (whose price ``g_j`` is known);
    a component of held backends only is anchored at its frontends' estimates.
    """
    F, B = f.shape
    flow = f.sum(axis=0)
    g = backends.marginal(flow)
    known = (flow > 0) & ~pinned
    price = np.where(known, g, np.nan)
    nu = np.full(F, np.nan)
    graph = scipy.sparse.coo_matrix((np.ones(int(active.sum())), (*np.nonzero(active),)), shape=(F, B))
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
        order, pred = scipy.sparse.csgraph.breadth_first_order(adjacency, root, directed=False, return_predecessors=True)
        for v in order[1:]:
            p = pred[v]
            if v < F:
                nu[v] = c[v, p - F] + price[p - F]
            elif not known[v - F]:
                price[v - F] = nu[p] - c[p, v - F]
        if not anchors.size:
            # Only held backends: their capacity prices must be >= 0.
            lift = max(0.0, float(np.max(g[backs] - price[backs])))
            nu[fronts] += lift
            price[backs] += lift
    beta = np.where(pinned & (flow > 0), np.maximum(np.nan_to_num(price - g, nan=0.0), 0.0), 0.0)
    return nu, beta


def _violation(c, mask, f, nu, beta, backends) -> float:
    """Relative KKT excess of used edges over the cheapest connected edge (see :func:`kkt_violation`)."""
    flow = f.sum(axis=0)
    price = backends.marginal(flow) + beta
    cost = np.where(mask, c + price[None, :], np.inf)
    best = cost.min(axis=1)
    scale = np.maximum(np.abs(best), 1e-300)
    lam = f.sum(axis=1)
    excess = np.where(f > USED * lam[:, None], (cost - best[:, None]) / scale[:, None], 0.0)
    return float(excess.max(initial=0.0))
