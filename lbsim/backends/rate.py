"""The backend model ``rate``: jobs sharing a load-dependent service rate mu_j(x_j), with exact event times.

Disciplines (docs/model.md section 1) are one mechanism with two knobs:

* the *service set* holds at most ``capacity`` jobs (``ps``: all of them,
  ``fifo``: the head of line, ``ps`` with ``max_load = L``: floor(L/sbar));
  the rest wait in FIFO order;
* the total rate is ``multiplier * mu_j(m * sbar)`` with ``m`` the number of
  jobs present (``ps``, ``fifo``) or in service (``max_load``), shared
  equally by the jobs in service.

Completions need no event of their own unless someone must hear of them the
moment they happen: between its arrivals a backend evolves on its own, so it
keeps ``next_done`` (the time of its next completion) and :meth:`catch_up`
plays its completions forward whenever its state is looked at (an arrival, a
telemetry read, a probe, a sample, the end of the run). With ``lazy=False``
(routers that react to responses, telemetry ``none``) every change instead
reschedules the backend's own next completion as a SimPy event, and events
made stale by a later change are dropped by their version number. Both give
the same event times to the last bit; lazy saves a heap event per job.

Processor sharing is tracked in *virtual time*: ``virtual`` is the service
each job in service has received since the backend started, growing at
``rate / len(service)``. A job entering service at virtual time V with size s
leaves when ``virtual`` reaches ``V + s``, whatever happens to the rate in
between, so only the smallest such tag matters and the next completion is
``(tag - virtual) * len(service) / rate`` away. The rate is constant between
events, so event times are exact, and the work served between two events is
the rate times their distance (``served``, whether the jobs finish or not).
"""

from __future__ import annotations

import math
from collections import deque
from heapq import heappop, heappush
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import Field, field_validator, model_validator
from simpy.core import NORMAL

from ..errors import ScenarioError
from ..events import Wakeup
from ..jobs import Job
from ..rates import RateFamily, make_rate
from .base import BackendContext, BackendModel, BackendParams, Workload, register_backend

INF = math.inf


class RateParams(BackendParams):
    """The ``rate`` model's keys in a ``[[backends]]`` table."""

    discipline: Literal["ps", "fifo"] = Field(
        "ps", description="ps: jobs share the rate; fifo: the head of line gets it"
    )
    service: RateFamily = Field(description="the rate family mu(x), e.g. { kind = 'saturating', c = 4.0, k = 2.0 }")
    max_load: float | None = Field(None, gt=0, description="ps only: at most floor(max_load/sbar) jobs in service")

    @field_validator("service", mode="before")
    @classmethod
    def _service(cls, v: Any) -> RateFamily:
        return make_rate(v, key="service")

    @model_validator(mode="after")
    def _max_load_needs_ps(self) -> RateParams:
        if self.max_load is not None and self.discipline != "ps":
            raise ScenarioError("max_load", "only applies to discipline 'ps'")
        return self


@register_backend
class RateBackend(BackendModel):
    """Jobs sharing a load-dependent service rate mu(x) (processor sharing or FIFO), event times exact."""

    __slots__ = (
        "_keep_history",
        "_rates",
        "_scheduled",
        "_version",
        "capacity",
        "lazy",
        "mean_size",
        "mu",
        "multiplier",
        "on_done",
        "rate",
        "rate_counts_all",
        "service",
        "t_last",
        "virtual",
        "waiting",
    )  # fmt: skip

    name: ClassVar[str] = "rate"
    Params = RateParams
    examples: ClassVar[tuple[dict[str, Any], ...]] = (
        {"service": {"kind": "saturating", "c": 2.0, "k": 1.0}},
        {"discipline": "fifo", "service": {"kind": "batch", "a": 0.1, "b": 0.4}},
        {"service": {"kind": "servers", "r": 1.5, "k": 0.6}, "max_load": 0.9},
    )
    supports_antagonist: ClassVar[bool] = True

    def __init__(self, index: int, params: RateParams, context: BackendContext):
        super().__init__(index, params, context)
        self.lazy = context.lazy
        mean_size = self.mean_size = context.mean_size
        self.mu = params.service
        if params.discipline == "fifo":
            self.capacity: float = 1
            self.rate_counts_all = True
        elif params.max_load is not None:
            self.capacity, self.rate_counts_all = max(1, int(params.max_load / mean_size + 1e-9)), False
        else:
            self.capacity, self.rate_counts_all = INF, True
        self.multiplier = 1.0
        self.service: list[tuple[float, int, Job]] = []  # heap of (finish tag, job_id, job)
        # Jobs beyond the service set, in FIFO order; a backend that serves every job it holds (ps without
        # max_load) never has any, and shares one empty tuple instead of a deque of its own (a deque is
        # 600 bytes: a fleet of them is memory the hot path reads for nothing; appending would fail loudly).
        self.waiting: deque[Job] = deque() if self.capacity < INF else cast("deque[Job]", ())
        self.virtual = 0.0
        self.t_last = 0.0
        self.rate = 0.0
        # mu_j(n * sbar) by n: x_j only takes these values. Backends with the same
        # rate function share one table.
        self._rates = context.shared.setdefault((self.name, params.service, mean_size), [])
        self._scheduled: tuple | None = None  # (rate, in service, head tag) of the pending completion
        self._version = 0
        self.on_done = context.on_done
        self._keep_history = context.history_window is not None

    @classmethod
    def rate_function(cls, params: RateParams, workload: Workload) -> RateFamily:  # type: ignore[override]
        return params.service

    @classmethod
    def load_limit(cls, params: RateParams, workload: Workload) -> float:  # type: ignore[override]
        return params.max_load if params.max_load is not None else INF

    # -- state ------------------------------------------------------------------------
    def rate_at(self, n: int) -> float:
        """mu_j(n * sbar), from a table filled in vectorised chunks (a numpy call per job would dominate)."""
        rates = self._rates
        if n >= len(rates):
            more = np.arange(len(rates), max(n + 1, 2 * len(rates) + 16)) * self.mean_size
            rates.extend(self.mu.value(more).tolist())
        return rates[n]

    def work_served(self, t: float) -> float:
        """Work served in [0, t]: ``served`` (to the last event) plus the total rate times the time since."""
        if self.next_done <= t:
            self.catch_up(t)
        return self.served + (t - self.t_last) * self.rate if self.service else self.served

    # -- events -----------------------------------------------------------------------
    def arrive(self, job: Job) -> None:
        now = self.env._now
        while self.next_done <= now:  # catch_up(now), inlined: this runs once per job
            self._finish(self.next_done)
        job.t_backend_arrival = now
        if self.observer is not None:
            self.observer.arrived(job, now, self.jobs)
        service = self.service
        in_service = len(service)
        if in_service and self.rate > 0.0:
            self.virtual += (now - self.t_last) * self.rate / in_service
            self.served += (now - self.t_last) * self.rate
        self.t_last = now
        self.jobs += 1
        if in_service < self.capacity:
            heappush(service, (self.virtual + job.size, job.job_id, job))
        else:
            self.waiting.append(job)
        self._changed(now)

    def catch_up(self, now: float) -> None:
        """Play forward every completion due by ``now`` (lazy mode)."""
        while self.next_done <= now:
            self._finish(self.next_done)

    def _complete(self, event: Wakeup) -> None:
        """A scheduled completion event (eager mode)."""
        if event.payload == self._version:  # else superseded: the rate or the head changed since
            self._finish(self.env._now)

    def _finish(self, now: float) -> None:
        tag, _, job = heappop(self.service)
        # The job is done by definition; setting virtual to its tag avoids drift.
        self.virtual = tag
        self.served += (now - self.t_last) * self.rate
        self.t_last = now
        self.jobs -= 1
        if self.waiting:
            nxt = self.waiting.popleft()
            heappush(self.service, (tag + nxt.size, nxt.job_id, nxt))
        self._scheduled = None
        self._changed(now)
        if self.observer is not None:
            self.observer.finished(job, now)
        self.on_done(job, now)

    def set_multiplier(self, multiplier: float) -> None:
        """Scale mu_j from now on (antagonist load)."""
        now = self.env._now
        self.catch_up(now)
        if self.service and self.rate > 0.0:
            self.virtual += (now - self.t_last) * self.rate / len(self.service)
            self.served += (now - self.t_last) * self.rate
        self.t_last = now
        self.multiplier = multiplier
        self._scheduled = None
        self._changed(now, record=False)

    # -- internals --------------------------------------------------------------------

    def _changed(self, now: float, record: bool = True) -> None:
        """Recompute the rate and reschedule the next completion if it moved."""
        in_service = len(self.service)
        n = self.jobs if self.rate_counts_all else in_service
        try:  # (a try costs nothing in Python 3.11 until it catches)
            rate = self._rates[n]
        except IndexError:
            rate = self.rate_at(n)
        self.rate = rate = self.multiplier * rate
        if record and self._keep_history:
            self.history_t.append(now)  # record(now), inlined: this runs twice per job
            self.history_n.append(self.jobs)
            if len(self.history_t) >= self._prune_at:
                self._prune(now)
        if not in_service or rate <= 0.0:
            self._scheduled = None
            self._version += 1
            self.next_done = INF
            return
        head = self.service[0][0]
        scheduled = self._scheduled
        if scheduled is not None and scheduled[0] == rate and scheduled[1] == in_service and scheduled[2] == head:
            return  # same rate, same sharing, same head: the next completion has not moved
        self._scheduled = (rate, in_service, head)
        delay = (head - self.virtual) * in_service / rate
        if delay < 0.0:
            delay = 0.0
        self.next_done = now + delay
        if not self.lazy:
            self._version += 1
            self.env.schedule(Wakeup(self._complete, self._version), NORMAL, delay)
