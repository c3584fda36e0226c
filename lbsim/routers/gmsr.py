"""GMSR: route each job where it raises the service rate most.

Zhang, Balseiro, Kleinberg, Mirrokni, Sivan, Wydrowski, "Distributed Load
Balancing with Workload-Dependent Service Rates", arXiv:2411.17103: the
Greatest Marginal Service Rate policy sends a job from frontend i to

    argmax_{j in N(i)} mu_j'(xhat_ij)

It needs neither the arrival rates nor any coordination; without network
delay its fluid limit (job_scale -> 0) converges to the centralized optimum,
whose KKT conditions equalise the marginal costs 1/mu_j'(x_j) (DESIGN.md
section 2). This module also holds :class:`MarginalTable`, the per-load
cache of mu_j, mu_j' and 1/mu_j' that the other model-based routers share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import Router, register

#: Default cap (seconds) on the marginal cost 1/mu_j'(x) where mu_j'(x) -> 0.
#: A backend whose marginal rate is below 1/COST_CAP looks saturated.
COST_CAP = 1.0e4


class MarginalTable:
    """``f(n * sbar)`` by job count ``n``, computed once per ``n`` and per backend.

    Observed loads are always ``n * sbar`` (DESIGN.md section 1), so a router
    that evaluates a rate function of the load on every job can index a list
    instead of calling numpy per job. ``function`` is vectorised (it takes
    an array of loads); the list grows on demand, doubling, one numpy call
    per growth.
    """

    __slots__ = ("function", "mean_size", "values")

    def __init__(self, function: Callable[[np.ndarray], np.ndarray], mean_size: float):
        self.function = function
        self.mean_size = mean_size
        self.values: list[float] = []

    def __getitem__(self, n: int) -> float:
        values = self.values
        if n >= len(values):
            grow = max(n + 1, 2 * len(values), 64)
            with np.errstate(all="ignore"):
                new = self.function(np.arange(len(values), grow) * self.mean_size)
            values.extend(np.asarray(new, dtype=float).tolist())
        return values[n]


def marginal_rate_table(rate, mean_size: float, sign: float = 1.0) -> MarginalTable:
    """``sign * mu'(n sbar)``: the marginal rate (may be +inf at n = 0, e.g. ``power`` with a < 1)."""
    return MarginalTable(lambda x: sign * rate.derivative(x), mean_size)


def discrete_marginal_rate_table(rate, mean_size: float, sign: float = 1.0) -> MarginalTable:
    """``sign * (mu((n+1) sbar) - mu(n sbar)) / sbar``: the rate one more job adds, per work unit."""
    return MarginalTable(lambda x: sign * (rate.value(x + mean_size) - rate.value(x)) / mean_size, mean_size)


def marginal_cost(derivative: np.ndarray, cap: float) -> np.ndarray:
    """``min(1/mu'(x), cap)``: the marginal serving cost in seconds, finite where ``mu' -> 0``.

    ``1/mu'`` is the derivative of the steady-state load ``mu^{-1}(Lambda)``
    with respect to the flow ``Lambda`` (DESIGN.md section 2), i.e. the extra
    load, hence the extra latency per unit of flow, that one more unit of
    flow causes. Saturated backends (``mu' = 0``, e.g. ``servers`` beyond its
    knee or ``constant`` when busy) have an infinite cost; the cap keeps
    arithmetic on it free of inf and NaN while still making them the most
    expensive choice.
    """
    derivative = np.asarray(derivative, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(derivative * cap <= 1.0, cap, 1.0 / derivative)


def marginal_cost_table(rate, mean_size: float, cap: float) -> MarginalTable:
    """``min(1/mu'(n sbar), cap)`` by job count."""
    return MarginalTable(lambda x: marginal_cost(rate.derivative(x), cap), mean_size)


class GMSRParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    variant: Literal["derivative", "discrete", "latency"] = Field(
        "derivative",
        description=(
            "'derivative': argmax mu_j'(xhat_ij); 'discrete': argmax mu_j(xhat_ij + sbar) - mu_j(xhat_ij); "
            "'latency': argmin 2 d_ij + 1/mu_j'(xhat_ij) (greedy DGD-LB gradient; may herd under delay)"
        ),
    )
    cost_cap: float = Field(
        COST_CAP, gt=0, description="variant 'latency': cap (s) on 1/mu_j' where the marginal rate vanishes"
    )


@register
class GMSR(Router):
    """Greatest marginal service rate: each job goes to the usable backend with the largest mu_j'(xhat_ij).

    Zhang et al., arXiv:2411.17103 (GMSR policy): route to
    ``argmax_{j in N(i)} mu_j'(xhat_ij)`` on the observed (delayed) load.
    Variants:

    * ``derivative`` (default): the paper's rule, ``mu_j'(xhat_ij)``;
    * ``discrete``: the finite difference ``mu_j(xhat_ij + sbar) - mu_j(xhat_ij)``
      (the rate one more job actually adds; the same rule as sbar -> 0);
    * ``latency``: ``argmin 2 d_ij + 1/mu_j'(xhat_ij)``, the network-aware
      greedy form of DGD-LB's gradient g_ij (Balseiro, Mirrokni, Wydrowski,
      arXiv:2504.10693); every job of a delay window follows the same stale
      state, so it may herd when delays are large (ALGORITHMS.md).

    Ties (identical backends at equal load, or several with ``mu' = +inf``
    at zero load) are broken uniformly with the router's RNG. Every variant
    is ``argmin_j offset_ij + key_j(nhat_ij)``, with ``key_j`` cached by job
    count (:class:`MarginalTable`), so a job costs one list lookup per
    usable backend and no numpy call.
    """

    name = "gmsr"
    Params = GMSRParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        sbar = ctx.mean_size
        if params.variant == "latency":
            self._keys = [marginal_cost_table(r, sbar, params.cost_cap) for r in ctx.rates]
            self._offsets = [[2.0 * float(ctx.latency[i, j]) for j in nb] for i, nb in enumerate(self.neighbours)]
        else:
            make = marginal_rate_table if params.variant == "derivative" else discrete_marginal_rate_table
            # argmax mu' is argmin -mu': one code path for every variant.
            self._keys = [make(r, sbar, sign=-1.0) for r in ctx.rates]
            self._offsets = [None] * ctx.num_frontends
        self._key_lists = [k.values for k in self._keys]

    def route(self, frontend, job, view):
        candidates = self.neighbours[frontend]
        counts = view.jobs_of(frontend, candidates)
        lists = self._key_lists
        try:
            values = [lists[j][n] for j, n in zip(candidates, counts)]
        except IndexError:  # a load never seen before: grow the tables
            keys = self._keys
            values = [keys[j][n] for j, n in zip(candidates, counts)]
        offsets = self._offsets[frontend]
        if offsets is not None:
            values = [v + o for v, o in zip(values, offsets)]
        best = min(values)
        if values.count(best) == 1:
            return candidates[values.index(best)]
        ties = [j for j, v in zip(candidates, values) if v == best]
        return ties[int(self.uniform() * len(ties))]
