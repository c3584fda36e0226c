"""Power of d choices: sample d usable backends, join the one with the fewest observed jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from .base import Router, register

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


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
    params: PowerOfDParams

    def route(self, frontend: int, job: Job, view: View) -> int:
        sample = self.sample(self.neighbours[frontend], self.params.d)
        return self.pick_min(sample, view.jobs_of(frontend, sample))
