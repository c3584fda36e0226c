"""The drain after the horizon and the job limit: which jobs a run measures, and how it stops.

docs/model.md section 3.3: arrivals stop at the horizon; with ``simulation.drain`` (the default)
the run then serves the jobs still in the system, so the summary measures every job that arrived
in [warm-up, horizon), the long ones included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lbsim
from helpers import backend, check_counts, scenario

HORIZON = 200.0


def _fifo(horizon: float = HORIZON, discipline: str = "fifo", **simulation) -> lbsim.Scenario:
    """Two frontends, two backends at load 0.78 behind 50 and 80 ms hops, JSQ on delayed telemetry."""
    return scenario(
        [backend("constant", discipline=discipline, c=1.0), backend("constant", discipline=discipline, c=0.8)],
        [0.9, 0.5],
        router="jsq",
        horizon=horizon,
        warmup=20.0,
        network={"delay": [[0.05, 0.08], [0.08, 0.05]]},
        seed=3,
        **simulation,
    )


@pytest.mark.parametrize("discipline", ["fifo", "ps"])
def test_the_drain_measures_exactly_the_jobs_that_arrived_in_the_window(discipline):
    """The drain runs on as a longer run would (arrivals go on, unmeasured), so a run twice as long
    (the same seed: the same arrivals) says when each job of the shorter run really finishes."""
    short = lbsim.simulate(_fifo(discipline=discipline))
    long = lbsim.simulate(_fifo(2 * HORIZON, discipline=discipline))
    check_counts(short)
    expected = long.jobs[long.jobs["t_arrival"] < HORIZON].reset_index(drop=True)
    assert len(expected) == short.counts["jobs_arrived"]
    pd.testing.assert_frame_equal(short.jobs, expected, check_exact=True)

    summary = short.summary()
    measured = expected[expected["t_arrival"] >= 20.0]
    assert summary["status"] == "complete" and summary["jobs_undrained"] == 0
    assert summary["jobs_measured"] == len(measured) == len(short.measured())
    assert summary["mean_latency"] == pytest.approx(measured["latency"].mean(), rel=1e-12)
    assert summary["p99"] == pytest.approx(np.quantile(measured["latency"], 0.99), rel=1e-12)
    # the drain ends within one sample interval of the last service of the window's jobs
    assert short.jobs["t_backend_done"].max() <= short.t_end < short.jobs["t_backend_done"].max() + 1.0
    pd.testing.assert_frame_equal(short.timeseries, long.timeseries[long.timeseries["t"] < HORIZON])
    # throughput stays a rate over the window: responses landed by the horizon
    landed = expected[(expected["t_response"] >= 20.0) & (expected["t_response"] <= HORIZON)]
    assert summary["throughput"] == pytest.approx(landed["size"].sum() / (HORIZON - 20.0), rel=1e-12)


def test_without_the_drain_the_run_keeps_only_the_responses_landed_by_the_horizon():
    drained = lbsim.simulate(_fifo())
    cut = lbsim.simulate(_fifo(drain=False))
    check_counts(cut)
    jobs = drained.jobs
    pd.testing.assert_frame_equal(
        cut.jobs, jobs[jobs["t_response"] <= HORIZON].reset_index(drop=True), check_exact=True
    )
    c = cut.counts
    assert c["jobs_drained"] == 0 and c["jobs_undrained"] == c["jobs_in_system_end"] > 0
    # what the cut run leaves out are the jobs still in the system at the horizon: the long ones
    left_out = jobs[jobs["t_response"] > HORIZON]
    assert len(left_out) == c["jobs_in_system_end"]
    assert cut.summary()["mean_latency"] < drained.summary()["mean_latency"]
    assert drained.t_end > HORIZON == cut.t_end


def test_the_drain_limit_reports_the_jobs_it_left():
    """Overloaded 2:1 under PS, the jobs in the system at the horizon share the backend with ever more."""
    s = scenario([backend("constant", c=1.0)], [2.0], horizon=100.0, drain_limit=10.0, sample_interval=1.0)
    result = lbsim.simulate(s)
    check_counts(result)
    c, summary = result.counts, result.summary()
    assert summary["status"] == "drain_limit" and result.t_end == pytest.approx(110.0)
    assert c["jobs_undrained"] > 0 and c["jobs_drained"] > 0
    assert c["jobs_undrained"] + c["jobs_drained"] == c["jobs_in_system_end"]
    assert summary["jobs_measured"] == len(result.measured())


def test_the_job_limit_stops_an_overloaded_run_at_the_first_sample_past_it():
    limit = 150
    s = scenario([backend("constant", c=1.0)], [3.0], horizon=1000.0, max_jobs_in_system=limit)
    result = lbsim.simulate(s)
    summary = result.summary()
    assert summary["status"] == "job_limit"
    # the backlog grows at 2 jobs/s with a standard deviation of about 2 sqrt(t): past 150 jobs near 75 s
    assert 50.0 < result.t_end < 110.0
    per_sample = result.timeseries.groupby("t")["jobs"].sum()  # no network: the backend holds them all
    assert per_sample.index.max() == result.t_end
    assert per_sample.iloc[-1] > limit and (per_sample.iloc[:-1] <= limit).all()
    assert summary["jobs_in_system_end"] == per_sample.iloc[-1]
    assert summary["jobs_drained"] == 0  # a stopped run does not drain
    assert np.isfinite(summary["throughput"]) and summary["throughput"] <= 1.0 + 1e-9


def test_the_job_limit_does_not_touch_a_run_that_stays_below_it():
    free = lbsim.simulate(_fifo())
    bounded = lbsim.simulate(_fifo(max_jobs_in_system=10_000))
    pd.testing.assert_frame_equal(free.jobs, bounded.jobs, check_exact=True)
    assert bounded.summary()["status"] == "complete"


@pytest.mark.parametrize("record_jobs", [True, False])
def test_the_summary_is_the_same_with_and_without_job_records(record_jobs):
    """LatencyRecords measure the drained jobs (and leave out the later arrivals) as the jobs table does."""
    full = lbsim.simulate(_fifo()).summary()
    other = lbsim.simulate(_fifo(record_jobs=record_jobs)).summary()
    for key in ("jobs_measured", "jobs_drained", "jobs_undrained", "jobs_completed", "status"):
        assert full[key] == other[key], key
    assert other["mean_latency"] == pytest.approx(full["mean_latency"], rel=1e-12)
