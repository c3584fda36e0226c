"""Overload: the most work a scenario can serve, and which backends can be kept stable (docs/model.md section 2).

When no split keeps every backend below its capacity ``cap_j = sup mu_j``,
the throughput of a static routing is ``sum_j min(Lambda_j, cap_j)``: a
backend sent more than its capacity serves exactly its capacity while its
queue grows without bound. The GMSR paper's overload theorem (Zhang et al.,
arXiv:2411.17103) orders the routings lexicographically: the throughput
first, then the number of stable backends (``Lambda_j < cap_j``), then the
total steady-state load of the stable ones. This module computes the first
two, which are a maximum-flow problem; :func:`lbsim.optimum.solve_overload`
adds the third with the optimum's convex solver.

**Maximum throughput.** A maximum flow from a source through the frontends
(edge capacities ``lambda_i``), the usable edges (unbounded) and the backends
(``cap_j``) to a sink. It is solved as a linear program (HiGHS): maximise
``sum_ij f_ij`` subject to ``sum_j f_ij <= lambda_i`` and ``sum_i f_ij <= cap_j``.

**The stable backends.** Two maximum flows differ by a circulation in the
residual graph of either (Ford and Fulkerson, Flows in Networks, 1962;
Ahuja, Magnanti and Orlin, Network Flows, 1993, section 6.5), so a backend
``j`` can carry less than ``cap_j`` in *some* maximum flow iff the residual
graph of one maximum flow has a path from ``j`` to the sink. The nodes with
no such path are the source side ``X`` of the minimum cut with the largest
source side; every maximum flow saturates the backends in ``X`` and sends
nothing from a frontend outside ``X`` to them (that edge crosses the cut
backwards). The average of maximum flows is a maximum flow, so all the
backends outside ``X`` can be kept below capacity *at once*: they are the
largest set of stable backends, and it is unique. Backends of unbounded
capacity are never in ``X``.

Hence the overload optimum decomposes: frontends outside ``X`` send all their
demand to the stable backends, a problem the optimum solves (it is strictly
feasible); frontends in ``X`` can reach only unstable backends, fill them to
capacity and send them their excess, and the throughput is the cut's
capacity ``sum_{i not in X} lambda_i + sum_{j in X} cap_j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse

from .errors import ScenarioError

__all__ = ["Bottleneck", "Overload", "bottleneck"]

#: flows and slacks below this fraction of the problem's scale are zero (the LP's own accuracy is ~1e-9)
ZERO = 1e-9


@dataclass(frozen=True, eq=False)
class Bottleneck:
    """A maximum flow and the minimum cut with the largest source side.

    ``flow[i, j]`` is a maximum flow (F, B); ``throughput`` its value, the
    cut's capacity; ``stable[j]`` whether backend ``j`` can be kept below its
    capacity by a maximum flow; ``cut_frontends[i]`` whether frontend ``i``
    is on the source side (it reaches only unstable backends).
    """

    flow: np.ndarray
    throughput: float
    stable: np.ndarray
    cut_frontends: np.ndarray


def bottleneck(demand: np.ndarray, capacity: np.ndarray, connect: np.ndarray) -> Bottleneck:
    """The maximum flow from frontends of ``demand`` (F,) to backends of ``capacity`` (B,; inf: unbounded)."""
    demand = np.asarray(demand, dtype=float)
    capacity = np.asarray(capacity, dtype=float)
    connect = np.asarray(connect, dtype=bool)
    F, B = connect.shape
    ei, ej = np.nonzero(connect)
    E = ei.size
    finite = np.isfinite(capacity)
    scale = max(float(demand.sum()), float(capacity[finite].sum(initial=0.0)), 1e-300)
    if E == 0:
        return Bottleneck(np.zeros((F, B)), 0.0, np.ones(B, bool), np.ones(F, bool))
    bounded = np.flatnonzero(finite)
    where = np.full(B, -1)
    where[bounded] = np.arange(bounded.size)
    on_bounded = finite[ej]
    rows = np.concatenate([ei, F + where[ej[on_bounded]]])
    cols = np.concatenate([np.arange(E), np.flatnonzero(on_bounded)])
    a_ub = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(F + bounded.size, E)).tocsr()
    b_ub = np.concatenate([demand, capacity[bounded]]) / scale  # (normalised: HiGHS's tolerances are absolute)
    # (scipy-stubs type A_ub as a dense array only; HiGHS takes the sparse matrix as documented)
    lp = scipy.optimize.linprog(-np.ones(E), A_ub=a_ub, b_ub=b_ub, method="highs")  # type: ignore[call-overload]
    if lp.status != 0:
        raise RuntimeError(f"maximum-flow LP failed: {lp.message}")
    flow = np.zeros((F, B))
    flow[ei, ej] = np.maximum(lp.x, 0.0) * scale
    stable, reaches = _reach_sink(flow, capacity, connect, ZERO * scale)
    cut = ~reaches
    throughput = float(demand[~cut].sum() + capacity[~stable].sum())
    return Bottleneck(flow, throughput, stable, cut)


def _reach_sink(
    flow: np.ndarray, capacity: np.ndarray, connect: np.ndarray, zero: float
) -> tuple[np.ndarray, np.ndarray]:
    """Backends and frontends with a path to the sink in the residual graph of ``flow``.

    A backend with slack reaches the sink directly; a frontend reaches every
    backend it may use (those edges are unbounded); a backend reaches a
    frontend that sends it flow (the reverse edge). The source cannot reach
    the sink (the flow is maximum), so paths through it do not count.
    """
    slack = np.where(np.isfinite(capacity), capacity - flow.sum(axis=0), math.inf)
    backends: np.ndarray = np.asarray(slack > zero)
    sends = flow > zero
    while True:
        frontends = (connect & backends[None, :]).any(axis=1)
        more = backends | (sends & frontends[:, None]).any(axis=0)
        if (more == backends).all():
            return backends, frontends
        backends = more


@dataclass(frozen=True, eq=False)
class Overload:
    """The overload optimum of a scenario (GMSR's overload theorem, arXiv:2411.17103).

    ``routing[i, j]`` is the split ``p_ij`` (rows sum to 1: every job is
    routed); ``flow[j] = Lambda_j = sum_i lambda_i p_ij`` what backend ``j``
    receives and ``served[j] = min(Lambda_j, cap_j)`` what it serves;
    ``throughput = sum_j served[j]``, the most any routing serves. The
    ``stable_backends`` (indices) have ``Lambda_j < cap_j`` and the steady
    ``load[j] = mu_j^{-1}(Lambda_j)`` whose sum ``total_load`` is the least
    a maximum-throughput routing with that many stable backends allows; the
    ``unstable_backends`` get at least their capacity, and their load (NaN)
    grows without bound. ``overloaded`` is whether any backend is unstable.
    ``marginal_cost[j] = 1/mu_j'(load[j])`` and ``capacity_price[j]`` are the
    stable part's prices, as in :class:`~lbsim.optimum.Optimum` (NaN for the
    unstable backends).
    """

    overloaded: bool
    throughput: float
    demand: float
    stable_backends: np.ndarray
    unstable_backends: np.ndarray
    routing: np.ndarray
    flow: np.ndarray
    served: np.ndarray
    load: np.ndarray
    total_load: float
    marginal_cost: np.ndarray
    capacity_price: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: arrays as lists, the unstable backends' loads as ``None``."""
        return {
            "overloaded": bool(self.overloaded),
            "throughput": float(self.throughput),
            "demand": float(self.demand),
            "stable_backends": [int(j) for j in self.stable_backends],
            "unstable_backends": [int(j) for j in self.unstable_backends],
            "routing": self.routing.tolist(),
            "flow": self.flow.tolist(),
            "served": self.served.tolist(),
            "load": _finite(self.load),
            "total_load": float(self.total_load),
            "marginal_cost": _finite(self.marginal_cost),
            "capacity_price": _finite(self.capacity_price),
        }


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(x) if math.isfinite(x) else None for x in values.tolist()]


def saturating_routing(flow: np.ndarray, demand: np.ndarray, capacity: np.ndarray, connect: np.ndarray) -> np.ndarray:
    """The split of frontends on the cut's source side: the maximum flow, the excess shared by capacity.

    ``flow`` (F, B) is a maximum flow restricted to those frontends and the
    unstable backends. Each frontend's demand beyond its flow goes to the
    backends it may use in proportion to their capacities (any share keeps
    the throughput: those backends are full already); a frontend without
    demand is split the same way.
    """
    demand = np.asarray(demand, dtype=float)
    weight = np.where(connect, np.where(np.isfinite(capacity), capacity, 0.0)[None, :], 0.0)
    empty = weight.sum(axis=1) <= 0
    weight[empty] = connect[empty]
    share = weight / np.maximum(weight.sum(axis=1, keepdims=True), 1e-300)
    excess = np.maximum(demand - flow.sum(axis=1), 0.0)
    total = flow + excess[:, None] * share
    routing = np.where(demand[:, None] > 0, total / np.maximum(demand, 1e-300)[:, None], share)
    return routing / np.maximum(routing.sum(axis=1, keepdims=True), 1e-300)


def check_capacity(capacity: np.ndarray, demand: np.ndarray, connect: np.ndarray) -> None:
    """Inputs of :func:`bottleneck`: capacities > 0 (or inf), demands >= 0, every frontend with a backend."""
    if np.any(~(capacity > 0)):
        raise ScenarioError("backends", "every capacity sup mu_j must be > 0")
    lonely = np.flatnonzero(~connect.any(axis=1))
    if lonely.size:
        raise ScenarioError(f"network.connect[{lonely[0]}]", "frontend has no usable backend")
