"""JSQ, join the shortest queue: each job to the usable backend with the fewest observed jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Router, register
from .fluid_base import fluid_twin
from .least_load import FluidLeastLoad

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class JSQ(Router):
    """Join the shortest queue: the usable backend with the fewest observed jobs (n_hat_ij)."""

    name = "jsq"
    scans_backends = True

    def route(self, frontend: int, job: Job, view: View) -> int:
        if view.vectorised:  # large fleets: one array, kept up to date by the view
            return self.pick_least(frontend, view.jobs_array(frontend))
        candidates = self.neighbours[frontend]
        return self.pick_min(candidates, view.jobs_of(frontend, candidates))


@fluid_twin(JSQ)
class FluidJSQ(FluidLeastLoad):
    """``jsq``: ``argmin_j xhat_ij``; ``nhat = xhat / sbar`` orders the backends as the load does."""
