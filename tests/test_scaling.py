"""Job-size scaling (lbsim/scaling.py): distances, tables, files, and the sqrt(scale) law."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import lbsim
from lbsim.scaling import scaling, trajectory_distance


def burst(horizon: float) -> lbsim.Scenario:
    return lbsim.load_scenario("scenarios/fluid_burst.toml").replace(
        **{"simulation.horizon": horizon, "simulation.warmup": 1.0}
    )


def test_trajectory_distance_is_sup_and_rms_over_times_and_backends():
    t = np.array([0.0, 0.5, 1.0])
    fluid_load = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    gap = np.array([[0.0, 0.5], [-2.0, 0.0], [0.25, 0.0]])
    frame = pd.DataFrame(
        {"t": np.repeat(t, 2), "backend": np.tile([0, 1], 3), "load": (fluid_load + gap).reshape(-1)}
    ).iloc[::-1]  # any row order
    d = trajectory_distance(frame, t, fluid_load)
    assert d["sup_distance"] == 2.0
    assert d["rms_distance"] == pytest.approx(math.sqrt((0.25 + 4.0 + 0.0625) / 6))
    with pytest.raises(ValueError):
        trajectory_distance(frame, t + 0.1, fluid_load)


def test_scaling_tables_files_and_reproducibility(tmp_path):
    sc = burst(horizon=12.0)
    result = scaling(sc, scales=(1.0, 0.1), seeds=2, out=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "runs.parquet", "scaling.json", "scaling.parquet", "scaling.png", "trajectories.png",
    ]  # fmt: skip
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert list(runs[["scale", "seed"]].itertuples(index=False, name=None)) == [(1.0, 1), (1.0, 2), (0.1, 1), (0.1, 2)]
    table = pd.read_parquet(tmp_path / "scaling.parquet")
    assert list(table["scale"]) == [1.0, 0.1] and (table["runs"] == 2).all()
    for short in ("sup", "rms"):
        assert (table[f"{short}_low"] <= table[f"{short}_mean"]).all()
        assert (table[f"{short}_mean"] <= table[f"{short}_high"]).all()
    # Ten times more, ten times smaller jobs: about ten times more arrivals (Poisson, same volume rate).
    ratio = table["jobs_per_run"].iloc[1] / table["jobs_per_run"].iloc[0]
    assert 8 < ratio < 12
    meta = json.loads((tmp_path / "scaling.json").read_text())
    assert set(meta["fits"]) == {"sup_distance", "rms_distance"}
    for png in ("scaling.png", "trajectories.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Common random numbers: the same seeds give the same runs, in processes or not.
    again = scaling(sc, scales=(1.0, 0.1), seeds=2, progress=False, workers=2)
    columns = ["scale", "seed", "jobs_arrived", "sup_distance", "rms_distance"]
    pd.testing.assert_frame_equal(again.runs[columns], result.runs[columns])
    assert "0.5 expected" in result.format_table()


def test_bad_scales_are_rejected():
    with pytest.raises(lbsim.ScenarioError) as err:
        scaling(burst(5.0), scales=(1.0, -0.1), seeds=1, progress=False)
    assert err.value.key == "scales"


@pytest.mark.slow
def test_distance_to_the_fluid_model_shrinks_like_the_square_root_of_the_scale():
    """The stochastic loads deviate from the fluid ones by O(sqrt(job_scale)) (Kurtz 1970).

    Four seeds at scales 0.1, 0.01, 0.001 (about 250 000 jobs per run at the
    smallest). The slope of log distance on log scale is estimated by the
    regression of all twelve runs; 0.5 must lie within its 99.9% t interval
    (a run-to-run spread estimated from the runs themselves, not chosen).
    """
    result = scaling(burst(30.0), scales=(0.1, 0.01, 0.001), seeds=4, progress=False)
    print(result.format_table())
    for metric in ("sup_distance", "rms_distance"):
        regression = scipy.stats.linregress(np.log(result.runs["scale"]), np.log(result.runs[metric]))
        half = scipy.stats.t.ppf(0.9995, len(result.runs) - 2) * regression.stderr
        assert abs(regression.slope - 0.5) <= half, (metric, regression.slope, half)
