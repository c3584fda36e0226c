"""Round robin: each frontend cycles through its usable backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Router, register
from .fluid_base import FluidRouter, fluid_twin

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class RoundRobin(Router):
    """Cycle through the usable backends, each frontend on its own."""

    name = "round_robin"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self._next = [0] * ctx.num_frontends

    def route(self, frontend: int, job: Job, view: View) -> int:
        candidates = self.neighbours[frontend]
        k = self._next[frontend]
        self._next[frontend] = (k + 1) % len(candidates)
        return candidates[k]


@fluid_twin(RoundRobin)
class FluidRoundRobin(FluidRouter):
    """``round_robin``: each frontend splits its flow evenly over N(i), as ``random`` does in the limit."""
