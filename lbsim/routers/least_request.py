"""Least outstanding requests, counted by each frontend itself (Envoy / NGINX ``least_conn``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from .base import Router, register

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


class LeastRequestParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    choices: int = Field(
        2, ge=0, description="backends sampled per job (without replacement): 0 = all usable ones, 2 = power of two"
    )


@register
class LeastRequest(Router):
    """Least outstanding requests, counted by the frontend itself (Envoy / NGINX ``least_conn``).

    Frontend i counts the jobs it has sent to backend j whose responses it
    has not yet received (incremented when it routes, decremented when the
    response lands, so the count includes both network legs). It needs no
    telemetry at all and sees nothing of the other frontends' traffic. Each
    job samples ``choices`` distinct usable backends (0: all of them) and
    goes to the one with the fewest of this frontend's requests; ties random.
    Envoy's ``LEAST_REQUEST`` defaults to two choices (Mitzenmacher, "The
    power of two choices in randomized load balancing", 2001).
    """

    name = "least_request"
    Params = LeastRequestParams
    params: LeastRequestParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.in_flight = [[0] * ctx.num_backends for _ in range(ctx.num_frontends)]

    def route(self, frontend: int, job: Job, view: View) -> int:
        candidates: Sequence[int] = self.neighbours[frontend]
        if self.params.choices > 0:
            candidates = self.sample(candidates, self.params.choices)
        counts = self.in_flight[frontend]
        j = self.pick_min(candidates, [counts[j] for j in candidates])
        counts[j] += 1
        return j

    def on_response(self, frontend: int, job: Job) -> None:
        self.in_flight[frontend][job.backend] -= 1
