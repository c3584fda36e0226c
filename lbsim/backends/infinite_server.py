"""The backend model ``infinite_server``: every job is served at once at its own fixed speed.

An infinite-server station (M/G/inf): no job waits and none slows another, so
a job of size s stays exactly ``s / speed`` seconds, whatever else is there.
It stands for a backend with no contention (an external service far from
saturation) and is the smallest complete example of a backend model
(docs/extending.md). Its fluid rate is ``mu(x) = speed * x / sbar`` (x/sbar
jobs, each served at ``speed``), the ``linear`` family; the same station is the
``rate`` model with ``ps`` and ``linear`` of ``r = speed / sbar``.
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import Any, ClassVar

from pydantic import Field
from simpy.core import NORMAL

from ..events import Wakeup
from ..jobs import Job
from ..rates import Linear, RateFamily
from .base import BackendContext, BackendModel, BackendParams, Workload, register_backend


class InfiniteServerParams(BackendParams):
    speed: float = Field(1.0, gt=0, allow_inf_nan=False, description="work units per second each job is served at")


@register_backend
class InfiniteServer(BackendModel):
    """Every job in service at once at a fixed speed: a job of size s stays s / speed (M/G/inf)."""

    __slots__ = ("_t_served", "_version", "in_service", "speed")

    name: ClassVar[str] = "infinite_server"
    Params = InfiniteServerParams
    examples: ClassVar[tuple[dict[str, Any], ...]] = ({"speed": 0.8},)

    def __init__(self, index: int, params: InfiniteServerParams, context: BackendContext):
        super().__init__(index, params, context)
        self.speed = params.speed
        self.in_service: list[tuple[float, int, Job]] = []  # heap of (done time, job_id, job)
        self._version = 0  # eager mode: completion events made stale by a newer head are dropped
        self._t_served = 0.0  # ``served`` counts the work up to this time: speed per job in service since

    def arrive(self, job: Job) -> None:
        now = self.env.now
        self.catch_up(now)
        job.t_backend_arrival = now
        self._serve(now)
        heappush(self.in_service, (now + job.size / self.speed, job.job_id, job))
        self.jobs += 1
        self.record(now)
        self._next()

    def catch_up(self, now: float) -> None:
        while self.next_done <= now:
            self._finish()

    def _finish(self) -> None:
        self._serve(self.in_service[0][0])
        t, _, job = heappop(self.in_service)
        self.next_done = float("inf")  # the pending event is spent: _next schedules the new head, even a tie
        self.jobs -= 1
        self.record(t)
        self._next()
        self.context.on_done(job, t)

    def _serve(self, t: float) -> None:
        """Add the work served up to t: each job in service got ``speed`` per second."""
        self.served += (t - self._t_served) * self.speed * len(self.in_service)
        self._t_served = t

    def work_served(self, t: float) -> float:
        self.catch_up(t)
        return self.served + (t - self._t_served) * self.speed * len(self.in_service)

    def _next(self) -> None:
        head = self.in_service[0][0] if self.in_service else float("inf")
        if head == self.next_done:
            return
        self.next_done = head
        if not self.context.lazy and self.in_service:
            self._version += 1
            self.env.schedule(Wakeup(self._complete, self._version), NORMAL, head - self.env.now)

    def _complete(self, event: Wakeup) -> None:
        if event.payload == self._version:
            self._finish()

    @classmethod
    def rate_function(cls, params: InfiniteServerParams, workload: Workload) -> RateFamily:  # type: ignore[override]
        return Linear(r=params.speed / workload.mean_size)
