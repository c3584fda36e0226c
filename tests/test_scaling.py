"""Job-size scaling (lbsim/scaling.py): distances, tables, files, executors, resuming, and the sqrt(scale) law."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from helpers import descendants

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
        "command.json", "runs", "runs.parquet", "scaling.json", "scaling.parquet", "scaling.png", "trajectories.png",
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


MACHINE_COLUMNS = ["wall_seconds", "jobs_per_second"]  # they measure the machine, not the model


def same_study(a, b, machine: bool = False) -> None:
    """Two scaling results agree value for value (and in their wall times too with ``machine``)."""
    drop_runs = [] if machine else MACHINE_COLUMNS
    drop_table = [] if machine else ["wall_per_run"]
    pd.testing.assert_frame_equal(a.runs.drop(columns=drop_runs), b.runs.drop(columns=drop_runs), check_exact=True)
    pd.testing.assert_frame_equal(a.table.drop(columns=drop_table), b.table.drop(columns=drop_table), check_exact=True)
    pd.testing.assert_frame_equal(a.trajectories, b.trajectories, check_exact=True)
    assert a.fits == b.fits


def test_scaling_on_dask_gives_the_same_study():
    """A dask LocalCluster of two workers computes exactly the runs of the in-process reference."""
    pytest.importorskip("distributed")
    sc = burst(horizon=12.0)
    local = scaling(sc, scales=(1.0, 0.1), seeds=2, progress=False)
    dask = scaling(sc, scales=(1.0, 0.1), seeds=2, progress=False, workers=2, executor="dask")
    same_study(dask, local)
    assert local.format_table().splitlines()[0] == dask.format_table().splitlines()[0]


def test_interrupted_scaling_resumes_from_its_finished_runs(tmp_path, monkeypatch):
    """A study stopped after some runs (here: only its first scale ran) reuses them when run again.

    Rerunning the whole study must run only the missing runs, give the same
    study as a clean one, and a third run must run nothing and reproduce the
    second one exactly, wall times included (they are read back, not measured).
    """
    scaling_module = sys.modules["lbsim.scaling"]  # `lbsim.scaling` is the function, lbsim/__init__ re-exports it

    sc = burst(horizon=12.0)
    clean = scaling(sc, scales=(1.0, 0.1), seeds=2, progress=False)
    out = tmp_path / "study"
    real_run = scaling_module._scaling_run

    def stopped_run(payload):  # Ctrl-C once the first scale's runs have finished
        if payload[0].simulation.job_scale != 1.0:
            raise KeyboardInterrupt
        return real_run(payload)

    monkeypatch.setattr(scaling_module, "_scaling_run", stopped_run)
    with pytest.raises(KeyboardInterrupt):
        scaling(sc, scales=(1.0, 0.1), seeds=2, out=out, progress=False)
    assert len(list((out / "runs").glob("*.json"))) == 2

    ran = []

    def counting_run(payload):
        ran.append(payload[:3])
        return real_run(payload)

    monkeypatch.setattr(scaling_module, "_scaling_run", counting_run)
    resumed = scaling(sc, scales=(1.0, 0.1), seeds=2, out=out, progress=False)
    assert [(scale, seed) for scenario, _, seed in ran for scale in [scenario.simulation.job_scale]] == [
        (0.1, 1), (0.1, 2),
    ]  # fmt: skip
    same_study(resumed, clean)
    assert len(list((out / "runs").glob("*.json"))) == 4

    ran.clear()
    again = scaling(sc, scales=(1.0, 0.1), seeds=2, out=out, progress=False)
    assert ran == []
    same_study(again, resumed, machine=True)
    assert again.format_table() == resumed.format_table()
    # another command into the same directory is refused; with force it starts afresh
    with pytest.raises(lbsim.ScenarioError):
        scaling(sc, scales=(1.0,), seeds=1, out=out, progress=False, step=0.05)
    other = scaling(sc, scales=(1.0,), seeds=1, out=out, progress=False, step=0.05, force=True)
    assert len(ran) == 1 and len(other.runs) == 1 and len(list((out / "runs").glob("*.json"))) == 1




def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_ctrl_c_stops_lbsim_scaling_cleanly_and_it_resumes(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) on `lbsim scaling --workers 2`.

    The command exits with one line and status 130, no worker prints a
    traceback, no process is left behind, and the same command run again
    reuses the runs that finished and prints the same table as a clean run.
    """
    out = tmp_path / "study"
    args = [
        sys.executable, "-c", "from lbsim.cli import main; main()", "scaling", "scenarios/fluid_burst.toml",
        "--scales", "1,0.1,0.01,0.002", "--seeds", "2", "--set", "simulation.horizon=30",
        "--set", "simulation.warmup=1", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    child = subprocess.Popen([*args, "--out", str(out), "--workers", "2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    # (the smallest scale takes seconds per run, so the interrupt lands while runs are left, even on a busy machine)
    while len(list((out / "runs").glob("*.json"))) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = descendants(child.pid)
    os.killpg(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    stderr = stderr.decode()
    finished = len(list((out / "runs").glob("*.json")))
    assert child.returncode == 130 and 2 <= finished < 8, (child.returncode, finished, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "error: aborted", stderr
    deadline = time.monotonic() + 30
    while (left := {p for p in workers if running(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"

    resumed = subprocess.run([*args, "--out", str(out)], capture_output=True, env=env, check=True)
    clean = subprocess.run([*args, "--out", str(tmp_path / "clean")], capture_output=True, env=env, check=True)

    def without_wall(text: bytes) -> list[str]:
        lines = text.decode().splitlines()[:-1]  # the last line names the directory
        return [line.rsplit(None, 1)[0] if line[:1] == " " or line[:1].isdigit() else line for line in lines]

    assert without_wall(resumed.stdout) == without_wall(clean.stdout)


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
