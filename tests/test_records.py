"""Switching job records off changes what is kept, not what is measured."""

import math

import lbsim
from lbsim.engine.result import TIMING_FIELDS


def test_summary_without_job_records_matches_the_full_records(tmp_path):
    s = lbsim.load_scenario("scenarios/two_regions.toml", ["simulation.horizon=300", "simulation.warmup=30"])
    full = lbsim.simulate(s)
    lean = lbsim.simulate(s.replace(**{"simulation.record_jobs": False}))
    assert len(lean.jobs) == 0 and list(lean.jobs.columns) == list(full.jobs.columns)
    a, b = full.summary(), lean.summary()
    for key in a:
        if key in TIMING_FIELDS:
            continue
        if isinstance(a[key], float):
            # the same values, summed in completion order instead of job order
            assert math.isclose(a[key], b[key], rel_tol=1e-12), key
        else:
            assert a[key] == b[key], key
    lean.write(tmp_path)
    assert not (tmp_path / "jobs.parquet").exists() and (tmp_path / "summary.json").exists()


def test_job_records_keep_every_value_exactly():
    import numpy as np

    from lbsim.jobs import Job
    from lbsim.engine.records import JOB_COLUMNS, JobRecords

    rng = np.random.default_rng(3)
    n = 5000
    records, expected = JobRecords(), []
    for k in rng.permutation(n):  # completion order is not job order
        job = Job(int(k) + 2**40, int(k % 7), float(rng.exponential()), float(rng.uniform(0, 100)))
        job.backend, job.return_delay = int(k % 5), float(rng.uniform(0, 0.1))
        job.t_backend_arrival = job.t_arrival + job.return_delay
        t_done = job.t_backend_arrival + float(rng.exponential())
        records.add(job, t_done)
        row = (job.job_id, job.frontend, job.backend, job.size, job.t_arrival, job.t_backend_arrival, t_done)
        expected.append(row + (t_done + job.return_delay,))
    assert len(records) == n
    horizon = float(np.median([row[-1] for row in expected]))
    kept = sorted(row for row in expected if row[-1] <= horizon)
    for _ in range(2):  # frame() may be called again, and rows added after it
        frame = records.frame(horizon)
        records.add(job, horizon + 1.0)  # too late to be in any frame
        assert list(frame.columns[: len(JOB_COLUMNS)]) == list(JOB_COLUMNS)
        assert [tuple(r) for r in frame[list(JOB_COLUMNS)].itertuples(index=False)] == kept
        assert frame["job_id"].dtype == np.int64 and frame["backend"].dtype == np.int32
