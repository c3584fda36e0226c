"""Overload: the work the backends serve (``served``) beside the work of completed jobs (``throughput``).

Below capacity the two agree (every unit of work offered is served and its
job completes); in overload a processor-sharing backend serves at its
supremum while the jobs it shares it among finish ever more slowly, so the
work of *completed* jobs falls far below the work *served*
(docs/model.md section 3).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Z, assert_close, backend, batch_estimate, scenario

import lbsim
from lbsim.backends import BACKENDS
from lbsim.engine import Simulation


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
