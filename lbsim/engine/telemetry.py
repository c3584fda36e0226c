"""What a frontend can know about the backends: one View class per telemetry mode.

Routers read backend state only through a view, so a router can never see
fresher state than its telemetry mode allows (docs/model.md invariant 5):

* ``delayed``  (default): frontend i sees backend j as it was d_ij ago;
* ``periodic``: backends report every ``period`` s (at multiples of it), each
  report reaching frontend i d_ij after it was sent;
* ``instant``: the current state (no delay; for ablations);
* ``none``: no telemetry at all; a frontend knows only the jobs it has sent
  to each backend whose responses it has not yet received.

Routers that scan every usable backend (``jsq``, ``least_load``...) would pay
a Python call per backend per job; from :data:`VECTORISE_FROM` backends the
delayed and instant views instead keep numpy arrays of what each frontend
sees (:meth:`~lbsim.view.View.jobs_array`) and bring up to date only the
entries that may have changed since they were last read. An entry is
re-read, exactly as :meth:`View.jobs` reads it, once the clock passes the
time from which it may show a change; that time is kept a few units in the
last place early, so an entry is never shown after it has gone stale. A
backend's next change is either in its history or its next completion
(``next_done``); only the engine changes a backend earlier than that (an
arrival, an antagonist), and it says so with :meth:`~lbsim.view.View.touch`.
Backends are caught up in index order, and only those :meth:`View.jobs_of`
would have caught up, so a run is the same to the last bit either way.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from ..backends.base import BackendModel, EngineState
from ..view import View

#: from this many backends the delayed and instant views keep their arrays (below it, a Python scan is cheaper)
VECTORISE_FROM = 48
#: a time t + d_ij from which a change at t is visible, times this, is at least 3 ulps early: when
#: ``now`` is below it, ``now - d_ij < t`` in floating point too (t, d_ij >= 0)
EARLY = 1.0 - 1e-15


def _usable(connect: np.ndarray | None, shape: tuple[int, int]) -> list[np.ndarray | None]:
    """Each frontend's usable backends as a mask, or None where it may use them all."""
    if connect is None:
        return [None] * shape[0]
    return [None if row.all() else row.copy() for row in np.asarray(connect, dtype=bool)]


def _tokens_are_loads(view: View) -> bool:
    """Whether every backend keeps the contract's ``engine_state_at`` (``rate``, ``infinite_server``): its
    tokens are then its load ``n_j * sbar``, read at the same instant as its jobs (the same floats)."""
    loads = view._tokens_are_loads  # type: ignore[attr-defined]
    if loads is None:  # (the engine hands the view its backends after building it)
        loads = view._tokens_are_loads = all(  # type: ignore[attr-defined]
            getattr(type(b), "engine_state_at", None) is BackendModel.engine_state_at for b in view.backends
        )
    return bool(loads)


def _tokens_of(view: View, frontend: int, backends) -> list[float]:
    """:meth:`View.tokens_of` of the delayed and instant views: the jobs times sbar where tokens are loads."""
    if _tokens_are_loads(view):
        s = view.mean_size
        return [n * s for n in view.jobs_of(frontend, backends)]
    return View.tokens_of(view, frontend, backends)


def _tokens_array(view: View, frontend: int) -> np.ndarray:
    """:meth:`View.tokens_array` of the delayed and instant views.

    Where tokens are loads, the kept counts times sbar; other models (``llm``)
    are read one by one, only the backends ``frontend`` may use, in index
    order, as :meth:`View.tokens_of` would read them.
    """
    if _tokens_are_loads(view):
        return view.jobs_array(frontend) * view.mean_size
    B = len(view.backends)
    usable = view._usable[frontend] if view.vectorised else None  # type: ignore[attr-defined]
    candidates = range(B) if usable is None else usable.nonzero()[0].tolist()
    tokens = np.zeros(B)
    tokens[candidates] = view.tokens_of(frontend, candidates)
    return tokens


class DelayedView(View):
    def __init__(self, backends, latency, mean_size, env, vectorised: bool = False, connect=None):
        super().__init__(backends, latency, mean_size, env)
        self.history_window = float(latency.max()) if latency.size else 0.0
        self.vectorised = vectorised
        self._tokens_are_loads: bool | None = None  # known once the backends are in
        if vectorised:
            F, B = latency.shape
            # observed[i][j] = n_j(t) for the t = now - d_ij of its last reading; it holds while now < valid[i][j]
            self._observed = [np.zeros(B, dtype=np.int64) for _ in range(F)]
            self._valid = [np.full(B, -math.inf) for _ in range(F)]
            self._delay_to = latency.T.tolist()  # d_ij by backend j: one row per touch
            self._usable = _usable(connect, latency.shape)

    def jobs_array(self, frontend):
        now = self.env._now
        valid = self._valid[frontend]
        stale = valid <= now
        if (usable := self._usable[frontend]) is not None:
            stale &= usable
        stale_backends = stale.nonzero()[0]
        if len(stale_backends):
            observed = self._observed[frontend]
            delay = self.delay[frontend]
            everyone = self.backends
            for j in stale_backends.tolist():
                b = everyone[j]
                d = delay[j]
                t = now - d
                if b.next_done <= t:
                    b.catch_up(t)
                times = b.history_t
                k = bisect_right(times, t)
                observed[j] = b.history_n[k - 1]
                # the next change: recorded already, or the next completion (an arrival first is touched)
                valid[j] = ((times[k] if k < len(times) else b.next_done) + d) * EARLY
        return self._observed[frontend]

    def touch(self, backend):
        if self.vectorised:
            now = self.env._now
            for valid, d in zip(self._valid, self._delay_to[backend]):
                t = (now + d) * EARLY
                if t < valid[backend]:
                    valid[backend] = t

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

    def tokens_of(self, frontend, backends):
        return _tokens_of(self, frontend, backends)

    def tokens_array(self, frontend):
        return _tokens_array(self, frontend)


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
    def __init__(self, backends, latency, mean_size, env, vectorised: bool = False, connect=None):
        super().__init__(backends, latency, mean_size, env)
        self.vectorised = vectorised
        self._tokens_are_loads: bool | None = None  # known once the backends are in
        if vectorised:
            B = latency.shape[1]
            # every frontend sees the same counts; counts[j] holds until the clock reaches due[j]
            self._counts = np.zeros(B, dtype=np.int64)
            self._due = np.full(B, -math.inf)
            self._usable = _usable(connect, latency.shape)

    def jobs_array(self, frontend):
        now = self.env._now
        due = self._due
        if due[due.argmin()] > now:  # nothing changed since the last look (often: a look per job)
            return self._counts
        stale = due <= now
        if (usable := self._usable[frontend]) is not None:
            stale &= usable
        counts = self._counts
        everyone = self.backends
        for j in stale.nonzero()[0].tolist():
            b = everyone[j]
            if b.next_done <= now:
                b.catch_up(now)
            counts[j] = b.jobs
            due[j] = b.next_done
        return counts

    def touch(self, backend):
        if self.vectorised:
            self._due[backend] = -math.inf

    def jobs(self, frontend, backend):
        b = self.backends[backend]
        now = self.env._now
        if b.next_done <= now:
            b.catch_up(now)
        return b.jobs


    def engine_state(self, frontend, backend):
        return self.backends[backend].engine_state_at(self.env._now)

    def tokens_of(self, frontend, backends):
        return _tokens_of(self, frontend, backends)

    def tokens_array(self, frontend):
        return _tokens_array(self, frontend)


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

    def jobs_array(self, frontend):
        return np.array(self.outstanding[frontend], dtype=np.int64)

    def engine_state(self, frontend, backend):
        # Without telemetry a frontend knows only its own unanswered requests: their work (output tokens).
        return EngineState(self.outstanding_work[frontend][backend], 0, 0)


def make_view(mode: str, backends, latency, mean_size, env, period: float, connect=None) -> View:
    """The view of a telemetry mode; ``connect`` (F x B) limits what a frontend's bulk reads catch up."""
    vectorised = latency.shape[1] >= VECTORISE_FROM
    if mode == "delayed" and not latency.any():
        # no delay: the same view, no history to keep
        return InstantView(backends, latency, mean_size, env, vectorised, connect)
    if mode == "delayed":
        return DelayedView(backends, latency, mean_size, env, vectorised, connect)
    if mode == "periodic":
        return PeriodicView(backends, latency, mean_size, env, period)
    if mode == "instant":
        return InstantView(backends, latency, mean_size, env, vectorised, connect)
    return LocalView(backends, latency, mean_size, env)
