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
