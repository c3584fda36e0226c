"""Overload: the work the backends serve (``served``) beside the work of completed jobs (``throughput``).

Below capacity the two agree (every unit of work offered is served and its
job completes); in overload a processor-sharing backend serves at its
supremum while the jobs it shares it among finish ever more slowly, so the
work of *completed* jobs falls far below the work *served*
(docs/model.md section 3).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.optimize
from helpers import Z, assert_close, backend, batch_estimate, scenario
from test_optimum import KINDS, KKT, USED, marginal_cost, nominal_capacity, random_rate

import lbsim
from lbsim.backends import BACKENDS
from lbsim.engine import Simulation
from lbsim.errors import ScenarioError
from lbsim.experiments.comparisons import compare, queue_growth
from lbsim.optimum import solve_overload
from lbsim.rates import make_rate


# -- served: work conservation --------------------------------------------------------------
def _model_examples() -> list[tuple[str, int]]:
    return [(name, k) for name, cls in sorted(BACKENDS.items()) for k in range(len(cls.examples))]


def _drained(model: str, example: int) -> lbsim.Scenario:
    """Three backends of one model's example; arrivals stop at t = 60, and every job is done long before 400."""
    cls = BACKENDS[model]
    tables = [{"model": model, **cls.examples[example]} for _ in range(3)]
    data = scenario(
        [backend("linear", r=1.0)] * 3,
        [0.5, 0.6],
        horizon=400.0,
        warmup=20.0,
        seed=5,
        job_scale=0.3,
        size="gamma",
        size_params={"shape": 0.5},
        network={"delay": [[0.05, 0.4, 1.3], [0.9, 0.02, 0.25]]},
        router="jsq",
        rate_schedule=[[60.0, 0.0]],
    ).to_dict()
    data["backends"] = tables
    if cls.example_jobs:  # jobs in tokens, scaled so that sbar stays 0.3
        data["jobs"] = dict(cls.example_jobs)
        data["simulation"]["job_scale"] = 0.3 / lbsim.Scenario.from_dict(data).jobs.mean
    return lbsim.Scenario.from_dict(data)


@pytest.mark.parametrize(("model", "example"), _model_examples())
def test_every_model_serves_exactly_the_work_of_its_jobs(model, example):
    """Once every job has finished, each backend has served the sum of its jobs' sizes (to rounding)."""
    s = _drained(model, example)
    result = Simulation(s).run()
    jobs, ts = result.jobs, result.timeseries
    assert result.counts["jobs_in_system_end"] == 0 and len(jobs) > 50
    last = ts[ts["t"] == ts["t"].max()].set_index("backend")["served"]
    sizes = jobs.groupby("backend")["size"].sum()
    for j in range(s.num_backends):
        assert last[j] == pytest.approx(sizes.get(j, 0.0), rel=1e-9, abs=1e-9), f"{model}: backend {j}"
    # Cumulative: never decreasing, from 0.
    for _, g in ts.groupby("backend"):
        assert g["served"].iloc[0] == 0.0 and (np.diff(g["served"].to_numpy()) >= -1e-12).all()
    # The summary's served is the work of the measured window over its length.
    at_warmup = ts[ts["t"] == s.simulation.warmup]["served"].sum()
    window = s.simulation.horizon - s.simulation.warmup
    assert result.summary()["served"] == pytest.approx((last.sum() - at_warmup) / window, rel=1e-9)


# -- served against theory ------------------------------------------------------------------
def _served_rates(timeseries) -> tuple[np.ndarray, np.ndarray]:
    """Work served per second over each sample interval (all backends), at the interval's start."""
    total = timeseries.groupby("t", sort=True)["served"].sum()
    t = total.index.to_numpy()
    return t[:-1], np.diff(total.to_numpy()) / np.diff(t)


def test_mm1_below_capacity_serves_and_completes_the_offered_work():
    """M/M/1 at rho = 0.7: served = throughput = lambda E[S] (busy fraction times c), within Z batch errors."""
    lam, c = 0.7, 1.0
    s = scenario([backend("constant", c=c)], [lam], horizon=20000.0, warmup=500.0, seed=3)
    result = lbsim.simulate(s)
    summary = result.summary()
    t, rates = _served_rates(result.timeseries)
    estimate, se = batch_estimate(t, rates, s.simulation.warmup, s.simulation.horizon - 1.0)
    assert_close(estimate, lam, se, "served work rate")
    # The summary's figure is the same quantity over the whole window (the last interval included).
    assert summary["served"] == pytest.approx(estimate, abs=Z * se)
    assert_close(summary["served"], lam, se, "summary served")
    assert_close(summary["throughput"], lam, se, "throughput")


@pytest.mark.parametrize("size", ["exponential", "deterministic"])
def test_overloaded_ps_serves_its_supremum_while_completing_far_less(size):
    """Demand 3 on a PS backend with mu(x) = 2x/(x + 1): the load grows like (3 - 2) t, so after the warm-up
    mu(x) > 2 (1 - 1/150) and the backend serves almost 2 per second; the jobs it completes carry far less work,
    since each of the ever more numerous jobs in service gets an ever smaller share. FIFO, on the same demand,
    completes what it serves."""
    c = 2.0
    ps = lbsim.simulate(
        scenario([backend("saturating", c=c, k=1.0)], [3.0], horizon=2000.0, warmup=200.0, size=size)
    ).summary()
    assert c * (1 - 1 / 150) < ps["served"] < c
    assert ps["throughput"] < 0.8 * ps["served"]
    fifo = lbsim.simulate(
        scenario([backend("saturating", discipline="fifo", c=c, k=1.0)], [3.0], horizon=2000.0, warmup=200.0)
    ).summary()
    assert c * (1 - 1 / 150) < fifo["served"] < c
    # FIFO completes the head of line: served and completed work differ by less than one job at each end.
    assert fifo["throughput"] == pytest.approx(fifo["served"], abs=20.0 / 1800)


# -- the overload optimum against independent solves ----------------------------------------
def _random_overload(seed: int):
    """F in 2..5, B in 2..6, every family, sparse connect; each frontend asks for 20-80% or 100-300% of a fair
    share of the capacity it reaches."""
    rng = np.random.default_rng(1000 + seed)
    F, B = int(rng.integers(2, 6)), int(rng.integers(2, 7))
    rates = [random_rate(rng, KINDS[int(rng.integers(len(KINDS)))]) for _ in range(B)]
    connect = rng.random((F, B)) < rng.uniform(0.2, 0.6)
    for i in range(F):
        if not connect[i].any():
            connect[i, rng.integers(B)] = True
    capacity = np.array([nominal_capacity(r) for r in rates])
    share = (connect * (capacity / connect.sum(axis=0).clip(1))[None, :]).sum(axis=1)
    demand = share * np.where(rng.random(F) < 0.5, rng.uniform(0.2, 0.8, F), rng.uniform(1.0, 3.0, F))
    return rates, demand, connect


def _min_cut(demand: np.ndarray, capacity: np.ndarray, connect: np.ndarray) -> float:
    """Max flow by brute force over cuts: min over frontend sets A of lambda(outside A) + cap(N(A))."""
    F = len(demand)
    best = math.inf
    for mask in range(1 << F):
        inside = np.array([(mask >> i) & 1 for i in range(F)], bool)
        reach = connect[inside].any(axis=0)
        best = min(best, float(demand[~inside].sum() + capacity[reach].sum()))
    return best


def _least_flow(j: int, demand, capacity, connect, throughput: float) -> float:
    """The least Lambda_j over maximum flows (an LP per backend; dense, HiGHS)."""
    F, B = connect.shape
    ei, ej = np.nonzero(connect)
    E = ei.size
    finite = np.isfinite(capacity)
    a_ub = np.vstack([(ei[None, :] == np.arange(F)[:, None]), (ej[None, :] == np.flatnonzero(finite)[:, None])])
    b_ub = np.concatenate([demand, capacity[finite]])
    lp = scipy.optimize.linprog(
        (ej == j).astype(float), A_ub=a_ub.astype(float), b_ub=b_ub, A_eq=np.ones((1, E)), b_eq=[throughput],
        method="highs",
    )  # fmt: skip
    assert lp.status == 0, lp.message
    return float(lp.fun)


@pytest.mark.parametrize("seed", range(60))
def test_overload_optimum_against_independent_solves(seed):
    """Throughput = the brute-force minimum cut; a backend is stable iff some maximum flow leaves it below
    capacity (an LP each), and the routing keeps all of those below at once; the stable part meets its KKT
    conditions (docs/model.md section 2: used stable backends of a frontend share the least marginal cost)."""
    rates, demand, connect = _random_overload(seed)
    best = solve_overload(rates, demand, connect)
    capacity = np.array([float(r.supremum) for r in rates])
    F, B = connect.shape
    throughput = _min_cut(demand, capacity, connect)
    assert best.throughput == pytest.approx(throughput, rel=1e-9)
    p = best.routing
    assert np.all(p >= 0) and np.all(p[~connect] == 0) and np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    flow = demand @ p
    np.testing.assert_allclose(best.flow, flow, rtol=1e-12, atol=1e-15)
    assert np.minimum(flow, capacity).sum() == pytest.approx(throughput, rel=1e-8)
    stable = np.zeros(B, bool)
    stable[best.stable_backends] = True
    assert sorted([*best.stable_backends, *best.unstable_backends]) == list(range(B))
    for j in range(B):
        if not np.isfinite(capacity[j]):
            assert stable[j], "an unbounded backend can always be kept stable"
            continue
        least = _least_flow(j, demand, capacity, connect, throughput)
        can = least < capacity[j] * (1 - 1e-7)
        assert can == stable[j] or abs(least - capacity[j]) <= 1e-6 * capacity[j], f"backend {j}: least {least}"
    assert np.all(flow[stable] < capacity[stable])
    assert np.all(flow[~stable] >= capacity[~stable] * (1 - 1e-9))
    assert best.overloaded == bool((~stable).any())
    assert np.isnan(best.load[~stable]).all()
    np.testing.assert_allclose(best.load[stable], [rates[j].inverse(flow[j]) for j in np.flatnonzero(stable)],
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    # KKT on the stable part: each frontend's used stable backends cost the same, and no stable one it may use less.
    # A backend held at its capacity (flat families: constant, servers) adds a capacity price beta_j >= 0.
    g = np.array([marginal_cost(rates[j], flow[j]) if stable[j] else np.inf for j in range(B)])
    np.testing.assert_allclose(best.marginal_cost[stable], g[stable], rtol=1e-9, atol=0)
    beta = best.capacity_price[stable]
    full = flow[stable] >= capacity[stable] * (1 - 1e-6)
    assert np.all(beta >= 0) and np.all(beta[~full] == 0)
    g[stable] += beta
    cost = np.where(connect & stable[None, :], g[None, :], np.inf)
    for i in range(F):
        used = (p[i] > USED) & stable
        if not used.any():
            continue
        assert not (p[i, ~stable] > USED).any(), "a frontend that reaches a stable backend wastes no flow"
        nu = cost[i].min()
        scale = max(nu, 1e-12 * max(float(np.nanmax(np.where(np.isfinite(g), g, 0.0))), 1.0))
        assert (cost[i, used] - nu).max() <= KKT * scale


def test_random_overloads_cover_mixed_cases():
    counts = {"overloaded": 0, "mixed": 0}
    for seed in range(60):
        best = solve_overload(*_random_overload(seed))
        counts["overloaded"] += best.overloaded
        counts["mixed"] += best.overloaded and len(best.stable_backends) > 0
    assert counts["overloaded"] >= 15 and counts["mixed"] >= 8, counts


def test_overload_optimum_by_hand():
    """eu (5) reaches a and b (saturating, c = 2): 4 of its 5 are served, both are unstable and share it by
    capacity; us (1) reaches b and c (c = 2, k = 1): all of it goes to c, whose load is k L / (c - L) = 1."""
    sat = make_rate({"kind": "saturating", "c": 2.0, "k": 1.0})
    connect = np.array([[1, 1, 0], [0, 1, 1]], bool)
    best = solve_overload([sat, sat, sat], np.array([5.0, 1.0]), connect)
    assert best.overloaded and best.throughput == pytest.approx(5.0)
    assert list(best.stable_backends) == [2] and list(best.unstable_backends) == [0, 1]
    np.testing.assert_allclose(best.routing, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], atol=1e-9)
    assert best.load[2] == pytest.approx(1.0, rel=1e-9) and best.total_load == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_allclose(best.served, [2.0, 2.0, 1.0], rtol=1e-9)
    # Servable demand: nothing unstable, the total load least (two equal backends share equally).
    easy = solve_overload([sat, sat], np.array([1.0]), np.ones((1, 2), bool))
    assert not easy.overloaded and easy.throughput == pytest.approx(1.0)
    assert easy.total_load == pytest.approx(2 * 0.5 / 1.5, rel=1e-9)
    # Demand exactly at capacity cannot be kept stable (Lambda_j < sup mu_j is strict).
    edge = solve_overload([sat, sat], np.array([4.0]), np.ones((1, 2), bool))
    assert edge.overloaded and edge.throughput == pytest.approx(4.0) and len(edge.stable_backends) == 0


def test_optimum_overload_reads_the_scenario_and_the_cli_prints_it():
    """``optimum(s, overload=True)`` uses the scenario's capacities; without it the error names --overload."""
    s = scenario(
        [backend("saturating", c=2.0, k=1.0), backend("saturating", c=2.0, k=1.0, max_load=1.0)], [5.0, 0.5],
        network={"connect": [[True, False], [False, True]]},
    )  # fmt: skip
    with pytest.raises(ScenarioError, match="--overload"):
        lbsim.optimum(s)
    best = lbsim.optimum(s, overload=True)
    # Backend 1 serves at most mu(max_load) = 1: 0.5 keeps it stable.
    assert best.throughput == pytest.approx(2.5) and list(best.stable_backends) == [1]
    data = json.loads(json.dumps(best.to_dict()))
    assert {"overloaded", "throughput", "stable_backends", "unstable_backends", "routing", "load"} <= set(data)
    assert data["load"][0] is None and data["load"][1] == pytest.approx(1.0 * 0.5 / 1.5)


# -- overload in compare ------------------------------------------------------------------
def _series(t: np.ndarray, jobs: np.ndarray):
    import pandas as pd

    return pd.DataFrame({"t": t, "backend": 0, "jobs": jobs})


def test_queue_growth_flags_linear_growth_and_not_noise():
    """A queue growing by 0.5 job/s under noise is unbounded; stationary noise and a slow drift are not."""
    rng = np.random.default_rng(4)
    t = np.arange(0.0, 2000.0)
    noise = rng.normal(0, 20, t.size)
    assert queue_growth(_series(t, 50 + 0.5 * t + noise), 200.0, 2000.0)[2]
    assert not queue_growth(_series(t, 50 + noise), 200.0, 2000.0)[2]
    # Significant but negligible against the level: 1 job over the late window on top of 1000.
    slope, t_stat, unbounded = queue_growth(_series(t, 1000 + t / 900 + rng.normal(0, 0.01, t.size)), 200.0, 2000.0)
    assert t_stat > 4.5 and not unbounded


def test_compare_reports_served_and_marks_unbounded_queues():
    """Demand 3 on two backends of capacity 2: ``nearest`` sends it all to one (unbounded, served ~2),
    ``jsq`` shares it (bounded, served ~3 = the demand)."""
    s = scenario(
        [backend("saturating", c=2.0, k=0.5)] * 2, [3.0], horizon=600.0, warmup=100.0,
        network={"delay": [[0.01, 0.05]]},
    )  # fmt: skip
    result = compare(s, ["jsq", "nearest"], seeds=2, progress=False)
    table = result.table.set_index("router")
    assert table.loc["nearest", "unbounded"] == 2 and table.loc["jsq", "unbounded"] == 0
    assert 1.9 < table.loc["nearest", "served"] < 2.0
    assert table.loc["jsq", "served"] == pytest.approx(3.0, rel=0.05)
    assert {"served", "queue_growth", "unbounded"} <= set(result.runs.columns)
    text = str(result)
    assert "served (work/s)" in text and "2/2" in text and "unbounded:" in text
