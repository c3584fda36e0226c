"""What a frontend can know about the backends: one View class per telemetry mode.

Routers read backend state only through a view, so a router can never see
fresher state than its telemetry mode allows (docs/model.md invariant 5):

* ``delayed``  (default): frontend i sees backend j as it was d_ij ago;
* ``periodic``: backends report every ``period`` s (at multiples of it), each
  report reaching frontend i d_ij after it was sent;
* ``instant``: the current state (no delay; for ablations);
* ``none``: no telemetry at all; a frontend knows only the jobs it has sent
  to each backend whose responses it has not yet received.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from ..backends.base import EngineState
from ..view import View


class DelayedView(View):
    def __init__(self, backends, latency, mean_size, env):
        super().__init__(backends, latency, mean_size, env)
        self.history_window = float(latency.max()) if latency.size else 0.0

    def jobs(self, frontend, backend):
        return self.backends[backend].jobs_at(self.env._now - self.delay[frontend][backend])

    def jobs_of(self, frontend, backends):
        # jobs() unrolled: JSQ-like routers call this for every job over every backend.
        now = self.env._now
        delay = self.delay[frontend]
        everyone = self.backends
        seen = []
        for j in backends:
            b = everyone[j]
            t = now - delay[j]
            if b.next_done <= t:
                b.catch_up(t)
            seen.append(b.history_n[bisect_right(b.history_t, t) - 1])
        return seen


    def engine_state(self, frontend, backend):
        return self.backends[backend].engine_state_at(self.env._now - self.delay[frontend][backend])


class PeriodicView(View):
    def __init__(self, backends, latency, mean_size, env, period: float):
        super().__init__(backends, latency, mean_size, env)
        self.period = period
        self.history_window = float(latency.max()) + period

    def jobs(self, frontend, backend):
        # The freshest report that has arrived: sent at k*period <= now - d_ij.
        sent = math.floor((self.env._now - self.delay[frontend][backend]) / self.period) * self.period
        return self.backends[backend].jobs_at(sent) if sent >= 0.0 else 0

    def engine_state(self, frontend, backend):
        # Before the first report arrives: the state at t = 0 (nothing resident, every slot free).
        sent = math.floor((self.env._now - self.delay[frontend][backend]) / self.period) * self.period
        return self.backends[backend].engine_state_at(max(sent, 0.0))


class InstantView(View):
    def jobs(self, frontend, backend):
        b = self.backends[backend]
        now = self.env._now
        if b.next_done <= now:
            b.catch_up(now)
        return b.jobs


    def engine_state(self, frontend, backend):
        return self.backends[backend].engine_state_at(self.env._now)


class LocalView(View):
    """No telemetry: jobs this frontend sent to the backend and has not heard back from."""

    def __init__(self, backends, latency, mean_size, env):
        super().__init__(backends, latency, mean_size, env)
        self.outstanding = [[0] * latency.shape[1] for _ in range(latency.shape[0])]
        self.outstanding_work = [[0.0] * latency.shape[1] for _ in range(latency.shape[0])]

    def jobs(self, frontend, backend):
        return self.outstanding[frontend][backend]

    def jobs_of(self, frontend, backends):
        row = self.outstanding[frontend]
        return [row[j] for j in backends]

    def engine_state(self, frontend, backend):
        # Without telemetry a frontend knows only its own unanswered requests: their work (output tokens).
        return EngineState(self.outstanding_work[frontend][backend], 0, 0)


def make_view(mode: str, backends, latency, mean_size, env, period: float) -> View:
    if mode == "delayed" and not latency.any():
        return InstantView(backends, latency, mean_size, env)  # no delay: the same view, no history to keep
    if mode == "delayed":
        return DelayedView(backends, latency, mean_size, env)
    if mode == "periodic":
        return PeriodicView(backends, latency, mean_size, env, period)
    if mode == "instant":
        return InstantView(backends, latency, mean_size, env)
    return LocalView(backends, latency, mean_size, env)
