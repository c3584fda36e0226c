"""The simulator against queueing theory, and exact checks where they exist.

Every statistical check runs one long fixed-seed simulation and compares an
estimate with an answer computed here from theory, within ``Z`` batch-means
standard errors (see ``helpers.py``); nothing is tuned until green.

Units (docs/model.md section 1): frontend i offers lambda_i work units/s as a
Poisson stream of lambda_i / sbar jobs/s with mean size sbar. A backend with n
jobs serves mu(n * sbar) work units/s; with exponential sizes each unit of
work finishes a job at rate 1/sbar, so the number in system is a
birth-death chain with birth rate lambda / sbar and death rate
mu(n * sbar) / sbar. Under processor sharing that chain's stationary law is
insensitive to the size distribution beyond its mean (a symmetric queue,
Kelly 1979), so it holds for deterministic and lognormal sizes too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import (
    assert_close,
    backend,
    batch_estimate,
    birth_death_stationary,
    erlang_c,
    float_tolerance,
    mmm_mean_sojourn,
    scenario,
    time_average,
)

import lbsim
from lbsim.engine import Simulation


def _measured(result: lbsim.Result) -> pd.DataFrame:
    return result.jobs[result.jobs["t_arrival"] >= result.scenario.simulation.warmup]


def _check_birth_death(result: lbsim.Result, pi: np.ndarray, job_rate: float, label: str) -> None:
    """Time-average number in system, P(empty) and mean sojourn (Little) against the chain's law."""
    sim = result.scenario.simulation
    t0, t1 = sim.warmup, sim.horizon
    mean_n = float(np.arange(len(pi)) @ pi)
    estimate, se = time_average(result.timeseries, t0, t1)
    assert_close(estimate, mean_n, se, f"{label}: time-average number in system")
    estimate, se = time_average(result.timeseries, t0, t1, transform=lambda n: (n == 0).astype(float))
    assert_close(estimate, pi[0], se, f"{label}: fraction of time empty")
    jobs = _measured(result)
    estimate, se = batch_estimate(jobs["t_arrival"], jobs["sojourn"], t0, t1)
    assert_close(estimate, mean_n / job_rate, se, f"{label}: mean sojourn (Little: E[N] / arrival rate)")


# -- M/M/1 ------------------------------------------------------------------------------
def test_mm1_fifo_sojourn_is_exponential():
    """constant c, FIFO, exponential sizes: sojourn ~ Exponential with mean sbar / (c - lambda).

    sbar = 0.5 (job_scale 0.5), so jobs arrive at lambda/sbar = 2.8/s and are
    served at c/sbar = 4/s: the units of docs/model.md, not just a unit-size M/M/1.
    """
    c, lam = 2.0, 1.4
    s = scenario(
        [backend("constant", "fifo", c=c)], [lam], horizon=40_000.0, warmup=200.0, seed=11, job_scale=0.5
    )
    sbar = s.mean_size
    mean = sbar / (c - lam)
    jobs = _measured(lbsim.simulate(s))
    t, sojourn = jobs["t_arrival"], jobs["sojourn"].to_numpy()
    t0, t1 = s.simulation.warmup, s.simulation.horizon

    estimate, se = batch_estimate(t, sojourn, t0, t1)
    assert_close(estimate, mean, se, "M/M/1 mean sojourn")
    estimate, se = batch_estimate(t, sojourn, t0, t1, statistic=lambda v: np.quantile(v, 0.99))
    assert_close(estimate, mean * math.log(100.0), se, "M/M/1 p99 sojourn")
    # A KS-type band: the empirical CDF at the deciles and the 99th percentile of the
    # theoretical law. Sojourns are correlated, so the band's width comes from batch
    # means, not from the Kolmogorov distribution (which assumes independent draws).
    for q in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99):
        x = -mean * math.log1p(-q)
        estimate, se = batch_estimate(t, (sojourn <= x).astype(float), t0, t1)
        assert_close(estimate, q, se, f"M/M/1 sojourn CDF at its {q:.0%} quantile")
    # FIFO at constant rate: service takes exactly size/c, the rest is waiting; P(wait > 0) = rho.
    waited = _waited(jobs, jobs["size"] / c)
    estimate, se = batch_estimate(t, waited, t0, t1)
    assert_close(estimate, lam / c, se, "M/M/1 probability of waiting")


def _waited(jobs: pd.DataFrame, service_time) -> np.ndarray:
    """1 for the jobs whose sojourn exceeds their service time by more than rounding."""
    wait = jobs["sojourn"].to_numpy() - np.asarray(service_time)
    return (wait > 1e-9 * (1.0 + jobs["t_backend_done"].to_numpy())).astype(float)


def test_mm1_ps_has_the_mm1_mean_sojourn():
    """constant c, PS: the number in system is the same M/M/1 chain, so the mean sojourn is sbar/(c - lambda)."""
    c, lam = 1.0, 0.6
    s = scenario([backend("constant", "ps", c=c)], [lam], horizon=30_000.0, warmup=200.0, seed=12)
    pi = birth_death_stationary(lam / s.mean_size, lambda n: c / s.mean_size)
    np.testing.assert_allclose(np.arange(len(pi)) @ pi, lam / (c - lam), rtol=1e-9)  # the helper itself
    _check_birth_death(lbsim.simulate(s), pi, lam / s.mean_size, "M/M/1-PS")


# -- state-dependent rates: birth-death chains --------------------------------------------
BATCH_FAMILY = {"a": 0.1, "b": 0.4}  # mu(x) = x / (0.1 + 0.4 x), sup 2.5


@pytest.mark.parametrize(
    ("size", "params"),
    [("exponential", {}), ("deterministic", {}), ("lognormal", {"sigma": 1.0})],
)
def test_state_dependent_ps_is_a_birth_death_chain(size, params):
    """batch family, PS: N is the chain with death rate mu(n sbar)/sbar, whatever the size law (insensitivity)."""
    lam = 1.75  # 70% of sup mu
    s = scenario(
        [backend("batch", **BATCH_FAMILY)],
        [lam],
        horizon=20_000.0,
        warmup=200.0,
        seed=21,
        job_scale=0.25,
        size=size,
        size_mean=2.0,
        size_params=params,
    )
    sbar = s.mean_size
    assert sbar == 0.5
    mu = s.backends[0].service
    pi = birth_death_stationary(lam / sbar, lambda n: float(mu.value(n * sbar)) / sbar)
    _check_birth_death(lbsim.simulate(s), pi, lam / sbar, f"batch-PS, {size} sizes")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "params"),
    [("pareto", {"alpha": 2.5}), ("empirical", {"values": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 91.0]})],
)
def test_ps_insensitivity_with_heavy_tailed_sizes(size, params):
    """saturating family, PS: the same chain for Pareto(2.5) and a 1-in-10 giant (scv 7.3).

    High-variance sizes make the number in system slow to mix (a giant job
    holds its place for long), hence the long run; batch means account for it.
    """
    lam, c, k = 1.2, 2.0, 1.0
    s = scenario(
        [backend("saturating", c=c, k=k)],
        [lam],
        horizon=150_000.0,
        warmup=1000.0,
        seed=23,
        job_scale=0.5,
        size=size,
        size_mean=1.0,
        size_params=params,
    )
    sbar = s.mean_size
    pi = birth_death_stationary(lam / sbar, lambda n: c * n * sbar / (n * sbar + k) / sbar)
    _check_birth_death(lbsim.simulate(s), pi, lam / sbar, f"saturating-PS, {size} sizes")


def test_fifo_with_a_state_dependent_rate_is_a_birth_death_chain():
    """saturating family, FIFO, exponential sizes: the head job finishes at rate mu(n sbar)/sbar (memoryless).

    The sojourn law differs from PS, but N's chain (hence the mean sojourn) is
    the same; and FIFO means jobs leave in the order they arrived.
    """
    lam, c, k = 1.4, 2.0, 1.0
    s = scenario([backend("saturating", "fifo", c=c, k=k)], [lam], horizon=20_000.0, warmup=200.0, seed=22)
    sbar = s.mean_size
    pi = birth_death_stationary(lam / sbar, lambda n: c * n * sbar / (n * sbar + k) / sbar)
    result = lbsim.simulate(s)
    _check_birth_death(result, pi, lam / sbar, "saturating-FIFO")
    by_arrival = result.jobs.sort_values("t_backend_arrival")
    assert by_arrival["t_backend_done"].is_monotonic_increasing, "FIFO jobs must leave in arrival order"


# -- M/M/m two ways --------------------------------------------------------------------
SERVERS, SBAR, PER_SERVER, JOB_RATE = 3, 0.25, 1.0, 2.4  # m servers at 1 job/s each, 80% utilisation


@pytest.mark.parametrize(
    ("size", "params"), [("exponential", {}), ("lognormal", {"sigma": 1.0})]
)
def test_ps_servers_family_is_mmm(size, params):
    """servers r*min(x, m sbar), PS: total death rate r*min(n, m) jobs/s, the M/M/m chain (Erlang C).

    PS with a rate depending on n only is insensitive, so lognormal sizes give the same mean.
    """
    s = scenario(
        [backend("servers", r=PER_SERVER, k=SERVERS * SBAR)],
        [JOB_RATE * SBAR],
        horizon=20_000.0,
        warmup=200.0,
        seed=31,
        job_scale=SBAR,
        size=size,
        size_params=params,
    )
    pi = birth_death_stationary(JOB_RATE, lambda n: PER_SERVER * min(n, SERVERS))
    mean_sojourn = mmm_mean_sojourn(SERVERS, JOB_RATE, PER_SERVER)
    np.testing.assert_allclose(np.arange(len(pi)) @ pi / JOB_RATE, mean_sojourn, rtol=1e-9)
    _check_birth_death(lbsim.simulate(s), pi, JOB_RATE, f"servers-PS, {size} sizes")


def test_ps_with_max_load_is_mmm():
    """linear r, PS with max_load = m sbar: m jobs in service at r sbar work/s each, the rest wait: M/M/m."""
    s = scenario(
        [backend("linear", max_load=SERVERS * SBAR, r=PER_SERVER)],
        [JOB_RATE * SBAR],
        horizon=20_000.0,
        warmup=200.0,
        seed=32,
        job_scale=SBAR,
    )
    pi = birth_death_stationary(JOB_RATE, lambda n: PER_SERVER * min(n, SERVERS))
    result = lbsim.simulate(s)
    _check_birth_death(result, pi, JOB_RATE, "linear-PS with max_load")
    jobs = _measured(result)
    t0, t1 = s.simulation.warmup, s.simulation.horizon
    estimate, se = batch_estimate(jobs["t_arrival"], jobs["sojourn"], t0, t1)
    assert_close(estimate, mmm_mean_sojourn(SERVERS, JOB_RATE, PER_SERVER), se, "M/M/m mean sojourn (Erlang C)")
    # In service a job gets r * sbar work/s exactly, so sojourn - size/(r sbar) is its wait in line:
    # it is positive with the Erlang C probability, and its mean is C / (m mu - lambda).
    service_time = jobs["size"] / (PER_SERVER * SBAR)
    waiting = erlang_c(SERVERS, JOB_RATE / PER_SERVER)
    estimate, se = batch_estimate(jobs["t_arrival"], _waited(jobs, service_time), t0, t1)
    assert_close(estimate, waiting, se, "M/M/m probability of waiting (Erlang C)")
    estimate, se = batch_estimate(jobs["t_arrival"], jobs["sojourn"] - service_time, t0, t1)
    assert_close(estimate, waiting / (SERVERS * PER_SERVER - JOB_RATE), se, "M/M/m mean wait")


# -- the network ------------------------------------------------------------------------
DELAY = [[0.013, 0.071, 0.2], [0.09, 0.004, 0.0]]
CONNECT = [[True, True, False], [True, True, True]]


def _network_scenario(router: str, **network) -> lbsim.Scenario:
    return scenario(
        [backend("saturating", c=2.0, k=1.0), backend("batch", a=0.2, b=0.5), backend("servers", r=1.0, k=0.8)],
        [1.2, 1.5],
        horizon=400.0,
        warmup=20.0,
        seed=41,
        job_scale=0.2,
        network={"delay": DELAY, "connect": CONNECT, **network},
        router=router,
    )


@pytest.mark.parametrize("router", ["jsq", "random", "power_of_d", "weighted"])
def test_latency_is_sojourn_plus_two_one_way_delays(router):
    """latency - sojourn == 2 d_ij for every job (to the rounding of the time additions), over allowed edges only."""
    s = _network_scenario(router)
    jobs = lbsim.simulate(s).jobs
    assert len(jobs) > 1000
    i, j = jobs["frontend"].to_numpy(), jobs["backend"].to_numpy()
    assert np.array(CONNECT)[i, j].all(), "a job used a backend its frontend may not use"
    d = np.array(DELAY)[i, j]
    tol = float_tolerance(jobs["t_response"])
    there = jobs["t_backend_arrival"] - jobs["t_arrival"]
    back = jobs["t_response"] - jobs["t_backend_done"]
    network = jobs["latency"] - jobs["sojourn"]
    assert (np.abs(there - d) <= tol).all(), "request leg differs from d_ij"
    assert (np.abs(back - d) <= tol).all(), "response leg differs from d_ij"
    assert (np.abs(network - 2 * d) <= tol).all(), "latency - sojourn differs from 2 d_ij"
    assert (jobs["backend"] == 2).any() and (jobs["frontend"] == 0).any()


def test_jitter_adds_independent_delays_of_the_given_mean():
    """Jitter adds a draw per traversal: legs exceed d_ij, by jitter.mean on average (iid draws: SE = sd/sqrt(n))."""
    mean = 0.01
    s = _network_scenario("jsq", jitter={"kind": "exponential", "mean": mean})
    jobs = lbsim.simulate(s).jobs
    d = np.array(DELAY)[jobs["frontend"], jobs["backend"]]
    tol = float_tolerance(jobs["t_response"])
    for name, leg in (
        ("request", jobs["t_backend_arrival"] - jobs["t_arrival"]),
        ("response", jobs["t_response"] - jobs["t_backend_done"]),
    ):
        extra = (leg - d).to_numpy()
        assert (extra >= -tol).all(), f"{name} leg shorter than d_ij"
        # Exponential draws have sd = mean.
        assert_close(extra.mean(), mean, mean / math.sqrt(len(extra)), f"{name} jitter mean")


# -- lazy and eager completions ---------------------------------------------------------
def _mixed_scenario(telemetry: str, router: str, seed: int = 51, **network) -> lbsim.Scenario:
    """Three frontends, four backends of different families and disciplines, delays, an antagonist."""
    return scenario(
        [
            backend("saturating", c=2.0, k=1.0),
            backend("batch", "fifo", a=0.1, b=0.4),
            backend("linear", max_load=0.6, r=3.0),
            {
                **backend("servers", r=2.0, k=0.6),
                "antagonist": {"levels": [0.5, 1.0], "hold": 5.0},
            },
        ],
        [2.0, 1.5, 1.0],
        horizon=300.0,
        warmup=10.0,
        seed=seed,
        job_scale=0.2,
        size="lognormal",
        size_params={"sigma": 1.0},
        network={
            "delay": [[0.01, 0.05, 0.1, 0.0], [0.05, 0.01, 0.2, 0.3], [0.1, 0.1, 0.1, 0.1]],
            "connect": [[True, True, True, False], [True, True, True, True], [False, True, True, True]],
            "telemetry": telemetry,
            **network,
        },
        router=router,
        rate_schedule=[[100.0, 1.3], [200.0, 0.8]],
    )


@pytest.mark.parametrize(
    ("telemetry", "router", "network"),
    [
        ("delayed", "jsq", {}),
        ("periodic", "power_of_d", {"period": 0.5}),
        ("instant", "jsq", {}),
        ("delayed", "weighted", {"jitter": {"kind": "exponential", "mean": 0.01}}),
    ],
)
def test_lazy_and_eager_completions_give_identical_outputs(telemetry, router, network):
    """Playing completions forward on demand must give the same event times, to the last bit, as eager events."""
    s = _mixed_scenario(telemetry, router, **network)
    lazy = Simulation(s, lazy=True).run()
    eager = Simulation(s, lazy=False).run()
    assert len(lazy.jobs) > 1000
    pd.testing.assert_frame_equal(lazy.jobs, eager.jobs, check_exact=True)
    pd.testing.assert_frame_equal(lazy.timeseries, eager.timeseries, check_exact=True)
    pd.testing.assert_frame_equal(lazy.routing, eager.routing, check_exact=True)
    assert lazy.counts == eager.counts


def test_eager_default_for_no_telemetry_runs_and_matches_forced_eager():
    """telemetry 'none' listens for responses, so the engine picks eager completions itself."""
    s = _mixed_scenario("none", "jsq")
    default = Simulation(s).run()
    eager = Simulation(s, lazy=False).run()
    pd.testing.assert_frame_equal(default.jobs, eager.jobs, check_exact=True)
    assert default.counts == eager.counts
