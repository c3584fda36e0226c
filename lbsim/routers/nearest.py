"""Nearest: each job to the usable backend with the smallest one-way delay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Router, register
from .fluid_base import FluidRouter, fluid_twin, tie_split

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class Nearest(Router):
    """Send each job to the usable backend with the smallest one-way delay d_ij (ties random).

    Ignores load entirely: the network-only extreme.
    """

    name = "nearest"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self._nearest = []
        for i, nb in enumerate(self.neighbours):
            d = [float(ctx.delay[i, j]) for j in nb]
            self._nearest.append([j for j, dj in zip(nb, d) if dj == min(d)])

    def route(self, frontend: int, job: Job, view: View) -> int:
        nearest = self._nearest[frontend]
        return nearest[0] if len(nearest) == 1 else self.choice(nearest)


@fluid_twin(Nearest)
class FluidNearest(FluidRouter):
    """``nearest``: all of a frontend's flow to its closest usable backends (ties share equally)."""

    def initial_split(self) -> np.ndarray:
        return tie_split(self.model.delay, self.model.connect, 0.0)
