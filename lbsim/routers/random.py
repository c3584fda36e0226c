"""Random: each job to a uniformly random usable backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Router, register
from .fluid_base import FluidRouter, fluid_twin

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class Random(Router):
    """Send each job to a uniformly random usable backend."""

    name = "random"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        # The next picks of each frontend, drawn in batches (last first): the
        # choice does not depend on the state, so it can be made ahead of time.
        self._picks: list[list[int]] = [[] for _ in self.neighbours]

    def route(self, frontend: int, job: Job, view: View) -> int:
        picks = self._picks[frontend]
        if not picks:
            candidates = np.array(self.neighbours[frontend])
            draws = self.ctx.rng.integers(len(candidates), size=self._UNIFORM_BATCH)
            picks = self._picks[frontend] = candidates[draws].tolist()
        return picks.pop()


@fluid_twin(Random)
class FluidRandom(FluidRouter):
    """``random``: each frontend splits its flow evenly over N(i) (the base class's split)."""
