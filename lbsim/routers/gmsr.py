"""GMSR: route each job where it raises the service rate most.

Zhang, Balseiro, Kleinberg, Mirrokni, Sivan, Wydrowski, "Distributed Load
Balancing with Workload-Dependent Service Rates", arXiv:2411.17103: the
Greatest Marginal Service Rate policy sends a job from frontend i to

    argmax_{j in N(i)} mu_j'(xhat_ij)

It needs neither the arrival rates nor any coordination; without network
delay its fluid limit (job_scale -> 0) converges to the centralized optimum,
whose KKT conditions equalise the marginal costs 1/mu_j'(x_j) (docs/model.md
section 2). Its fluid twin, :class:`FluidGMSR`, is that limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import Router, register
from .fluid_base import FluidContext, TieRouter, fluid_twin
from .tables import (
    COST_CAP,
    TableMatrix,
    discrete_marginal_rate_table,
    marginal_cost,
    marginal_cost_table,
    marginal_rate_table,
)

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


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
      state, so it may herd when delays are large (docs/routers.md).

    Ties (identical backends at equal load, or several with ``mu' = +inf``
    at zero load) are broken uniformly with the router's RNG. Every variant
    is ``argmin_j offset_ij + key_j(nhat_ij)``, with ``key_j`` cached by job
    count (:class:`MarginalTable`), so a job costs one list lookup per
    usable backend and no numpy call.
    """

    name = "gmsr"
    scans_backends = True
    uses_rates = True
    Params = GMSRParams
    params: GMSRParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        sbar = ctx.mean_size
        if params.variant == "latency":
            self._keys = [marginal_cost_table(r, sbar, params.cost_cap) for r in ctx.rates]
            self._offsets = [[2.0 * float(ctx.delay[i, j]) for j in nb] for i, nb in enumerate(self.neighbours)]
        else:
            make = marginal_rate_table if params.variant == "derivative" else discrete_marginal_rate_table
            # argmax mu' is argmin -mu': one code path for every variant.
            self._keys = [make(r, sbar, sign=-1.0) for r in ctx.rates]
            self._offsets = [None] * ctx.num_frontends
        self._key_lists = [k.values for k in self._keys]
        self._key_matrix = TableMatrix(self._keys)
        self._offset_arrays = [
            np.zeros(ctx.num_backends) if o is None else np.array(2.0 * ctx.delay[i])
            for i, o in enumerate(self._offsets)
        ]

    def route(self, frontend: int, job: Job, view: View) -> int:
        if view.vectorised:  # large fleets: the keys of every backend in one numpy call
            values = self._key_matrix(view.jobs_array(frontend))
            if self._offsets[frontend] is not None:
                values = values + self._offset_arrays[frontend]
            return self.pick_least(frontend, values)
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


@fluid_twin(GMSR)
class FluidGMSR(TieRouter):
    """``gmsr``: flow to ``argmax_j mu_j'(xhat_ij)``; variant ``latency``: ``argmin 2 d_ij + 1/mu_j'(xhat_ij)``.

    Zhang et al., arXiv:2411.17103. The cost is the capped marginal cost
    ``min(1/mu_j', cost_cap)`` (the same order as ``-mu_j'``), so the band is
    relative to the best marginal rate. ``discrete`` is the same rule in the
    fluid limit (``sbar -> 0``).
    """

    def __init__(self, name: str, params: Any, model: FluidContext):
        self.network_aware = params.variant == "latency"
        super().__init__(name, params, model)

    def signal(self, x: np.ndarray) -> np.ndarray:
        return marginal_cost(self.model.rates.derivative(x), self.params.cost_cap)
