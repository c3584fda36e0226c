"""Prequal (Wydrowski et al., NSDI 2024, arXiv:2312.10172): each pool rule, the probes, the estimator.

Unit tests drive the router through a fake context (a clock we set, probes
we deliver by hand), so each rule is checked on a pool whose contents we
chose. Engine tests check what only a real run can show: probes take
``2 d_ij`` and read the backend at ``t_sent + d_ij``. The slow test is the
evidence of ``scenarios/prequal_antagonist.toml``: Prequal's p99 beats
random, round robin and least-request on three seeds.
"""

from __future__ import annotations

import math
from heapq import heappush
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import backend, scenario
from scipy import stats

import lbsim
from lbsim.backends import BackendContext
from lbsim.backends.rate import RateBackend, RateParams
from lbsim.jobs import Job
from lbsim.engine.simulation import Simulation
from lbsim.rates import make_rate
from lbsim.engine.kernel import Kernel
from lbsim.events import Wakeup
from lbsim.routers import ROUTERS, ProbeInbox, ProbeReply, RouterContext, make_router
from lbsim.routers.prequal import (
    BACKEND,
    PoolEntry,
    Prequal,
    SojournByRif,
    bucket_range,
    median,
    pool_entry,
    rif_bucket,
)

INF = math.inf
SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "prequal_antagonist.toml"


# -- a router on a fake context --------------------------------------------------------------
class Harness:
    """A Prequal router whose clock we set and whose probes we see (and answer) ourselves."""

    def __init__(self, backends: int = 8, frontends: int = 1, connect=None, rates=None, seed: int = 0, **params):
        self.now = 0.0
        self.sent: list[tuple[int, int]] = []
        ctx = RouterContext(
            num_frontends=frontends,
            num_backends=backends,
            delay=np.zeros((frontends, backends)),
            connect=np.ones((frontends, backends), bool) if connect is None else np.array(connect, bool),
            rates=rates or [make_rate({"kind": "constant", "c": 1.0})] * backends,
            mean_size=1.0,
            demand=np.ones(frontends),
            rng=np.random.default_rng(seed),
            now=lambda: self.now,
            probe=lambda i, j, on_reply: self.sent.append((i, j)),
        )
        self.router: Prequal = make_router("prequal", params, ctx)

    def reply(self, backend: int, rif: int, sojourn: float, t: float, frontend: int = 0) -> None:
        self.router.receive(frontend, ProbeReply(backend, rif, sojourn, t, t))

    def route(self, frontend: int = 0) -> int:
        return self.router.route(frontend, Job(0, frontend, 1.0, self.now), None)

    def pool(self, frontend: int = 0) -> dict[int, PoolEntry]:
        return self.router.pool(frontend)


# -- reuse budget ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, m, n, expected",
    [
        # b_reuse = max(1, (1 + delta) / ((1 - m/n) r_probe - r_remove)), by hand:
        ({}, 0, 16, 1.0),  # 2 / (3 - 1) = 1
        ({}, 4, 16, 1.6),  # 2 / (0.75*3 - 1) = 2 / 1.25
        ({}, 8, 16, 4.0),  # 2 / (0.5*3 - 1) = 2 / 0.5
        ({}, 10, 16, 16.0),  # 2 / (0.375*3 - 1) = 2 / 0.125
        ({"delta": 0.0}, 0, 16, 1.0),  # max(1, 1 / 2)
        ({"r_probe": 5.0, "delta": 2.0}, 5, 10, 2.0),  # 3 / (0.5*5 - 1) = 3 / 1.5
        ({"r_probe": 2.0, "r_remove": 0.5}, 1, 4, 2.0),  # 2 / (0.75*2 - 0.5) = 2 / 1
        ({}, 11, 16, math.inf),  # denominator 5/16*3 - 1 < 0: no finite budget, unlimited reuse
        ({"r_probe": 1.0}, 0, 16, math.inf),  # denominator exactly 0
    ],
)
def test_reuse_budget_formula(params, m, n, expected):
    budget = Harness(**params).router.reuse_budget(m, n)
    assert budget == pytest.approx(expected, rel=1e-12)


def test_reuse_budget_random_rounding_has_the_exact_mean():
    h = Harness(backends=16)
    draws = np.array([h.router.draw_reuses(4, 16) for _ in range(20000)])  # b_reuse = 1.6
    assert set(draws) == {1, 2}
    se = math.sqrt(0.6 * 0.4 / len(draws))
    assert abs(draws.mean() - 1.6) < 4.5 * se


def test_reuse_budget_is_enforced_and_counts_rif():
    # delta 0, no removals: b_reuse = max(1, 1 / ((1 - m/100) * 3)) = 1 for m < 67: one use each
    h = Harness(backends=100, r_remove=0.0, delta=0.0)
    for j, sojourn in [(0, 1.0), (1, 2.0), (2, 3.0)]:
        h.reply(j, rif=1, sojourn=sojourn, t=0.0)
    assert all(e.uses_left == 1 for e in h.pool().values())
    assert h.route() == 0  # the fastest, used once and gone
    assert 0 not in h.pool()
    assert h.route() == 1
    assert list(h.pool()) == [2]


def test_using_an_entry_adds_one_to_its_rif():
    h = Harness(backends=8, r_probe=0.0, r_remove=0.0, q_rif=1.0)  # r_probe 0: unlimited reuse
    h.reply(0, rif=5, sojourn=1.0, t=0.0)
    h.reply(1, rif=1, sojourn=2.0, t=0.0)
    h.reply(2, rif=9, sojourn=9.0, t=0.0)  # makes the hot threshold (the max RIF seen) 9
    for k in range(3):
        assert h.route() == 0
    assert h.pool()[0].rif == 8
    assert h.pool()[0].uses_left == math.inf


# -- removal -----------------------------------------------------------------------------------
def test_removal_alternates_oldest_and_worst():
    h = Harness(backends=100, r_probe=0.0, r_remove=1.0, q_rif=1.0)
    h.reply(9, rif=50, sojourn=100.0, t=0.5)  # the oldest; RIF 50 makes everything else cold
    for j, (t, sojourn) in enumerate([(1.0, 5.0), (2.0, 1.0), (3.0, 3.0), (4.0, 9.0), (5.0, 2.0)]):
        h.reply(j, rif=1, sojourn=sojourn, t=t)
    h.now = 5.0
    assert h.route() == 1  # lowest sojourn estimate
    assert 9 not in h.pool()  # 1st removal: the oldest (t 0.5)
    assert h.route() == 1
    assert 3 not in h.pool()  # 2nd: the worst (highest sojourn estimate among the cold: 9.0)
    assert h.route() == 1
    assert 0 not in h.pool()  # 3rd: the oldest (t 1.0)
    assert h.route() == 1
    assert sorted(h.pool()) == [1, 4]  # 4th: the worst of 1.0, 3.0, 2.0
    assert h.route() == 1
    assert sorted(h.pool()) == [4]  # 5th: the oldest of t 2.0 (backend 1) and 5.0 (backend 4)


def test_worst_is_the_hottest_when_some_are_hot():
    h = Harness(backends=100, r_probe=0.0)
    pool = {j: pool_entry(j, rif, sojourn, 0.0, INF) for j, rif, sojourn in [(0, 3, 9.0), (1, 7, 0.1), (2, 6, 0.2)]}
    assert h.router.worst(pool, threshold=5)[BACKEND] == 1  # hot (7 and 6 > 5): highest RIF, sojourn aside
    assert h.router.worst(pool, threshold=10)[BACKEND] == 0  # all cold: the slowest


def test_fractional_r_remove_is_exact():
    h = Harness(backends=1000, r_probe=0.0, r_remove=0.5)
    for j in range(10):
        h.reply(j, rif=1, sojourn=float(j), t=float(j))
    sizes = []
    for _ in range(6):
        h.route()
        sizes.append(len(h.pool()))
    # reuse is unlimited (r_probe 0); removals 0, 1, 0, 1, ...: floor(k/2) after k queries
    assert sizes == [10, 9, 9, 8, 8, 7]


# -- selection -----------------------------------------------------------------------------------
def test_hot_threshold_is_the_q_quantile_of_recent_probe_rifs():
    h = Harness(backends=100, r_probe=0.0, rif_window=10)
    for j, rif in enumerate([9, 0, 8, 1, 7, 2, 6, 3, 5, 4]):
        h.reply(j, rif=rif, sojourn=1.0, t=0.0)
    assert h.router.hot_threshold(0) == 8  # ceil(0.84 * 10) = 9th smallest of 0..9
    for j in range(10, 15):  # the window keeps the last 10: 9, 0, 8, 1, 7 leave
        h.reply(j, rif=20, sojourn=1.0, t=0.0)
    assert sorted(h.router._rif_sorted[0]) == [2, 3, 4, 5, 6, 20, 20, 20, 20, 20]
    assert h.router.hot_threshold(0) == 20


def test_cold_entry_with_lowest_sojourn_estimate_wins_and_hot_ones_are_skipped():
    h = Harness(backends=100, r_probe=0.0, r_remove=0.0, rif_window=10)
    # RIFs 0..9 in the window, threshold 8: backend 9 (RIF 9) is hot although it is the fastest
    for j in range(10):
        h.reply(j, rif=j, sojourn={9: 0.01, 4: 0.5}.get(j, 1.0 + j), t=0.0)
    assert h.route() == 4
    assert h.pool()[4].rif == 5


def test_all_hot_takes_the_lowest_rif():
    h = Harness(backends=100, r_probe=0.0)
    pool = {j: pool_entry(j, rif, sojourn, 0.0, INF) for j, rif, sojourn in [(0, 5, 0.1), (1, 3, 9.0), (2, 4, 0.2)]}
    assert h.router.select(pool, threshold=2)[BACKEND] == 1


def test_unknown_sojourn_estimate_ranks_first_among_cold_then_rif():
    h = Harness(backends=100, r_probe=0.0)
    nan = math.nan
    pool = {j: pool_entry(j, rif, sojourn, 0.0, INF) for j, rif, sojourn in [(0, 1, 0.1), (1, 3, nan), (2, 2, nan)]}
    assert h.router.select(pool, threshold=5)[BACKEND] == 2
    assert h.router.worst(pool, threshold=5)[BACKEND] == 0
    assert h.router.select(pool, threshold=1)[BACKEND] == 0  # the unknowns are hot: cold beats hot


def test_selection_ties_are_broken_at_random():
    h = Harness(backends=100, r_probe=0.0)
    pool = {j: pool_entry(j, 2, 1.0, 0.0, math.inf) for j in range(4)}
    picks = [h.router.select(pool, threshold=5)[BACKEND] for _ in range(4000)]
    assert stats.chisquare(np.bincount(picks, minlength=4)).pvalue > 1e-4


def _hcl_by_the_definition(pool, threshold, uniform, worst=False):
    """HCL's pick (or its least liked entry) written out from the definition, on named entries."""

    def key(e):  # unknown estimates rank first among the cold
        return (-math.inf if math.isnan(e.sojourn_estimate) else e.sojourn_estimate, e.rif)

    entries = list(pool.values())
    cold = [e for e in entries if e.rif <= threshold]
    hot = [e for e in entries if e.rif > threshold]
    if worst:
        ties = [e for e in hot if e.rif == max(h.rif for h in hot)] if hot else [
            e for e in cold if key(e) == max(map(key, cold))
        ]
    elif cold:
        ties = [e for e in cold if key(e) == min(map(key, cold))]
    else:
        ties = [e for e in entries if e.rif == min(h.rif for h in entries)]
    return ties[0].backend if len(ties) == 1 else ties[int(uniform() * len(ties))].backend


@pytest.mark.parametrize("worst", [False, True])
def test_select_and_worst_follow_the_definition_on_random_pools(worst):
    """The router's select/worst (pool lists, shortcuts) against HCL written out, ties and NaN included."""
    h, reference = Harness(backends=16, seed=5), Harness(backends=16, seed=5)
    rng = np.random.default_rng(11)
    for _ in range(3000):
        size = int(rng.integers(2, 17))
        backends = rng.choice(16, size, replace=False)
        rifs = rng.integers(0, 6, size)
        sojourns = np.where(rng.random(size) < 0.2, math.nan, rng.integers(1, 4, size) / 4)
        named = {int(j): PoolEntry(int(j), int(r), float(s), 0.0, INF) for j, r, s in zip(backends, rifs, sojourns)}
        pool = {j: pool_entry(*e) for j, e in named.items()}
        threshold = int(rng.integers(-1, 7))
        pick = (h.router.worst if worst else h.router.select)(pool, threshold)[BACKEND]
        assert pick == _hcl_by_the_definition(named, threshold, reference.router.uniform, worst)
    assert h.router.uniform() == reference.router.uniform()  # the same draws, in the same order


def test_fewer_than_two_entries_picks_a_uniform_neighbour():
    connect = [[j % 2 == 0 for j in range(12)]]  # neighbours 0, 2, ..., 10
    h = Harness(backends=12, connect=connect, r_probe=0.0, r_remove=0.0)
    h.reply(4, rif=0, sojourn=0.001, t=0.0)  # the only entry, and a very good one: not used
    picks = [h.route() for _ in range(6000)]
    counts = np.bincount(picks, minlength=12)
    assert counts[1::2].sum() == 0
    assert stats.chisquare(counts[0::2]).pvalue > 1e-4
    assert h.pool()[4].rif == 0  # never used


# -- expiry and overflow ---------------------------------------------------------------------------
def test_entries_expire_after_max_age():
    h = Harness(backends=100, r_probe=0.0, r_remove=0.0, max_age=1.0)
    h.reply(0, rif=0, sojourn=0.001, t=0.2)  # the best, but too old at t = 1.6
    h.reply(1, rif=0, sojourn=2.0, t=0.7)
    h.reply(2, rif=0, sojourn=1.0, t=1.5)
    h.now = 1.6
    assert h.route() == 2
    assert sorted(h.pool()) == [1, 2]
    h.now = 1.71  # 1.71 - 0.7 > 1: entry 1 goes; one entry left: random fallback
    h.route()
    assert sorted(h.pool()) == [2]


def test_default_max_age_is_scaled_to_the_lone_job_service_time():
    rates = [make_rate({"kind": "constant", "c": 2.0}), make_rate({"kind": "batch", "a": 0.05, "b": 0.02})]
    h = Harness(backends=2, rates=rates)
    # sbar = 1: T = mean(1/2, (0.05 + 0.02)/1) = 0.285; default max_age = 10 T
    assert h.router.max_age == pytest.approx(10 * 0.285)
    assert Harness(backends=2, rates=rates, max_age=0.3).router.max_age == 0.3
    assert Harness(backends=2, rates=rates, max_age_services=2.0).router.max_age == pytest.approx(0.57)


def test_overflow_evicts_the_oldest():
    h = Harness(backends=100, r_probe=0.0, pool_size=4)
    for j, t in enumerate([3.0, 1.0, 4.0, 5.0]):
        h.reply(j, rif=0, sojourn=1.0, t=t)
    h.reply(4, rif=0, sojourn=1.0, t=2.0)
    assert sorted(h.pool()) == [0, 2, 3, 4]  # t = 1.0 (backend 1) left
    h.reply(5, rif=0, sojourn=1.0, t=6.0)
    assert sorted(h.pool()) == [0, 2, 3, 5]  # then t = 2.0


def test_a_newer_reply_replaces_the_entry_of_its_backend():
    h = Harness(backends=100, r_probe=0.0)
    h.reply(3, rif=7, sojourn=1.0, t=1.0)
    h.reply(3, rif=2, sojourn=0.5, t=2.0)
    assert len(h.pool()) == 1 and h.pool()[3].rif == 2
    h.reply(3, rif=9, sojourn=5.0, t=1.5)  # overtaken on the way: older news, ignored
    assert h.pool()[3].rif == 2


# -- probes ---------------------------------------------------------------------------------------
def test_each_query_probes_r_probe_distinct_neighbours():
    connect = [[j < 10 for j in range(16)], [j >= 6 for j in range(16)]]
    h = Harness(backends=16, frontends=2, connect=connect)
    for _ in range(500):
        for i in (0, 1):
            h.sent.clear()
            h.route(i)
            targets = [j for _, j in h.sent]
            assert len(targets) == 3 and len(set(targets)) == 3
            assert all(connect[i][j] for j in targets)
    h = Harness(backends=2, r_probe=3.0)
    h.route()
    assert sorted(j for _, j in h.sent) == [0, 1]  # fewer neighbours than probes: each once


@pytest.mark.parametrize("r_probe", [0.3, 2.5, 1 / 3, 0.01])
def test_fractional_r_probe_has_the_exact_long_run_rate(r_probe):
    h = Harness(backends=100, r_probe=r_probe, r_remove=0.0)
    fraction = Fraction(r_probe).limit_denominator(1000)  # 0.3 -> 3/10, 1/3 -> 1/3
    for k in range(1, 3001):
        h.route()
        assert len(h.sent) == k * fraction.numerator // fraction.denominator


@pytest.mark.parametrize("reply_first", [True, False])
def test_inbox_orders_a_reply_and_an_event_of_the_same_instant_as_the_kernel(reply_first):
    """A reply landing at the instant of an event counts as landed before it iff its return event would run first.

    Worked by hand on the kernel itself: at t = 0.5 the reply is read (its
    return event, at t = 1, takes the next insertion id); an event also due
    at t = 1 was scheduled at t = 0 (before the reply: the kernel runs it
    first) or at t = 0.75 (after: the reply comes first).
    """
    for delivered_by_event in (True, False):
        env, inbox, order = Kernel(), ProbeInbox(), []

        def read(_event):  # the probe at its backend: the way back is an event, or the inbox
            if delivered_by_event:
                env.schedule(Wakeup(lambda _e: order.append("reply")), delay=0.5)
            else:
                heappush(inbox, (1.0, next(env._eid), 0, None))

        def act(_event):  # the router acts: whatever landed before this event is taken first
            if inbox.pop_landed(env.now, lambda: env.event_id) is not None:
                order.append("reply")
            order.append("act")

        if not reply_first:
            env.schedule(Wakeup(act), delay=1.0)
        env.schedule(Wakeup(read), delay=0.5)
        if reply_first:
            env.schedule(Wakeup(lambda _e: env.schedule(Wakeup(act), delay=0.25)), delay=0.75)
        env.run_until(2.0)
        if inbox:  # not landed before the action: the router's next action would take it
            order.append("reply")
        assert order == (["reply", "act"] if reply_first else ["act", "reply"])


def test_probes_take_two_network_delays_and_read_the_backend_half_way():
    """A reply reads the backend at t_sent + d_ij and reaches the router after t_sent + 2 d_ij, before its next call."""
    delays = [[0.01, 0.05, 0.2], [0.3, 0.02, 0.07]]
    sc = scenario(
        [backend("batch", a=0.05, b=0.02)] * 3,
        rates=[20.0, 20.0],
        horizon=30.0,
        network={"delay": delays},
        router="prequal",
    )
    sim = Simulation(sc)
    router = sim.router
    seen = []
    calls = []  # ("reply", t_landed) and ("route", t), in the order the router saw them
    original, original_route = router.receive, router.route

    def receive(frontend, reply):
        b = sim.backends[reply.backend]
        # the state just before the answer: a job routed in the same instant reaches the backend after it
        seen.append((frontend, reply, b.jobs_at(math.nextafter(reply.t_answered, -math.inf))))
        calls.append(("reply", reply.t_sent + 2 * delays[frontend][reply.backend]))
        original(frontend, reply)

    def route(frontend, job, view):
        backend = original_route(frontend, job, view)  # takes the replies landed by now, then decides
        calls.append(("route", sim.env.now))
        return backend

    router.receive = receive
    router.route = route
    # replies reach the router up to a query's gap after they land: keep the whole history to check them
    sim.backends[0].context.history_window = math.inf
    sim.route = route
    sim.run()
    assert len(seen) > 1000
    for frontend, reply, jobs in seen:
        d = delays[frontend][reply.backend]
        assert reply.t_answered - reply.t_sent == pytest.approx(d, abs=1e-12)
        assert reply.rif == jobs
    landed = 0.0  # the latest landing handed over so far
    for kind, t in calls:
        if kind == "reply":
            landed = max(landed, t)
        else:  # every reply landed before a call was handed over before it, none landed after it
            assert landed <= t + 1e-12
    last_route = -math.inf  # ... and no reply that landed before the previous call was left for this one
    for kind, t in calls:
        if kind == "route":
            last_route = t
        else:
            assert t >= last_route - 1e-12
    assert {(f, r.backend) for f, r, _ in seen} == {(i, j) for i in range(2) for j in range(3)}


def test_idle_probing_keeps_a_quiet_frontend_probing():
    sc = scenario([backend("constant", c=1.0)] * 4, rates=[1e-6], horizon=10.0, router="prequal")
    quiet = Simulation(sc)
    quiet.run()
    idle = Simulation(sc, idle_probe_interval=0.5)
    idle.run()
    assert quiet.router.probes_sent == 0  # no query, no probe
    assert idle.router.probes_sent == 19  # ticks at 0.5, 1.0, ..., 9.5
    assert idle.router.tick_interval == 0.5 and quiet.router.tick_interval is None


# -- the backend's sojourn-at-RIF estimator ---------------------------------------------------------
def test_buckets_are_exact_below_eight_then_four_per_doubling():
    assert [rif_bucket(r) for r in range(8)] == list(range(8))
    assert [bucket_range(b) for b in range(8, 17)] == [
        (8, 9), (10, 11), (12, 13), (14, 15), (16, 19), (20, 23), (24, 27), (28, 31), (32, 39)
    ]  # fmt: skip
    # the buckets tile the integers: each RIF is in the range of its bucket, ranges are contiguous
    for rif in range(5000):
        low, high = bucket_range(rif_bucket(rif))
        assert low <= rif <= high
    for b in range(60):
        assert bucket_range(b + 1)[0] == bucket_range(b)[1] + 1


def test_estimate_is_the_median_of_a_known_window():
    tracker = SojournByRif(window=5)
    for sojourn in [5.0, 1.0, 4.0, 2.0, 3.0]:
        tracker.add(rif_bucket(3), sojourn)
    assert tracker.estimate(3) == 3.0
    tracker.add(rif_bucket(3), 10.0)  # window now 1, 4, 2, 3, 10
    assert tracker.sojourns(3) == [1.0, 4.0, 2.0, 3.0, 10.0]
    assert tracker.estimate(3) == 3.0
    tracker.add(rif_bucket(3), 0.5)  # 4, 2, 3, 10, 0.5
    tracker.add(rif_bucket(3), 0.25)  # 2, 3, 10, 0.5, 0.25
    assert tracker.estimate(3) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    tracker.add(rif_bucket(9), 7.0)
    assert tracker.estimate(8) == tracker.estimate(9) == 7.0  # same bucket 8-9


def test_estimate_falls_back_to_the_nearest_bucket_scaled_by_rif():
    tracker = SojournByRif(window=4)
    assert math.isnan(tracker.estimate(0))  # nothing completed yet: unknown
    tracker.add(rif_bucket(2), 1.0)
    assert tracker.estimate(2) == 1.0
    assert tracker.estimate(5) == pytest.approx(1.0 * 6 / 3)  # (5 + 1) / (2 + 1)
    assert tracker.estimate(0) == pytest.approx(1.0 / 3)
    tracker.add(rif_bucket(17), 4.0)  # bucket 16-19, middle 17.5
    assert tracker.estimate(12) == pytest.approx(4.0 * 13 / 18.5)  # bucket 10 is nearer to 12 than 2
    assert tracker.estimate(6) == pytest.approx(1.0 * 7 / 3)


def test_estimator_hooks_on_a_real_backend():
    """FIFO at rate 1, sizes 1: jobs at t = 0, 0, 0.5 arrive at RIF 0, 1, 2 and stay 1, 2, 2.5."""
    import simpy

    env = simpy.Environment()
    done = []
    spec = RateParams(discipline="fifo", service={"kind": "constant", "c": 1.0})
    b = RateBackend(0, spec, BackendContext(env, 1.0, lambda job, now: done.append(job), None, lazy=False))
    b.observer = tracker = SojournByRif(window=8, timeout=1.2, clock=lambda: env.now)
    jobs = [Job(k, 0, 1.0, 0.0) for k in range(3)]
    b.arrive(jobs[0])
    b.arrive(jobs[1])
    env.run(until=0.5)
    b.arrive(jobs[2])
    env.run(until=4.1)
    assert len(done) == 3
    assert [tracker.sojourns(r) for r in range(3)] == [[1.0], [2.0], [2.5]]
    assert tracker._tags == {}  # no job left behind
    assert b.sojourn_estimate() == 1.0  # RIF 0; last completion at 3.0, within the timeout
    env.run(until=4.3)
    assert math.isnan(b.sojourn_estimate())  # idle for longer than the timeout: unknown


# -- registry and parameters -----------------------------------------------------------------------------
def test_registered_with_documented_parameters():
    assert ROUTERS["prequal"] is Prequal
    p = Prequal.Params()
    assert (p.r_probe, p.r_remove, p.pool_size, p.delta, p.q_rif) == (3.0, 1.0, 16, 1.0, 0.84)
    assert p.idle_probe_interval is None
    for name, field in Prequal.Params.model_fields.items():
        assert field.description, name
    with pytest.raises(lbsim.ScenarioError, match="router.q_rif"):
        lbsim.Scenario.from_dict(
            {"frontends": [{"rate": 1}], "backends": [{"service": {"kind": "constant", "c": 2}}],
             "router": {"name": "prequal", "q_rif": 1.5}}
        )  # fmt: skip


def test_same_seed_same_run_and_common_random_numbers():
    sc = scenario([backend("batch", a=0.05, b=0.02)] * 4, rates=[30.0], horizon=20.0, router="prequal")
    a, b = lbsim.simulate(sc, seed=3), lbsim.simulate(sc, seed=3)
    assert a.jobs.equals(b.jobs)
    other = lbsim.simulate(sc, router="random", seed=3)
    cols = ["job_id", "size", "t_arrival"]
    first = [r.jobs.sort_values("job_id")[cols].head(400).reset_index(drop=True) for r in (a, other)]
    assert first[0].equals(first[1])


# -- evidence ------------------------------------------------------------------------------------------
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def evidence():
    """p99 latency per (router, seed) on scenarios/prequal_antagonist.toml (cached: Prequal runs once)."""
    sc = lbsim.load_scenario(SCENARIO, warn=False)
    cache: dict[tuple[str, int], float] = {}

    def p99(router: str, seed: int) -> float:
        if (router, seed) not in cache:
            cache[router, seed] = lbsim.simulate(sc, router=router, seed=seed).summary()["p99"]
        return cache[router, seed]

    return p99


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["random", "round_robin", "least_request"])
def test_prequal_beats_baselines_on_p99(evidence, baseline):
    """On every seed Prequal's p99 is lower, and the mean paired gap is positive at 99% confidence.

    Seeds are independent replications and the routers share arrivals, sizes
    and antagonist paths (CRN), so the per-seed differences are paired and
    their Student t interval with 2 degrees of freedom is valid.
    """
    if baseline not in ROUTERS:
        pytest.skip(f"router {baseline!r} is not registered yet")
    prequal = np.array([evidence("prequal", s) for s in SEEDS])
    other = np.array([evidence(baseline, s) for s in SEEDS])
    gap = other - prequal
    low = gap.mean() - stats.t.ppf(0.99, len(gap) - 1) * gap.std(ddof=1) / math.sqrt(len(gap))
    report = ", ".join(f"seed {s}: {p:.3f} vs {o:.3f}" for s, p, o in zip(SEEDS, prequal, other))
    assert (prequal < other).all(), f"prequal vs {baseline} p99: {report}"
    assert low > 0, f"prequal vs {baseline} p99: {report}; 99% lower bound of the mean gap {low:.3f}"
    assert (other / prequal).min() > 1.15, f"prequal vs {baseline} p99: {report}"


# -- the implementation against the rules written out plainly -------------------------------------
class _Entry:
    """A pool entry as the plain implementation keeps it (an object per reply)."""

    def __init__(self, backend, rif, sojourn_estimate, t_answered, uses_left):
        self.backend, self.rif, self.t_answered, self.uses_left = backend, rif, t_answered, uses_left
        self.order = sojourn_estimate if sojourn_estimate == sojourn_estimate else -math.inf


def _plain_route(self, frontend, job, view):
    now = self.ctx.now()
    queries = self._queries[frontend]
    self._queries[frontend] = queries + 1
    num, den = self._probe_rate
    count = (queries + 1) * num // den - queries * num // den
    if count:
        self.send_probes(frontend, count, now)
    pool = self.pools[frontend]
    for stale in [e for e in pool.values() if e.t_answered < now - self.max_age]:
        del pool[stale.backend]
    ordered = self._rif_sorted[frontend]
    k = math.ceil(self.params.q_rif * len(ordered)) - 1
    threshold = ordered[min(max(k, 0), len(ordered) - 1)] if ordered else math.inf
    if len(pool) < 2:
        backend = self.choice(self.neighbours[frontend])
    else:
        cold = [e for e in pool.values() if e.rif <= threshold]
        if cold:
            best = min((e.order, e.rif) for e in cold)
            ties = [e for e in cold if (e.order, e.rif) == best]
        else:
            ties = [e for e in pool.values() if e.rif == min(e.rif for e in pool.values())]
        entry = ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]
        backend = entry.backend
        entry.rif += 1
        entry.uses_left -= 1
        if entry.uses_left <= 0:
            del pool[backend]
    num, den = self._remove_rate
    for _ in range((queries + 1) * num // den - queries * num // den):
        if not pool:
            break
        worst = self._remove_worst_next[frontend]
        self._remove_worst_next[frontend] = not worst
        if not worst:
            del pool[min(pool.values(), key=lambda e: e.t_answered).backend]
            continue
        hot = [e for e in pool.values() if e.rif > threshold]
        if hot:
            ties = [e for e in hot if e.rif == max(e.rif for e in hot)]
        else:
            top = max((e.order, e.rif) for e in pool.values())
            ties = [e for e in pool.values() if (e.order, e.rif) == top]
        del pool[(ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]).backend]
    return backend


def _plain_send_probes(self, frontend, count, now):
    # each reply delivered by its own kernel event when it lands, not through the inbox
    targets = self.sample(self.neighbours[frontend], count)
    for backend in targets:
        self.ctx.probe(frontend, backend, lambda reply, i=frontend: self.receive(i, reply))
    self.probes_sent += len(targets)
    self._last_probe[frontend] = now


def _plain_receive(self, frontend, reply):
    fifo, ordered = self._rif_fifo[frontend], self._rif_sorted[frontend]
    fifo.append(reply.rif)
    ordered.append(reply.rif)
    ordered.sort()
    if len(fifo) > self.params.rif_window:
        ordered.remove(fifo.popleft())
    pool = self.pools[frontend]
    known = pool.get(reply.backend)
    if known is not None:
        if known.t_answered >= reply.t_answered:
            return
        del pool[reply.backend]
    uses = self.draw_reuses(len(pool), len(self.neighbours[frontend]))
    pool[reply.backend] = _Entry(reply.backend, reply.rif, reply.sojourn_estimate, reply.t_answered, uses)
    if len(pool) > self.params.pool_size:
        del pool[min(pool.values(), key=lambda e: e.t_answered).backend]


@pytest.mark.parametrize(
    "sets, params",
    [
        (["simulation.horizon=6"], {}),
        (["simulation.horizon=6", "network.jitter={kind='exponential', mean=0.001}"], {"max_age": 0.05}),
        (["simulation.horizon=6"], {"idle_probe_interval": 0.002, "r_probe": 1.5, "r_remove": 0.5, "pool_size": 4}),
    ],
)
def test_router_gives_the_plain_implementation_to_the_bit(monkeypatch, sets, params):
    """The router (pool lists, tables, shortcuts, draws in place, replies through an inbox) against the rules
    written out with objects, each reply delivered by its own event when it lands."""
    sc = lbsim.load_scenario(SCENARIO, ["simulation.warmup=1", *sets], warn=False)
    fast = Simulation(sc, router="prequal", **params)
    fast_result = fast.run()
    # replies that landed after the last query wait in the inbox; the plain run receives them as they land
    fast.router.take_replies(fast.env.now)
    monkeypatch.setattr(Prequal, "route", _plain_route)
    monkeypatch.setattr(Prequal, "receive", _plain_receive)
    monkeypatch.setattr(Prequal, "send_probes", _plain_send_probes)
    plain = Simulation(sc, router="prequal", **params)
    plain_result = plain.run()
    assert fast.router.probes_sent == plain.router.probes_sent > 0
    assert fast_result.jobs.equals(plain_result.jobs)
    assert fast_result.timeseries.equals(plain_result.timeseries)
    assert fast.router.uniform() == plain.router.uniform()  # the same draws, in the same order
