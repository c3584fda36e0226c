"""A backend: jobs sharing a load-dependent service rate mu_j(x_j), with exact event times.

Disciplines (DESIGN.md section 1) are one mechanism with two knobs:

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
events, so event times are exact.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from heapq import heappop, heappush

import numpy as np
from simpy.core import NORMAL

from ..events import Wakeup
from ..jobs import Job

INF = math.inf


class Backend:
    __slots__ = (
        "index", "env", "rate_function", "mean_size", "capacity", "rate_counts_all", "multiplier",
        "jobs", "service", "waiting", "virtual", "t_last", "rate", "_rates", "_scheduled", "_version",
        "on_done", "history_t", "history_n", "history_window", "_prune_at", "next_done", "lazy", "observer",
    )  # fmt: skip

    def __init__(self, index, spec, mean_size, env, on_done, history_window, lazy=True, rate_tables=None):
        self.index = index
        self.lazy = lazy
        self.next_done = INF
        self.env = env
        self.rate_function = spec.service
        self.mean_size = mean_size
        if spec.discipline == "fifo":
            self.capacity, self.rate_counts_all = 1, True
        elif spec.max_load is not None:
            self.capacity, self.rate_counts_all = max(1, int(spec.max_load / mean_size + 1e-9)), False
        else:
            self.capacity, self.rate_counts_all = INF, True
        self.multiplier = 1.0
        self.jobs = 0  # n_j: jobs present, in service or waiting
        self.service: list[tuple[float, int, Job]] = []  # heap of (finish tag, job_id, job)
        self.waiting: deque[Job] = deque()
        self.virtual = 0.0
        self.t_last = 0.0
        self.rate = 0.0
        # mu_j(n * sbar) by n: x_j only takes these values. Backends with the same
        # rate function share one table.
        tables = {} if rate_tables is None else rate_tables
        self._rates = tables.setdefault((spec.service, mean_size), [])
        self._scheduled: tuple | None = None  # (rate, in service, head tag) of the pending completion
        self._version = 0
        self.on_done = on_done
        #: optional per-job hooks ``arrived(job, now, rif)`` / ``finished(job, now)`` and
        #: ``estimate(rif)``: the latency-at-RIF tracker Prequal's probes read
        self.observer = None
        # Telemetry history: (time, jobs) at every change, pruned to the longest delay.
        self.history_window = history_window
        self.history_t = [-INF]
        self.history_n = [0]
        self._prune_at = 8

    # -- state ------------------------------------------------------------------------
    @property
    def load(self) -> float:
        """x_j = n_j * sbar."""
        return self.jobs * self.mean_size

    def rate_at(self, n: int) -> float:
        """mu_j(n * sbar), from a table filled in vectorised chunks (a numpy call per job would dominate)."""
        rates = self._rates
        if n >= len(rates):
            more = np.arange(len(rates), max(n + 1, 2 * len(rates) + 16)) * self.mean_size
            rates.extend(self.rate_function.value(more).tolist())
        return rates[n]

    def latency_estimate(self) -> float:
        """What the backend answers a probe about latency (NaN without an observer)."""
        return self.observer.estimate(self.jobs) if self.observer is not None else float("nan")

    def jobs_at(self, t: float) -> int:
        """n_j as it was at time t (t within the history window; caught up to t first)."""
        if self.next_done <= t:
            self.catch_up(t)
        return self.history_n[bisect_right(self.history_t, t) - 1]

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
        if record and self.history_window is not None:
            self.history_t.append(now)
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

    def _prune(self, now: float) -> None:
        # Keep the last change at or before now - window: it is the state a
        # frontend with the longest delay still sees.
        k = bisect_right(self.history_t, now - self.history_window) - 1
        if k > 0:
            del self.history_t[:k]
            del self.history_n[:k]
        self._prune_at = max(8, 2 * len(self.history_t))
