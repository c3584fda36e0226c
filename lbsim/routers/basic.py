"""Baselines that need no model of the backends: random, round robin, JSQ, power of d."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .base import Router, register


@register
class Random(Router):
    """Send each job to a uniformly random usable backend."""

    name = "random"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        # The next picks of each frontend, drawn in batches (last first): the
        # choice does not depend on the state, so it can be made ahead of time.
        self._picks: list[list[int]] = [[] for _ in self.neighbours]

    def route(self, frontend, job, view):
        picks = self._picks[frontend]
        if not picks:
            candidates = np.array(self.neighbours[frontend])
            draws = self.ctx.rng.integers(len(candidates), size=self._UNIFORM_BATCH)
            picks = self._picks[frontend] = candidates[draws].tolist()
        return picks.pop()


@register
class RoundRobin(Router):
    """Cycle through the usable backends, each frontend on its own."""

    name = "round_robin"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self._next = [0] * ctx.num_frontends

    def route(self, frontend, job, view):
        candidates = self.neighbours[frontend]
        k = self._next[frontend]
        self._next[frontend] = (k + 1) % len(candidates)
        return candidates[k]


@register
class JSQ(Router):
    """Join the shortest queue: the usable backend with the fewest observed jobs (n_hat_ij)."""

    name = "jsq"

    def route(self, frontend, job, view):
        candidates = self.neighbours[frontend]
        return self.pick_min(candidates, view.jobs_of(frontend, candidates))


class PowerOfDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    d: int = Field(2, ge=1, description="backends sampled per job (without replacement)")


@register
class PowerOfD(Router):
    """Power of d choices: sample d usable backends, join the one with the fewest observed jobs.

    Mitzenmacher, "The power of two choices in randomized load balancing" (2001).
    The per-job cost is O(d), whatever the number of backends.
    """

    name = "power_of_d"
    Params = PowerOfDParams

    def route(self, frontend, job, view):
        sample = self.sample(self.neighbours[frontend], self.params.d)
        return self.pick_min(sample, view.jobs_of(frontend, sample))
