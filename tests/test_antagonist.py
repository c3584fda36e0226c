"""Antagonist load: a multiplier on a backend's rate mu_j, by schedule or as a random switch (a CTMC).

Exact checks first (event times of a piecewise rate, and a schedule that is
equivalent to another rate function gives the same run to the last bit),
then queueing theory: an M/M/1 whose capacity halves at time T has the
M/M/1 mean sojourn of each capacity in each phase, and a switching
multiplier spends the CTMC's stationary share of time at each level,
reproducibly by seed and whatever the router (common random numbers).
Tolerances are Z standard errors: batch means for the queue, the exact
asymptotic variance of the CTMC time average for the switch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from helpers import Z, assert_close, backend, batch_estimate, scenario, time_average
from scipy import stats
from simpy.core import URGENT

import lbsim
from lbsim.backends import BackendContext
from lbsim.backends.rate import RateBackend, RateParams
from lbsim.events import Wakeup
from lbsim.jobs import Job
from lbsim.engine.simulation import Simulation


# -- exact ------------------------------------------------------------------------------------
def _backend_run(discipline: str, c: float, sizes: list[float], changes: list[tuple[float, float]], lazy: bool):
    """Jobs of the given sizes all arrive at t = 0; the multiplier changes at the given times."""
    env = simpy.Environment()
    done: dict[int, float] = {}
    spec = RateParams(discipline=discipline, service={"kind": "constant", "c": c})
    b = RateBackend(0, spec, BackendContext(env, 1.0, lambda job, now: done.__setitem__(job.job_id, now), None, lazy=lazy))
    for k, size in enumerate(sizes):
        b.arrive(Job(k, 0, size, 0.0))
    for t, m in changes:
        env.schedule(Wakeup(lambda _e, m=m: b.set_multiplier(m)), URGENT, t)
    env.run(until=100.0)
    b.catch_up(100.0)
    return done


@pytest.mark.parametrize("lazy", [True, False])
def test_a_piecewise_multiplier_gives_exact_completion_times(lazy):
    # FIFO at rate 1, one job of size 1: half done at 0.5, then rate 0.5 for the other half
    assert _backend_run("fifo", 1.0, [1.0], [(0.5, 0.5)], lazy) == {0: 1.5}
    # PS at total rate 2, sizes 1 and 2: each gets 1/s until 0.5 (0.5 done each); then the total is 1,
    # 0.5/s each: job 0 finishes its last 0.5 at 1.5; job 1 (1.0 left) runs alone at 1/s until 2.5;
    # the multiplier back to 1 at 2.0 leaves it 0.5 at 2/s: done at 2.25
    assert _backend_run("ps", 2.0, [1.0, 2.0], [(0.5, 0.5)], lazy) == {0: 1.5, 1: 2.5}
    assert _backend_run("ps", 2.0, [1.0, 2.0], [(0.5, 0.5), (2.0, 1.0)], lazy) == {0: 1.5, 1: 2.25}
    # a zero multiplier stops service; it resumes where it stopped
    assert _backend_run("fifo", 1.0, [1.0], [(0.25, 0.0), (1.25, 1.0)], lazy) == {0: 2.0}


def test_a_constant_schedule_is_the_same_run_as_the_scaled_rate():
    """c = 2 halved from t = 0 is c = 1: the same jobs, to the last bit (0.5 * 2.0 == 1.0 exactly)."""
    common = dict(rates=[0.7, 0.4], horizon=500.0, network={"delay": [[0.01, 0.02], [0.03, 0.01]]})
    halved = backend("constant", discipline="fifo", c=2.0) | {"antagonist": {"schedule": [[0.0, 0.5]]}}
    a = lbsim.simulate(scenario([halved, backend("saturating", c=2.0, k=1.0)], **common))
    scaled = backend("constant", discipline="fifo", c=1.0)
    b = lbsim.simulate(scenario([scaled, backend("saturating", c=2.0, k=1.0)], **common))
    assert len(a.jobs) > 300
    assert a.jobs.equals(b.jobs)


# -- M/M/1 whose capacity halves ---------------------------------------------------------------
def test_mm1_mean_sojourn_in_each_phase_of_a_halving_schedule():
    """lambda = 1, mu = 4 until T, then 2: mean sojourns 1/(mu - lambda) = 1/3, then 1."""
    T, horizon = 30000.0, 60000.0
    halving = backend("constant", discipline="fifo", c=4.0) | {"antagonist": {"schedule": [[T, 0.5]]}}
    sc = scenario([halving], rates=[1.0], horizon=horizon, sample_interval=1.0, seed=7)
    result = lbsim.simulate(sc)
    jobs = result.jobs
    t, sojourn = jobs["t_arrival"].to_numpy(), jobs["sojourn"].to_numpy()
    # Cut transients: relaxation times 1/(mu (1 - sqrt(rho))^2) are 1 s and 6 s; P(sojourn > 50 s) < e^-50.
    for (t0, t1), mu in [((100.0, T - 50.0), 4.0), ((T + 300.0, horizon - 100.0), 2.0)]:
        rho = 1.0 / mu
        estimate, se = batch_estimate(t, sojourn, t0, t1)
        assert_close(estimate, 1.0 / (mu - 1.0), se, f"mean sojourn at mu = {mu}")
        estimate, se = time_average(result.timeseries, t0, t1)
        assert_close(estimate, rho / (1.0 - rho), se, f"mean number in system at mu = {mu}")


# -- a switching multiplier (CTMC) --------------------------------------------------------------
def record_multipliers(sim: Simulation) -> dict[int, list[tuple[float, float]]]:
    """Make every backend of ``sim`` log (time, multiplier) each time its multiplier is set."""
    log: dict[int, list[tuple[float, float]]] = {b.index: [] for b in sim.backends}

    class Recording(RateBackend):
        __slots__ = ()

        def set_multiplier(self, multiplier):
            log[self.index].append((self.env.now, multiplier))
            RateBackend.set_multiplier(self, multiplier)

    for b in sim.backends:
        b.__class__ = Recording  # same slots, so CPython allows it
    return log


def switching_scenario(levels, hold, horizon, seed=1, backends=3):
    ant = {"antagonist": {"levels": levels, "hold": hold}}
    return scenario(
        [backend("constant", c=1.0) | ant for _ in range(backends)] + [backend("constant", c=1.0)],
        rates=[0.5],
        horizon=horizon,
        sample_interval=horizon / 10,
        seed=seed,
    )


def run_and_log(sc, router="random", seed=None):
    sim = Simulation(sc, router=router, seed=seed)
    log = record_multipliers(sim)
    result = sim.run()
    return log, result


def time_shares(path, levels, horizon):
    times = np.array([t for t, _ in path] + [horizon])
    values = np.array([m for _, m in path])
    durations = np.diff(times)
    return np.array([durations[values == level].sum() for level in levels]) / horizon


@pytest.mark.parametrize("levels", [[1.0, 0.25], [1.0, 0.5, 0.25], [1.0, 0.8, 0.6, 0.4, 0.2]])
def test_switching_levels_spend_equal_time_at_each_level(levels):
    """Uniform jumps make the stationary law uniform: share 1/K at each of K levels.

    For the indicator of one level of this chain, Cov(s) = p(1-p) exp(-s K / ((K-1) h)),
    so the time average over T has variance 2 p (1-p) (K-1) h / (K T): the tolerance.
    """
    hold, horizon = 0.5, 10000.0
    K = len(levels)
    log, _ = run_and_log(switching_scenario(levels, hold, horizon))
    p = 1.0 / K
    se = math.sqrt(2 * p * (1 - p) * (K - 1) * hold / (K * horizon))
    for j in range(3):
        path = log[j]
        assert path[0][0] == 0.0  # the initial level is set at the start
        shares = time_shares(path, levels, horizon)
        for level, share in zip(levels, shares):
            assert_close(share, p, se, f"backend {j} share at level {level}")
        # jumps come at rate 1/hold (a Poisson count), always to another level, uniformly
        jumps = len(path) - 1
        assert abs(jumps - horizon / hold) <= Z * math.sqrt(horizon / hold)
        moves = [(a, b) for (_, a), (_, b) in zip(path, path[1:])]
        assert all(a != b for a, b in moves)
        if K > 2:
            counts = np.array([[sum(1 for m in moves if m == (a, b)) for b in levels if b != a] for a in levels])
            for row in counts:
                assert stats.chisquare(row).pvalue > 1e-4
    assert log[3] == []  # the backend without an antagonist is never touched


def test_switching_is_reproducible_by_seed_and_independent_of_the_router():
    sc = switching_scenario([1.0, 0.5, 0.25], hold=2.0, horizon=400.0)
    base, result = run_and_log(sc, "random")
    again, _ = run_and_log(sc, "random")
    assert base == again
    assert sum(len(path) for path in base.values()) > 3 * 150
    for router in ["round_robin", "jsq", "prequal"]:
        other, other_result = run_and_log(sc, router)
        assert other == base, f"antagonist path changed with router {router}"
        assert other_result.jobs["t_arrival"].sort_values().head(100).tolist() == (
            result.jobs["t_arrival"].sort_values().head(100).tolist()
        )
    different, _ = run_and_log(sc, "random", seed=2)
    assert different != base
    # backends switch independently: their paths differ from one another
    assert base[0] != base[1] and base[1] != base[2]
