"""Outputs that say where they came from, appear whole, are never mixed, and survive interruption (docs/model.md 3.3)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import lbsim
from lbsim.cli import main
from lbsim.engine.result import offered_load
from lbsim.engine.simulation import mean_multiplier
from lbsim.errors import ScenarioError
from lbsim.experiments import compare, execute, sweep
from lbsim.experiments.executors import run_cost
from lbsim.files import toml_text
from lbsim.outputs import check_out, experiment_directory, output_directory

ROOT = Path(__file__).resolve().parents[1]
TWO_REGIONS = str(ROOT / "scenarios" / "two_regions.toml")
SHORT = ["--set", "simulation.horizon=30", "--set", "simulation.warmup=5"]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# -- scenario.toml ------------------------------------------------------------------------
def test_toml_text_reads_back_to_the_same_data():
    data = {
        "name": 'a "quoted" name\twith a tab',
        "nan": math.nan,
        "values": [1, -2.5, 1e-300, math.inf, True, "x"],
        "simulation": {"horizon": 0.1 + 0.2, "rate_schedule": [[10.0, 0.5], [20.0, 1.5]]},
        "frontends": [{"name": "us", "rate": 5.0}, {"rate": 4.0, "rate_schedule": [[0.0, 2.0]]}],
        "backends": [{"service": {"kind": "saturating", "c": 4.0, "k": 2.0}, "odd key": {}}],
    }
    back = tomllib.loads(toml_text(data))
    assert math.isnan(back.pop("nan")) and math.isnan(data.pop("nan"))
    assert back == data


def test_scenario_toml_reruns_the_same_simulation(tmp_path):
    """scenario.toml is the resolved scenario: loading it alone gives byte-identical jobs."""
    code, output = cli(
        "run", TWO_REGIONS, *SHORT, "--router", "power_of_d", "--set", "router.d=3", "--seed", "7",
        "--out", str(tmp_path / "a"), "--quiet",
    )  # fmt: skip
    assert code == 0, output
    out = tmp_path / "a"
    again = lbsim.simulate(lbsim.load_scenario(out / "scenario.toml"))
    assert pd.read_parquet(out / "jobs.parquet").equals(again.jobs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lbsim_version"] == lbsim.__version__
    assert summary["router"] == "power_of_d" and summary["router_params"] == {"d": 3}
    assert summary["seed"] == 7
    assert summary["overrides"] == [
        'router={ name = "power_of_d" }', "simulation.horizon=30", "simulation.warmup=5", "router.d=3",
        "simulation.seed=7",
    ]  # fmt: skip


def test_router_params_have_their_defaults_filled_in():
    s = lbsim.load_scenario(TWO_REGIONS, ["simulation.horizon=10", "simulation.warmup=1"])
    params = lbsim.simulate(s, router="dgdlb", step=0.1).summary()["router_params"]
    from lbsim.routers.base import router_class

    defaults = {k: f.default for k, f in router_class("dgdlb").Params.model_fields.items()}
    assert params == {**defaults, "step": 0.1}


# -- a run's directory appears whole ------------------------------------------------------
def test_a_second_run_into_the_same_out_is_refused_and_force_leaves_only_its_own_files(tmp_path):
    out = tmp_path / "run"
    assert cli("run", TWO_REGIONS, *SHORT, "--router", "dgdlb", "--out", str(out), "--quiet")[0] == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "routing.parquet" in first  # dgdlb records its split; jsq has none

    code, output = cli("run", TWO_REGIONS, *SHORT, "--router", "jsq", "--out", str(out), "--quiet")
    assert code == 2 and "--force" in output and "Traceback" not in output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # untouched

    assert cli("run", TWO_REGIONS, *SHORT, "--router", "jsq", "--out", str(out), "--quiet", "--force")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["jobs.parquet", "scenario.toml", "summary.json", "timeseries.parquet"]
    assert json.loads((out / "summary.json").read_text())["router"] == "jsq"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary sibling left


@pytest.mark.parametrize("where", ["empty", "under a file", "a file", "unwritable"])
def test_bad_out_is_an_error_before_the_simulation(tmp_path, where):
    (tmp_path / "f").write_text("x")
    out = {"empty": "", "under a file": str(tmp_path / "f" / "x"), "a file": str(tmp_path / "f"), "unwritable": "/proc/lbsim-x"}[where]
    started = time.perf_counter()
    code, output = cli("run", TWO_REGIONS, "--horizon", "5000", "--out", out, "--quiet")
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: ") and "--out" in output, output
    assert time.perf_counter() - started < 5  # nothing was simulated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_an_interrupted_write_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), output_directory(out) as tmp:
        (tmp / "jobs.parquet").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_killed_writers_temporary_directory_is_cleaned_up(tmp_path):
    leftover = tmp_path / f".out.{dead_pid()}.tmp"
    leftover.mkdir()
    (leftover / "jobs.parquet").write_text("half")
    with output_directory(tmp_path / "out") as tmp:
        (tmp / "summary.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_check_out_names_the_problem(tmp_path):
    assert check_out(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(ScenarioError) as err:
        check_out("")
    assert err.value.key == "--out"


# -- offered_load ------------------------------------------------------------------------
def test_offered_load_is_the_time_average_of_the_scheduled_demand():
    # hand-worked: rates 5 + 4; x0.5 from t = 10; window [5, 30]: (5 * 1 + 20 * 0.5) / 25 = 0.6
    s = lbsim.load_scenario(
        TWO_REGIONS, ["simulation.horizon=30", "simulation.warmup=5", "simulation.rate_schedule=[[10, 0.5]]"]
    )
    assert offered_load(s) == pytest.approx(9.0 * 0.6, rel=1e-15)
    # a frontend's own schedule on top: us-east x2 on [0, 20), x1 after -> 5 * (15 * 2 * 0.5... by pieces)
    s = s.replace(**{"frontends.0.rate_schedule": [[0.0, 2.0], [20.0, 1.0]]})
    us = 5.0 * (5 * 2.0 * 1.0 + 10 * 2.0 * 0.5 + 10 * 1.0 * 0.5) / 25
    assert offered_load(s) == pytest.approx(us + 4.0 * 0.6, rel=1e-15)
    assert mean_multiplier(None, 0, 1) == 1.0 and mean_multiplier([(3.0, 0.0)], 0.0, 6.0) == 0.5


def test_a_half_load_run_says_half_the_load_is_offered():
    s = lbsim.load_scenario(
        TWO_REGIONS, ["simulation.horizon=400", "simulation.warmup=20", "simulation.rate_schedule=[[0, 0.5]]"]
    )
    summary = lbsim.simulate(s).summary()
    assert summary["offered_load"] == pytest.approx(4.5, rel=1e-15)
    # the work that arrived in the window is Poisson with mean offered_load * 380 (jobs of mean 0.1):
    # throughput within 5 standard deviations (plus what is in the system at the end)
    window = 380.0
    sd = math.sqrt(2 * 4.5 * 0.1 / window)  # compound Poisson, exponential sizes: var = 2 * rate * sbar / T
    assert abs(summary["throughput"] - 4.5) < 5 * sd + summary["jobs_in_system_end"] * 0.1 * 2 / window


def test_sweep_rows_say_what_each_run_offered(tmp_path):
    (tmp_path / "s.toml").write_text(Path(TWO_REGIONS).read_text())
    spec = {
        "scenario": str(tmp_path / "s.toml"),
        "routers": ["jsq"],
        "set": {"simulation.horizon": 20.0, "simulation.warmup": 2.0},
        "grid": {"simulation.rate_schedule": [[[0.0, 0.5]], [[0.0, 1.0]]]},
    }
    results = sweep(spec, tmp_path / "out", progress=False)
    assert results["offered_load"].tolist() == pytest.approx([4.5, 9.0], rel=1e-15)
    assert set(results["lbsim_version"]) == {lbsim.__version__}
    assert json.loads(results["router_params"][0]) == {}


# -- versions are never mixed ------------------------------------------------------------
def test_resuming_a_sweep_with_another_versions_runs_is_refused(tmp_path, monkeypatch):
    (tmp_path / "s.toml").write_text(Path(TWO_REGIONS).read_text())
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        'scenario = "s.toml"\nrouters = ["jsq"]\nseeds = 2\n'
        '[set]\n"simulation.horizon" = 10.0\n"simulation.warmup" = 1.0\n'
    )
    sweep(spec, tmp_path / "out", progress=False)
    record = json.loads(next((tmp_path / "out" / "runs").glob("*.json")).read_text())
    assert record["lbsim_version"] == lbsim.__version__
    monkeypatch.setattr(lbsim, "__version__", "99.0")
    code, output = cli("sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 2 and output.count("\n") == 1, output
    assert str(tmp_path / "out" / "runs") in output and lbsim.__version__ in output and record["lbsim_version"] in output


# -- compare and scaling: resume, and one command per directory ---------------------------
def test_compare_resumes_and_refuses_another_command(tmp_path):
    s = lbsim.load_scenario(TWO_REGIONS, ["simulation.horizon=20", "simulation.warmup=2"])
    out = tmp_path / "cmp"
    first = compare(s, ["jsq", "random"], 2, out=out, progress=False)
    assert len(list((out / "runs").glob("*.json"))) == 4 and len(list((out / "runs").glob("*.jobs.parquet"))) == 4
    records = sorted((out / "runs").glob("*.json"))
    records[0].unlink()  # a lost record: that run runs again
    Path(str(records[1]).removesuffix(".json") + ".jobs.parquet").unlink()  # a record without its jobs: too
    kept = {p.name: p.stat().st_mtime_ns for p in records[2:]}
    for where in (out, out / "runs"):  # what a kill -9 in the middle of a write leaves
        (where / f".comparison.parquet.{dead_pid()}.tmp").write_text("half")
    again = compare(s, ["jsq", "random"], 2, out=out, progress=False)
    pd.testing.assert_frame_equal(again.table, first.table)
    pd.testing.assert_frame_equal(again.jobs, first.jobs)
    assert {p.name: p.stat().st_mtime_ns for p in records[2:]} == kept  # the others were reused
    assert not [p for p in [*out.iterdir(), *(out / "runs").iterdir()] if p.name.endswith(".tmp")]

    with pytest.raises(ScenarioError) as err:
        compare(s, ["jsq", "power_of_d"], 2, out=out, progress=False)
    assert err.value.key == "--out" and "--force" in err.value.message
    forced = compare(s, ["jsq", "power_of_d"], 2, out=out, progress=False, force=True)
    assert set(forced.table["router"]) == {"jsq", "power_of_d"}
    assert len(list((out / "runs").glob("*.json"))) == 4  # the earlier command's runs went with it


def test_an_experiment_directory_refuses_a_directory_that_is_not_one(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ScenarioError):
        experiment_directory(tmp_path, {"command": "compare"})
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="kill -9 of a child process")
def test_kill_9_of_lbsim_compare_then_the_same_command_resumes(tmp_path):
    out = tmp_path / "cmp"
    args = [
        sys.executable, "-c", "from lbsim.cli import main; main()", "compare", TWO_REGIONS,
        "--routers", "jsq,random,power_of_d", "--seeds", "3",
        "--set", "simulation.horizon=150", "--set", "simulation.warmup=5", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while len(list((out / "runs").glob("*.json"))) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.communicate()
    finished = sorted((out / "runs").glob("*.json"))
    assert 2 <= len(finished) < 9, len(finished)
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}

    resumed = subprocess.run([*args, "--out", str(out)], capture_output=True, env=env, check=True)
    clean = subprocess.run([*args, "--out", str(tmp_path / "clean")], capture_output=True, env=env, check=True)
    assert resumed.stdout.decode().splitlines()[:-1] == clean.stdout.decode().splitlines()[:-1]
    assert {p.name: p.stat().st_mtime_ns for p in finished} == stamps  # reused, not run again
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]  # no temporary file survived
    for name in ("comparison.parquet", "runs.parquet"):
        a, b = pd.read_parquet(out / name), pd.read_parquet(tmp_path / "clean" / name)
        pd.testing.assert_frame_equal(a.drop(columns=["wall_seconds", "jobs_per_second"], errors="ignore"),
                                      b.drop(columns=["wall_seconds", "jobs_per_second"], errors="ignore"))  # fmt: skip


def test_scaling_refuses_another_command_and_resumes_its_own(tmp_path):
    s = lbsim.load_scenario(ROOT / "scenarios" / "fluid_burst.toml", ["simulation.horizon=10", "simulation.warmup=1"])
    out = tmp_path / "study"
    first = lbsim.scaling(s, scales=(1.0, 0.5), seeds=1, out=out, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    again = lbsim.scaling(s, scales=(1.0, 0.5), seeds=1, out=out, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    pd.testing.assert_frame_equal(first.runs, again.runs)
    with pytest.raises(ScenarioError):
        lbsim.scaling(s, scales=(1.0, 0.25), seeds=1, out=out, progress=False)
    lbsim.scaling(s, scales=(1.0, 0.25), seeds=1, out=out, progress=False, force=True)
    assert json.loads((out / "command.json").read_text())["scales"] == [1.0, 0.25]


# -- progress ------------------------------------------------------------------------------
def test_run_cost_is_the_expected_job_count():
    s = lbsim.load_scenario(TWO_REGIONS, ["simulation.horizon=100", "simulation.warmup=1", "simulation.rate_schedule=[[50, 0.5]]"])
    # 9 work/s for 50 s and 4.5 for 50 s, jobs of mean job_scale * size_mean = 0.1
    assert run_cost(s) == pytest.approx((9.0 * 50 + 4.5 * 50) / 0.1, rel=1e-12)


def test_progress_is_silent_off_a_terminal_and_weighted_on_one(capsys, monkeypatch):
    execute(abs, [("a", -1), ("b", -2)], lambda k, r: None, progress=True, weights={"a": 1.0, "b": 999.0})
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest

    import tqdm.auto

    seen = []
    real = tqdm.auto.tqdm

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Spy)
    execute(abs, [("b", -2)], lambda k, r: None, progress=True, total=2, weights={"a": 1.0, "b": 999.0})
    bar = seen[0]
    assert bar.total == 1000.0 and bar.n == 1000.0  # started at a's weight, b's landed
    capsys.readouterr()


# -- dask -----------------------------------------------------------------------------------
def test_an_unreachable_scheduler_is_one_line_within_seconds(tmp_path):
    pytest.importorskip("distributed")
    started = time.perf_counter()
    code, output = cli(
        "compare", TWO_REGIONS, "--routers", "jsq", "--seeds", "1", *SHORT,
        "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--quiet",
    )  # fmt: skip
    assert code == 2 and output.count("\n") == 1 and "cannot reach a dask scheduler" in output, output
    assert time.perf_counter() - started < 20


def test_workers_with_a_scheduler_is_rejected():
    code, output = cli(
        "compare", TWO_REGIONS, "--routers", "jsq", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9",
        "--workers", "2",
    )  # fmt: skip
    assert code == 2 and "error: workers:" in output and "--scheduler" in output


@pytest.mark.slow
def test_workers_of_another_version_are_detected(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from lbsim.experiments import map_ordered

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert map_ordered(abs, [-1], executor="dask", scheduler=client) == [1]
            monkeypatch.setattr(lbsim, "__version__", "99.0")  # the workers still run the real one
            with pytest.raises(ScenarioError) as err:
                map_ordered(abs, [-1], executor="dask", scheduler=client)
    assert "99.0" in err.value.message and "runs lbsim" in err.value.message


# -- Ctrl-C ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "when"), [("local", "a run done"), ("dask", 1.5), ("dask", 2.5), ("dask", "a run done")]
)
def test_ctrl_c_of_compare_with_workers_is_status_130_without_tracebacks(tmp_path, executor, when):
    """A pool's workers ignore SIGINT; a local dask cluster's are forked from a fork server that ignores it,
    also while dask is imported and the cluster starts (the first seconds): this process closes them."""
    args = [
        sys.executable, "-c", "from lbsim.cli import main; main()", "compare", TWO_REGIONS,
        "--routers", "jsq,random", "--seeds", "4", "--set", "simulation.horizon=2000", "--set", "simulation.warmup=5",
        "--quiet", "--workers", "2", "--executor", executor, "--out", str(tmp_path / "cmp"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    if when == "a run done":
        deadline = time.monotonic() + 120
        while not list((tmp_path / "cmp" / "runs").glob("*.json")) and child.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    else:
        time.sleep(float(when))
    os.killpg(child.pid, signal.SIGINT)
    started = time.monotonic()
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr.decode() and stderr.decode().strip().splitlines()[-1] == "error: aborted"
    assert time.monotonic() - started < 5
    np.testing.assert_equal(len(list((tmp_path / "cmp" / "runs").glob(".*"))), 0)
