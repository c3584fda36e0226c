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
makes it oscillate (ALGORITHMS.md).
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import register
from .gmsr import COST_CAP, marginal_cost_table
from .weighted import SplitRouter


def project_simplex(v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Euclidean projection of each row of ``v`` onto the probability simplex (over ``mask``).

    Duchi, Shalev-Shwartz, Singer, Chandra, "Efficient projections onto the
    l1-ball for learning in high dimensions", ICML 2008, Figure 1: sort the
    row decreasingly into u, let

        rho = max{k : u_k - (sum_{r<=k} u_r - 1) / k > 0},
        theta = (sum_{r<=rho} u_r - 1) / rho,

    and return ``max(v - theta, 0)``. Vectorised over rows and entries (one
    sort per call, no Python loop). Entries outside ``mask`` (same shape,
    True where allowed) are 0 in the result and take no part in the
    projection; every row must allow at least one entry.
    """
    v = np.asarray(v, dtype=float)
    if v.ndim == 1:
        return project_simplex(v[None, :], None if mask is None else np.asarray(mask)[None, :])[0]
    rows, n = v.shape
    k = _ranks(n)
    if mask is None:
        u = np.sort(v, axis=1)[:, ::-1]
        cssv = u.cumsum(axis=1) - 1.0
        positive = u * k > cssv
    else:
        mask = np.asarray(mask, dtype=bool)
        # Forbidden entries sort last and are cut off by `valid`: they never enter the support.
        u = np.sort(np.where(mask, v, v[mask].min() - 1.0), axis=1)[:, ::-1]
        valid = k <= mask.sum(axis=1)[:, None]
        cssv = np.where(valid, u, 0.0).cumsum(axis=1) - 1.0
        positive = valid & (u * k > cssv)
    # `positive` is a prefix of each row (Duchi et al., Lemma 2) and holds k = 1
    # (u_1 - (u_1 - 1) = 1 > 0), so rho is its length and is >= 1.
    rho = positive.sum(axis=1)
    theta = cssv[np.arange(rows), rho - 1] / rho
    w = np.maximum(v - theta[:, None], 0.0)
    return w if mask is None else np.where(mask, w, 0.0)


@functools.lru_cache(maxsize=None)
def _ranks(n: int) -> np.ndarray:
    """1, 2, ..., n as floats (cached: the projection runs every tick on the same width)."""
    ranks = np.arange(1.0, n + 1.0)
    ranks.setflags(write=False)
    return ranks


class DGDLBParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: float = Field(
        0.05,
        gt=0,
        description=(
            "gradient step (1/s^2): each tick moves p_i by step*interval*g_i (g in seconds). "
            "Ours; stable on the bundled scenarios, see ALGORITHMS.md for the delay limit"
        ),
    )
    interval: float = Field(0.1, gt=0, description="seconds between gradient steps")
    init: Literal["uniform", "nearest", "optimal"] = Field(
        "uniform",
        description="initial split: 'uniform' over N(i), 'nearest' (all on the closest backends) or 'optimal'",
    )
    cost_cap: float = Field(
        COST_CAP,
        gt=0,
        description="cap (s) on the marginal cost 1/mu_j' where the marginal rate vanishes (saturation)",
    )


@register
class DGDLB(SplitRouter):
    """Distributed gradient descent on routing splits (DGD-LB): a projected gradient step every interval.

    Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693. Every ``interval`` s each
    frontend computes ``g_ij = 2 d_ij + 1/mu_j'(xhat_ij)`` on its delayed view
    and sets ``p_i <- Proj_simplex(p_i - step * interval * g_i)`` over N(i)
    (Duchi et al. 2008 projection, :func:`project_simplex`). Between ticks
    each job samples its backend from p_i.

    ``step * interval`` is the discrete step, so ``step`` is the rate of the
    continuous-time dynamics ``dp_i/dt = -step * Proj_T(g_i)`` that the
    ticks integrate (forward Euler), whatever the interval. With one
    frontend and two identical backends the linearised loop is
    ``D'' + a D' + K D(t - T) = 0`` (ALGORITHMS.md) with ``a = mu'(x*)``,
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
    Params = DGDLBParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.tick_interval = params.interval
        self._costs = [marginal_cost_table(r, ctx.mean_size, params.cost_cap) for r in ctx.rates]
        self._round_trip = 2.0 * np.where(ctx.connect, ctx.latency, 0.0)
        self.set_split(self.initial_split(params.init))

    def initial_split(self, init: str) -> np.ndarray:
        ctx = self.ctx
        connect = ctx.connect
        if init == "uniform":
            return connect.astype(float)
        if init == "nearest":
            d = np.where(connect, ctx.latency, np.inf)
            return (d == d.min(axis=1, keepdims=True)).astype(float)
        from ..optimum import optimum

        return np.array(optimum(ctx.scenario).routing, dtype=float)

    def gradient(self, view) -> np.ndarray:
        """``g_ij = 2 d_ij + min(1/mu_j'(xhat_ij), cost_cap)`` (seconds), shape (F, B); 0 off N(i)."""
        costs = self._costs
        marginal = np.zeros(self._round_trip.shape)
        for i, nb in enumerate(self.neighbours):
            marginal[i, nb] = [costs[j][n] for j, n in zip(nb, view.jobs_of(i, nb))]
        return self._round_trip + marginal

    def tick(self, now, view):
        eta = self.params.step * self.params.interval
        self.set_split(project_simplex(self._split - eta * self.gradient(view), self.ctx.connect))
