"""What a frontend can know about the backends: one View class per telemetry mode.

Routers read backend state only through a view, so a router can never see
fresher state than its telemetry mode allows (DESIGN.md invariant 5):

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
from collections.abc import Sequence

import numpy as np


class View:
    """Backend state as frontend i may see it. Subclasses define :meth:`jobs`."""

    #: how far back backends must keep their history for this view (None: no history)
    history_window: float | None = None

    def __init__(self, backends, latency: np.ndarray, mean_size: float, env):
        self.backends = backends
        self.delay = latency.tolist()  # nested lists: indexing numpy per job is slow
        self.mean_size = mean_size
        self.env = env

    def jobs(self, frontend: int, backend: int) -> int:
        """n_hat_ij: the job count of ``backend`` as ``frontend`` sees it now."""
        raise NotImplementedError

    def jobs_of(self, frontend: int, backends: Sequence[int]) -> list[int]:
        jobs = self.jobs
        return [jobs(frontend, j) for j in backends]

    def load(self, frontend: int, backend: int) -> float:
        """x_hat_ij = n_hat_ij * sbar."""
        return self.jobs(frontend, backend) * self.mean_size

    def loads_of(self, frontend: int, backends: Sequence[int]) -> list[float]:
        s = self.mean_size
        return [n * s for n in self.jobs_of(frontend, backends)]

    def loads(self, frontend: int) -> np.ndarray:
        """x_hat_i: every backend's observed load, shape (B,)."""
        return np.array(self.jobs_of(frontend, range(len(self.backends))), dtype=float) * self.mean_size


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


class PeriodicView(View):
    def __init__(self, backends, latency, mean_size, env, period: float):
        super().__init__(backends, latency, mean_size, env)
        self.period = period
        self.history_window = float(latency.max()) + period

    def jobs(self, frontend, backend):
        # The freshest report that has arrived: sent at k*period <= now - d_ij.
        sent = math.floor((self.env._now - self.delay[frontend][backend]) / self.period) * self.period
        return self.backends[backend].jobs_at(sent) if sent >= 0.0 else 0


class InstantView(View):
    def jobs(self, frontend, backend):
        b = self.backends[backend]
        now = self.env._now
        if b.next_done <= now:
            b.catch_up(now)
        return b.jobs


class LocalView(View):
    """No telemetry: jobs this frontend sent to the backend and has not heard back from."""

    def __init__(self, backends, latency, mean_size, env):
        super().__init__(backends, latency, mean_size, env)
        self.outstanding = [[0] * latency.shape[1] for _ in range(latency.shape[0])]

    def jobs(self, frontend, backend):
        return self.outstanding[frontend][backend]

    def jobs_of(self, frontend, backends):
        row = self.outstanding[frontend]
        return [row[j] for j in backends]


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
