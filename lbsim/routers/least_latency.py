"""Expected-latency routing: each job where it is expected to finish soonest, network included."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Router, register
from .fluid_base import TieRouter, fluid_twin
from .tables import MarginalTable, TableMatrix

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class LeastLatency(Router):
    """Expected-latency routing: min over N(i) of 2 d_ij + xhat_ij / mu_j(xhat_ij).

    ``x / mu(x)`` is a backend's mean sojourn at steady-state load ``x``
    (Little's law), so this is the rule "send each job where it is expected
    to finish soonest". It is selfish routing: at equilibrium it equalises
    average latencies (a Wardrop equilibrium) instead of marginal costs,
    and, as Zhang et al. (arXiv:2411.17103, abstract) put it for naive
    distributed policies, can be arbitrarily worse than the optimum: the
    Pigou example of ``scenarios/least_latency_trap.toml`` is 4x off and
    the ratio grows without bound as its batched backend's fixed cost -> 0.

    At ``xhat = 0`` the ratio is 0/0. We use ``sbar / mu_j(sbar)``: the
    expected sojourn of a job that joins an empty backend and so makes its
    load ``sbar``; in other words ``xhat`` is read as ``max(xhat, sbar)``.
    (The limit ``1/mu_j'(0)`` would be 0 for families with ``mu'(0) = inf``.)
    Cached by job count: no numpy call per job.
    """

    name = "least_latency"
    scans_backends = True
    uses_rates = True

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        sbar = ctx.mean_size

        def expected_sojourn(rate):
            def f(x):
                x = np.maximum(x, sbar)
                mu = rate.value(x)
                return np.where(mu > 0.0, x / mu, np.inf)

            return MarginalTable(f, sbar)

        self._sojourn = [expected_sojourn(r) for r in ctx.rates]
        self._sojourn_lists = [t.values for t in self._sojourn]
        self._round_trip = [[2.0 * float(ctx.delay[i, j]) for j in nb] for i, nb in enumerate(self.neighbours)]
        self._sojourn_matrix = TableMatrix(self._sojourn)
        self._round_trip_arrays = 2.0 * np.asarray(ctx.delay, dtype=float)

    def route(self, frontend: int, job: Job, view: View) -> int:
        if view.vectorised:  # large fleets: every backend's expected sojourn in one numpy call
            sojourn = self._sojourn_matrix(view.jobs_array(frontend))
            return self.pick_least(frontend, sojourn + self._round_trip_arrays[frontend])
        candidates = self.neighbours[frontend]
        counts = view.jobs_of(frontend, candidates)
        lists = self._sojourn_lists
        try:
            sojourn = [lists[j][n] for j, n in zip(candidates, counts)]
        except IndexError:  # a load never seen before: grow the tables
            tables = self._sojourn
            sojourn = [tables[j][n] for j, n in zip(candidates, counts)]
        return self.pick_min(candidates, [s + rtt for s, rtt in zip(sojourn, self._round_trip[frontend])])


@fluid_twin(LeastLatency)
class FluidLeastLatency(TieRouter):
    """``least_latency``: ``argmin_j 2 d_ij + xhat_ij / mu_j(xhat_ij)`` (``1/mu_j'(0)`` at 0, its limit)."""

    network_aware = True

    def signal(self, x: np.ndarray) -> np.ndarray:
        sojourn = np.where(x > 0.0, x / self.model.rates.value(x), self.model.cost_at_zero)
        return np.minimum(sojourn, 1e300)
