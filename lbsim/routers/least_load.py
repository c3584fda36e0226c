"""Least load: each job to the usable backend with the least observed load."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Router, register
from .fluid_base import TieRouter, fluid_twin

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class LeastLoad(Router):
    """Send each job to the usable backend with the least observed load xhat_ij (ties random)."""

    name = "least_load"
    scans_backends = True

    def route(self, frontend: int, job: Job, view: View) -> int:
        if view.vectorised:
            # x_hat = n_hat * sbar with sbar > 0 orders and ties the backends as n_hat does
            return self.pick_least(frontend, view.jobs_array(frontend))
        candidates = self.neighbours[frontend]
        return self.pick_min(candidates, view.loads_of(frontend, candidates))


@fluid_twin(LeastLoad)
class FluidLeastLoad(TieRouter):
    """``least_load``: ``argmin_j xhat_ij``, band-regularised (the signal is the load itself)."""
