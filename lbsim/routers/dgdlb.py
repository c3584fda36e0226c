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

    and return ``max(v - theta, 0)``. Vectorised over rows (one sort per
    call, no Python loop). Entries outside ``mask`` (an array of the same
    shape, True where allowed) are 0 in the result and take no part in the
    projection; every row must allow at least one entry.
    """
    v = np.asarray(v, dtype=float)
    squeeze = v.ndim == 1
    v2 = np.atleast_2d(v)
    allowed = np.ones(v2.shape, dtype=bool) if mask is None else np.atleast_2d(np.asarray(mask, dtype=bool))
    n = v2.shape[1]
    # Forbidden entries sort last (-inf) and never enter the support.
    u = -np.sort(-np.where(allowed, v2, -np.inf), axis=1)
    valid = np.arange(n) < allowed.sum(axis=1, keepdims=True)
    cssv = np.cumsum(np.where(valid, u, 0.0), axis=1) - 1.0
    ks = np.arange(1, n + 1)
    with np.errstate(invalid="ignore"):
        positive = valid & (u - cssv / ks > 0)
    # positive is a prefix (Duchi et al., Lemma 2): rho is its length (>= 1: u_1 - (u_1 - 1) = 1 > 0).
    rho = positive.sum(axis=1)
    theta = cssv[np.arange(len(rho)), rho - 1] / rho
    w = np.where(allowed, np.maximum(v2 - theta[:, None], 0.0), 0.0)
    return w[0] if squeeze else w


class DGDLBParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: float = Field(
        0.2,
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
    ticks integrate (forward Euler). With two identical backends the
    linearised loop is ``D'' + a D' + K D(t - T) = 0`` with
    ``K = step * lambda_i * d/dx[1/mu'](x*)``; the ticks add about one
    ``interval`` to the loop delay ``T = 2 d`` (half a tick for holding the
    split, half for sampling the gradient at the start of the tick), so use
    ``T = 2 d + interval`` when checking a step against ALGORITHMS.md's
    stability limit. The default ``step = 0.2`` is ours, not the paper's.

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
