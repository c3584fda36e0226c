"""Weighted round robin with weights from observed throughput and utilisation (Prequal's incumbent)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import Router, register
from .tables import MarginalTable

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


class WRRParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    interval: float = Field(1.0, gt=0, description="seconds between weight updates")
    smoothing: float = Field(
        0.3, gt=0, le=1, description="EWMA weight of the newest interval in throughput and utilisation"
    )
    min_weight: float = Field(
        0.01, ge=0, lt=1, description="floor on a weight, as a fraction of the frontend's largest weight"
    )


@register
class WRR(Router):
    """Weighted round robin with weights = observed throughput / utilisation (Prequal's incumbent).

    Wydrowski et al., "Load is not what you should balance: Introducing
    Prequal", NSDI 2024, section 2: YouTube's balancer before Prequal gave
    each replica a weight from its recent query rate and CPU utilisation,
    i.e. an estimate of the rate the replica could serve at full utilisation,
    so that utilisations even out. Here, per frontend i and backend j, every
    ``interval`` seconds:

    * throughput ``T_ij``: work in the responses frontend i received from j
      during the interval, per second (EWMA with weight ``smoothing``);
    * utilisation ``U_ij``: ``mu_j(xhat_ij) / cap_j`` on the delayed view,
      ``cap_j = sup mu_j``; for unbounded families (``linear``, ``power``)
      ``cap_j`` is the total demand Lambda, the most any backend could be
      asked to serve (EWMA likewise);
    * weight ``w_ij = T_ij / U_ij``, floored at ``min_weight`` times the
      frontend's largest weight so that no backend starves (a backend that
      gets nothing returns no throughput, and would never be tried again).
      Where ``U_ij`` is 0 (never seen busy) the weight is the largest one.

    At steady state ``T_ij / U_ij`` is ``cap_j`` times frontend i's share of
    j's traffic, so a lone frontend converges to capacity-proportional
    weights. Before the first update the weights are equal (round robin).
    The sequence is nginx's smooth weighted round robin: each job adds
    every weight to its backend's running credit, takes the backend with
    the most credit (first in index order on ties), and charges it the
    total weight; over any ``sum w`` jobs each backend is chosen in
    proportion to its weight, interleaved rather than in runs. The credits
    of a frontend are one numpy array, so a job costs two numpy calls
    (add the weights, take the first largest credit) whatever the fleet:
    the same IEEE additions, in the same order per backend, as a loop.
    """

    name = "wrr"
    uses_rates = True
    Params = WRRParams
    params: WRRParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.tick_interval = params.interval
        F, B = ctx.num_frontends, ctx.num_backends
        total_demand = float(np.sum(ctx.demand))
        self._capacity = [r.supremum if math.isfinite(r.supremum) else total_demand for r in ctx.rates]
        self._utilisation_tables = [
            MarginalTable(lambda x, r=r, c=c: r.value(x) / c, ctx.mean_size)
            for r, c in zip(ctx.rates, self._capacity)
        ]
        self._received = [[0.0] * B for _ in range(F)]  # work in responses this interval
        self.throughput = np.zeros((F, B))
        self.utilisation = np.zeros((F, B))
        self._seen = False
        #: w_ij over frontend i's neighbours, in their order
        self.weights = [np.ones(len(nb)) for nb in self.neighbours]
        self._credit = [np.zeros(len(nb)) for nb in self.neighbours]
        self._total = [float(len(nb)) for nb in self.neighbours]

    def on_response(self, frontend: int, job: Job) -> None:
        self._received[frontend][job.backend] += job.size

    def tick(self, now: float, view: View) -> None:
        a = self.params.smoothing
        interval = self.params.interval
        tables = self._utilisation_tables
        for i, nb in enumerate(self.neighbours):
            received = self._received[i]
            rate = np.array([received[j] for j in nb]) / interval
            util = np.array([tables[j][n] for j, n in zip(nb, view.jobs_of(i, nb))])
            if self._seen:
                self.throughput[i, nb] = (1 - a) * self.throughput[i, nb] + a * rate
                self.utilisation[i, nb] = (1 - a) * self.utilisation[i, nb] + a * util
            else:
                self.throughput[i, nb] = rate
                self.utilisation[i, nb] = util
            self._received[i] = [0.0] * len(received)
            self.set_weights(i, self.estimate_weights(self.throughput[i, nb], self.utilisation[i, nb]))
        self._seen = True

    def estimate_weights(self, throughput: np.ndarray, utilisation: np.ndarray) -> np.ndarray:
        """``T / U`` floored at ``min_weight * max``; backends never seen busy get the largest weight."""
        busy = utilisation > 0.0
        w = np.zeros_like(throughput)
        w[busy] = throughput[busy] / utilisation[busy]
        top = w.max() if busy.any() and w.max() > 0.0 else 1.0
        w[~busy] = top
        return np.maximum(w, self.params.min_weight * top)

    def set_weights(self, frontend: int, weights: Sequence[float] | np.ndarray) -> None:
        values = [float(w) for w in weights]
        self.weights[frontend] = np.array(values)
        self._total[frontend] = float(sum(values))  # (summed in order, as the credits are charged)

    def route(self, frontend: int, job: Job, view: View) -> int:
        credit = self._credit[frontend]
        credit += self.weights[frontend]
        best = int(credit.argmax())  # the first of the largest, as nginx's strict comparison in index order
        credit[best] -= self._total[frontend]
        return self.neighbours[frontend][best]

    def split(self) -> np.ndarray:
        """The weights normalised per frontend: the long-run split WRR realises (recorded)."""
        p = np.zeros((self.ctx.num_frontends, self.ctx.num_backends))
        for i, nb in enumerate(self.neighbours):
            p[i, nb] = self.weights[i] / self._total[i]
        return p
