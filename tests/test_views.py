"""Telemetry views against a scripted timeline: each mode shows exactly the state it is allowed to.

The contract (``lbsim.view``; docs/model.md section 4, invariant 5): frontend
i sees backend j

* ``delayed``: as it was d_ij ago, n_j(t - d_ij);
* ``periodic``: as in the freshest report that has arrived, the one sent at
  the last multiple k*period with k*period + d_ij <= t (0 before the first);
* ``instant``: as it is now, n_j(t);
* ``none``: not at all; the count of its own requests to j still unanswered.

The backends here are stand-ins whose job counts follow a script of hand-chosen
stays, revealed lazily like the engine's (a change becomes visible only when a
view catches the backend up to its time), so a view that forgets to catch up
shows a stale count, and a view that asks for a later time than it may is
caught asking. The truth is counted from the script's stays directly. All
times are multiples of 1/8, so ``t - d_ij`` and the report times are exact in
floating point and a change at exactly the allowed time must be shown.

The end-to-end check, a router's view against the true state rebuilt from a
simulation's jobs table, is ``test_invariants.py`` (invariant 5).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import jobs_present

from lbsim.backends.base import BackendModel, EngineState
from lbsim.engine.telemetry import DelayedView, InstantView, LocalView, PeriodicView, make_view
from lbsim.view import View

#: d_ij: frontend 0 is near backend 0, frontend 1 next to backend 1 (no delay at all)
LATENCY = np.array([[0.25, 1.0, 0.5], [2.0, 0.0, 1.25]])
#: (arrival, departure) of each job at each backend; two leave backend 0 together at 4.0
STAYS = [
    [(0.5, 1.5), (1.0, 4.0), (2.25, 5.5), (3.0, 4.0), (3.125, 3.25), (6.0, 6.5)],
    [(0.75, 2.0), (2.5, 7.0), (3.5, 4.75), (4.5, 4.625)],
    [(1.75, 1.875)],
]
PERIOD = 0.75
MEAN_SIZE = 2.5
#: the clock of the queries: every 1/8 s, through every change and every report
TIMES = [k / 8 for k in range(8 * 8 + 1)]


class ScriptedBackend:
    """A backend whose job count follows ``stays``, with the attributes a view reads.

    Like the engine's :class:`~lbsim.engine.backend.Backend` in lazy mode it
    keeps ``history_t``/``history_n`` (every change so far, from -inf with 0
    jobs), ``next_done`` (the time of the next change not yet played) and
    ``jobs``; :meth:`catch_up` plays the changes due by a time. ``asked``
    collects the times a view asked to see, to check none is too fresh.
    """

    def __init__(self, stays: list[tuple[float, float]]):
        self.script = sorted([(start, +1) for start, _ in stays] + [(end, -1) for _, end in stays])
        self.played = 0
        self.jobs = 0
        self.history_t: list[float] = [-math.inf]
        self.history_n: list[int] = [0]
        self.next_done = self.script[0][0] if self.script else math.inf
        self.asked: list[float] = []

    def catch_up(self, t: float) -> None:
        self.asked.append(t)
        while self.next_done <= t:
            time, step = self.script[self.played]
            self.played += 1
            self.jobs += step
            self.history_t.append(time)
            self.history_n.append(self.jobs)
            self.next_done = self.script[self.played][0] if self.played < len(self.script) else math.inf

    def jobs_at(self, t: float) -> int:
        self.catch_up(t)
        return self.history_n[bisect_right(self.history_t, t) - 1]


def true_jobs(j: int, t: float) -> int:
    """n_j(t), counted from the script: the stays with start <= t < end."""
    starts, ends = zip(*STAYS[j], strict=True)
    return int(jobs_present(np.array(starts), np.array(ends), np.array([t]))[0])


def allowed_time(mode: str, i: int, j: int, now: float) -> float | None:
    """The time whose state frontend i may see of backend j at ``now`` (None: no report yet)."""
    d = LATENCY[i, j]
    if mode == "delayed":
        return now - d
    if mode == "periodic":  # in exact arithmetic: report k is sent at k*period, arrives d later
        period = Fraction(PERIOD)
        k = math.floor((Fraction(now) - Fraction(d)) / period)
        return float(k * period) if k >= 0 else None
    return now  # instant


def expected_jobs(mode: str, i: int, j: int, now: float) -> int:
    t = allowed_time(mode, i, j, now)
    return 0 if t is None else true_jobs(j, t)


def build(mode: str) -> tuple[View, list[ScriptedBackend], SimpleNamespace]:
    backends = [ScriptedBackend(stays) for stays in STAYS]
    env = SimpleNamespace(_now=0.0)
    views: dict[str, Callable[[], View]] = {
        "delayed": lambda: DelayedView(backends, LATENCY, MEAN_SIZE, env),
        "periodic": lambda: PeriodicView(backends, LATENCY, MEAN_SIZE, env, PERIOD),
        "instant": lambda: InstantView(backends, LATENCY, MEAN_SIZE, env),
    }
    return views[mode](), backends, env


# Each reader runs on its own fresh backends: a bulk reader must catch up by itself.
# Loads are n * sbar exactly (small integers times 2.5), so they are compared exactly.
B = len(STAYS)
READERS: dict[str, Callable[[View, int], list[float]]] = {
    "jobs": lambda view, i: [view.jobs(i, j) for j in range(B)],
    "jobs_of": lambda view, i: view.jobs_of(i, range(B)),
    "jobs_of reversed": lambda view, i: view.jobs_of(i, [2, 1, 0])[::-1],
    "load": lambda view, i: [view.load(i, j) / MEAN_SIZE for j in range(B)],
    "loads_of": lambda view, i: [x / MEAN_SIZE for x in view.loads_of(i, [0, 1, 2])],
    "loads": lambda view, i: (view.loads(i) / MEAN_SIZE).tolist(),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("mode", ["delayed", "periodic", "instant"])
def test_view_shows_the_state_at_the_allowed_time(mode: str, reader: str) -> None:
    view, backends, env = build(mode)
    for now in TIMES:
        env._now = now
        for i in range(len(LATENCY)):
            for b in backends:
                b.asked.clear()
            seen = READERS[reader](view, i)
            expected = [expected_jobs(mode, i, j, now) for j in range(B)]
            assert seen == expected, f"{mode} {reader}: frontend {i} at t={now} saw {seen}, truth {expected}"
            # Never fresher than allowed: no backend was asked about a later time.
            for j, b in enumerate(backends):
                allowed = allowed_time(mode, i, j, now)
                assert all(t <= (-math.inf if allowed is None else allowed) for t in b.asked), (
                    f"{mode} {reader}: frontend {i} asked backend {j} about t={max(b.asked)} at t={now}"
                )


@pytest.mark.parametrize("mode", ["delayed", "periodic"])
def test_the_script_tells_stale_from_fresh(mode: str) -> None:
    """The timeline changes between the allowed time and now often, so a view showing fresher state fails."""
    differs = [
        expected_jobs(mode, i, j, now) != true_jobs(j, now)
        for now in TIMES
        for i in range(len(LATENCY))
        for j in range(B)
        if LATENCY[i, j] > 0
    ]
    assert sum(differs) > len(differs) / 4


def test_delayed_shows_a_change_exactly_d_after_it() -> None:
    """Backend 0 goes from 1 to 2 jobs at 1.0; frontend 0 (d = 0.25) sees it at 1.25, not a tick before."""
    view, _, env = build("delayed")
    for now, seen in [(1.125, 1), (np.nextafter(1.25, 0.0), 1), (1.25, 2), (1.375, 2)]:
        env._now = float(now)
        assert view.jobs(0, 0) == seen, now


def test_periodic_shows_the_last_report_that_has_arrived() -> None:
    """Reports are sent every 0.75 s; the one sent at k*0.75 reaches frontend i at k*0.75 + d_i.

    Frontend 1 is 2.0 s from backend 0: nothing has arrived before 2.0; at 2.75
    it learns n_0(0.75) = 1, at 3.5 n_0(1.5) = 1 (the 2 jobs of [1.0, 1.5) fall
    between reports and are never seen), at 4.25 n_0(2.25) = 2 (a job arrived
    at exactly 2.25). It is 1.25 s from backend 2, whose only job, over
    [1.75, 1.875), falls between reports: never seen.
    """
    view, _, env = build("periodic")
    for now in TIMES:
        env._now = now
        assert view.jobs(1, 2) == 0, now
    for now, seen in [(1.875, 0), (2.0, 0), (2.625, 0), (2.75, 1), (3.375, 1), (3.5, 1), (4.125, 1), (4.25, 2)]:
        env._now = now
        assert view.jobs(1, 0) == seen, now


def test_instant_shows_now_and_ignores_the_delay() -> None:
    view, _, env = build("instant")
    env._now = 3.125  # backend 0 has 4 jobs during [3.125, 3.25)
    assert [view.jobs(i, 0) for i in range(2)] == [4, 4]
    env._now = 3.25
    assert [view.jobs(i, 0) for i in range(2)] == [3, 3]


# (frontend, backend, t_sent, t_response): requests as the engine would count them.
REQUESTS = [(0, 0, 0.25, 1.5), (0, 0, 0.5, 0.875), (0, 2, 1.0, 3.0), (1, 0, 0.5, 2.5), (1, 1, 1.5, 1.75)]


@pytest.mark.parametrize("reader", READERS)
def test_local_view_counts_the_frontends_own_unanswered_requests(reader: str) -> None:
    """``none``: the engine counts a request up when sent and down when answered; the view reads only that."""
    backends = [ScriptedBackend(stays) for stays in STAYS]
    env = SimpleNamespace(_now=0.0)
    view = LocalView(backends, LATENCY, MEAN_SIZE, env)
    changes = sorted([(sent, i, j, +1) for i, j, sent, _ in REQUESTS] + [(done, i, j, -1) for i, j, _, done in REQUESTS])
    for now in TIMES:
        env._now = now
        while changes and changes[0][0] <= now:
            _, i, j, step = changes.pop(0)
            view.outstanding[i][j] += step
        for i in range(len(LATENCY)):
            expected = [sum(f == i and b == j and s <= now < d for f, b, s, d in REQUESTS) for j in range(B)]
            assert READERS[reader](view, i) == expected, (reader, i, now)
    assert all(not b.asked and b.played == 0 for b in backends)  # no telemetry: backends never consulted


def test_make_view_picks_the_mode_and_the_history_it_needs() -> None:
    backends = [ScriptedBackend(stays) for stays in STAYS]
    env = SimpleNamespace(_now=0.0)
    modes = ["delayed", "periodic", "instant", "none"]
    made = {mode: make_view(mode, backends, LATENCY, MEAN_SIZE, env, PERIOD) for mode in modes}
    assert [type(v) for v in made.values()] == [DelayedView, PeriodicView, InstantView, LocalView]
    # Backends keep their history as far back as the stalest state a view may show.
    assert made["delayed"].history_window == 2.0
    assert made["periodic"].history_window == 2.0 + PERIOD
    assert made["instant"].history_window is None and made["none"].history_window is None
    # No delay anywhere: delayed is instant, and keeps no history.
    assert type(make_view("delayed", backends, np.zeros((2, 3)), MEAN_SIZE, env, PERIOD)) is InstantView


def build_vectorised(mode: str) -> tuple[View, list[ScriptedBackend], SimpleNamespace]:
    """The view of ``mode`` with its arrays kept (as the engine builds it from 48 backends), on fresh backends."""
    backends = [ScriptedBackend(stays) for stays in STAYS]
    env = SimpleNamespace(_now=0.0)
    if mode == "delayed":
        view: View = DelayedView(backends, LATENCY, MEAN_SIZE, env, vectorised=True)
    elif mode == "instant":
        view = InstantView(backends, LATENCY, MEAN_SIZE, env, vectorised=True)
    elif mode == "periodic":
        view = PeriodicView(backends, LATENCY, MEAN_SIZE, env, PERIOD)
    else:
        view = LocalView(backends, LATENCY, MEAN_SIZE, env)
    return view, backends, env


@pytest.mark.parametrize("mode", ["delayed", "periodic", "instant", "none"])
def test_jobs_array_is_jobs_at_random_instants(mode: str) -> None:
    """The bulk read (arrays kept up to date where they change) shows exactly what ``jobs(i, j)`` shows.

    At a few hundred random instants, plus every change of the script shifted
    by each delay (where a stale entry would first show), with the frontends
    reading in random order and sometimes not at all: an array entry kept past
    the moment its backend's change became visible would differ.
    """
    rng = np.random.default_rng(5)
    view, backends, env = build_vectorised(mode)
    reference, _, reference_env = build_vectorised(mode)
    if mode == "none":  # no telemetry: both views count the same requests (the engine's counts)
        for i, j, _, _ in REQUESTS:
            view.outstanding[i][j] += 1  # type: ignore[attr-defined]
            reference.outstanding[i][j] += 1  # type: ignore[attr-defined]
    changes = {t for stays in STAYS for stay in stays for t in stay}
    edges = {t + d for t in changes for d in LATENCY.ravel()} | {t + d for t in changes for d in LATENCY.ravel() - 1e-12}
    instants = sorted(set(rng.uniform(0.0, 8.0, 300).tolist()) | edges | set(TIMES))
    for now in instants:
        env._now = reference_env._now = now
        for i in rng.permutation(len(LATENCY)).tolist():
            if rng.random() < 0.3:
                continue  # a frontend that does not route now: its entries must still be right later
            for b in backends:
                b.asked.clear()
            seen = view.jobs_array(i).tolist()
            assert seen == [reference.jobs(i, j) for j in range(B)], f"{mode}: frontend {i} at t={now}"
            if mode != "none":
                assert seen == [expected_jobs(mode, i, j, now) for j in range(B)], f"{mode}: frontend {i} at t={now}"
                for j, b in enumerate(backends):
                    allowed = allowed_time(mode, i, j, now)
                    assert all(t <= (-math.inf if allowed is None else allowed) for t in b.asked), (mode, i, j, now)


class LoadTokensBackend(ScriptedBackend):
    """A scripted backend with the contract's ``engine_state_at``: its tokens are its load n_j * sbar (``rate``)."""

    engine_state_at = BackendModel.engine_state_at

    def __init__(self, stays: list[tuple[float, float]], history_window: float | None):
        super().__init__(stays)
        self.context = SimpleNamespace(history_window=history_window, mean_size=MEAN_SIZE)


class OwnTokensBackend(LoadTokensBackend):
    """A model with its own tokens (as ``llm``'s): 7 per job plus 1, not a load the view could derive."""

    def engine_state_at(self, t: float) -> EngineState:
        return EngineState(7.0 * self.jobs_at(t) + 1.0, 0, 0)


@pytest.mark.parametrize("kind", [LoadTokensBackend, OwnTokensBackend])
@pytest.mark.parametrize("mode", ["delayed", "instant"])
def test_tokens_array_is_tokens_of_at_random_instants(mode: str, kind: type[LoadTokensBackend]) -> None:
    """The bulk token read (least_tokens on large fleets) shows what ``engine_state(i, j).tokens`` shows.

    With the contract's tokens it is the kept job counts times sbar, which must
    equal the script's truth at the allowed time; with a model's own tokens it
    reads them one by one, and only the backends the frontend may use (the
    others must not even be caught up, as a per-backend scan would not).
    """
    rng = np.random.default_rng(11)
    connect = np.array([[True, False, True], [True, True, True]])
    window = float(LATENCY.max()) if mode == "delayed" else None
    backends = [kind(stays, window) for stays in STAYS]
    reference = [kind(stays, window) for stays in STAYS]
    env = SimpleNamespace(_now=0.0)
    cls = DelayedView if mode == "delayed" else InstantView
    view = cls(backends, LATENCY, MEAN_SIZE, env, vectorised=True, connect=connect)
    reference_view = cls(reference, LATENCY, MEAN_SIZE, env)
    changes = {t for stays in STAYS for stay in stays for t in stay}
    shifts = np.concatenate([LATENCY.ravel(), LATENCY.ravel() - 1e-12])
    edges = {t + d for t in changes for d in shifts}
    for now in sorted(set(rng.uniform(0.0, 8.0, 200).tolist()) | edges | set(TIMES)):
        env._now = now
        for i in rng.permutation(len(LATENCY)).tolist():
            for b in backends:
                b.asked.clear()
            usable = np.flatnonzero(connect[i]).tolist()
            seen = view.tokens_array(i)[usable].tolist()
            assert seen == reference_view.tokens_of(i, usable), f"{mode}: frontend {i} at t={now}"
            if kind is LoadTokensBackend:
                assert seen == [expected_jobs(mode, i, j, now) * MEAN_SIZE for j in usable]
            else:
                assert not backends[1].asked or i == 1, "an unusable backend was read"
