"""Comparisons and sweeps (lbsim.experiments): resumability, executors, validation, common random numbers.

Runs are tiny (tens of simulated seconds at a few thousand jobs) so the
whole file stays fast; exactness is checked where it exists: a resumed
sweep, or one run on another executor, must give the same table as an
uninterrupted one, value for value.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import descendants

import lbsim
from lbsim.engine.result import TIMING_FIELDS
from lbsim.errors import ScenarioError
from lbsim.experiments import (
    compare,
    config_key,
    expand,
    format_comparison,
    load_sweep,
    parse_router,
    sweep,
    toml_value,
)
from lbsim.scenario import parse_value

ROOT = Path(__file__).resolve().parent.parent

# Two frontends, three saturating backends, about 65% of capacity: ~2000 jobs in 60 s.
TINY_SCENARIO = """
name = "tiny"

[simulation]
horizon = 60.0
warmup = 10.0
seed = 1
job_scale = 0.1

[[frontends]]
rate = 2.0

[[frontends]]
rate = 1.5

[[backends]]
service = { kind = "saturating", c = 2.5, k = 1.0 }

[[backends]]
service = { kind = "saturating", c = 2.0, k = 1.0 }

[[backends]]
service = { kind = "saturating", c = 1.5, k = 1.0 }

[network]
latency = [[0.005, 0.02, 0.04], [0.04, 0.02, 0.005]]

[router]
name = "jsq"
"""

# 3 routers x 2 rates x 3 seeds = 18 runs
TINY_SWEEP = """
scenario = "tiny.toml"
routers = ["jsq", "power_of_d", "weighted"]
seeds = 3

[set]
"simulation.warmup" = 5.0

[grid]
"frontends.0.rate" = [1.5, 2.5]
"""


def write_sweep(directory: Path, sweep_text: str = TINY_SWEEP) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tiny.toml").write_text(TINY_SCENARIO)
    path = directory / "sweep.toml"
    path.write_text(sweep_text)
    return path


def run_files(out: Path) -> list[Path]:
    return sorted((out / "runs").glob("*.json"))


@pytest.fixture(scope="module")
def clean_sweep(tmp_path_factory):
    """The tiny sweep run once, uninterrupted, in this process: the reference table."""
    directory = tmp_path_factory.mktemp("clean")
    spec = write_sweep(directory)
    results = sweep(spec, directory / "out", progress=False)
    return spec, results


# -- router specs and values ----------------------------------------------------------------
def test_router_specs():
    assert parse_router("jsq").params == {}
    choice = parse_router("weighted:split=optimal")
    assert (choice.label, choice.name, dict(choice.params)) == ("weighted:split=optimal", "weighted", {"split": "optimal"})
    choice = parse_router("dgdlb:step=0.1, interval=0.5")
    assert dict(choice.params) == {"step": 0.1, "interval": 0.5}
    choice = parse_router({"name": "weighted", "weights": [1.0, 2.0, 1.0]})
    assert choice.label == "weighted:weights=[1.0, 2.0, 1.0]" and choice.params["weights"] == [1.0, 2.0, 1.0]
    assert parse_router("weighted:weights=[1, 2],split=given").params == {"weights": [1, 2], "split": "given"}
    with pytest.raises(ScenarioError) as err:
        parse_router("jsqq", key="routers[3]")
    assert err.value.key == "routers[3]" and "jsq" in err.value.message
    with pytest.raises(ScenarioError) as err:
        parse_router("dgdlb:stepp=0.1")
    assert err.value.key == "router.stepp"


@pytest.mark.parametrize(
    "value",
    [1, -3, 0.1, 1e-300, 2.5e20, math.inf, True, "ps", 'a "quoted" \\ string', [1.0, 2], [[0.0, 0.5]], {"kind": "linear", "r": 2.0}],
)
def test_override_values_round_trip(value):
    assert parse_value(toml_value(value)) == value


# -- expansion and validation ---------------------------------------------------------------
def test_expansion_order_keys_and_router_parameters(tmp_path):
    spec = write_sweep(
        tmp_path,
        textwrap.dedent("""
        scenario = "tiny.toml"
        routers = ["jsq", "dgdlb"]
        seeds = [3, 7]
        job_scales = [0.1, 0.05]
        [grid]
        "router.step" = [0.05, 0.1]
        network.telemetry = ["delayed", "instant"]
        """),
    )
    runs = expand(load_sweep(spec))
    # jsq has no step: its runs are the same whatever the step, and are run once
    assert len(runs) == 2 * 2 * (1 + 2) * 2  # telemetry x job scale x (jsq + dgdlb x step) x seed
    assert len({r.key for r in runs}) == len(runs)
    assert all(config_key(r.config) == r.key for r in runs)
    first = runs[0].params
    assert list(first) == ["router.step", "network.telemetry", "job_scale", "router", "seed"]
    assert first == {"router.step": None, "network.telemetry": "delayed", "job_scale": 0.1, "router": "jsq", "seed": 3}
    assert [r.params["seed"] for r in runs[:4]] == [3, 7, 3, 7]
    dgdlb = [r for r in runs if r.params["router"] == "dgdlb"]
    assert {r.config["router"]["step"] for r in dgdlb} == {0.05, 0.1}
    assert all("step" not in r.config["router"] for r in runs if r.params["router"] == "jsq")
    assert all(r.config["simulation"]["seed"] == r.params["seed"] for r in runs)
    # the configuration is a valid scenario as it stands: a run needs nothing else
    assert all(lbsim.Scenario.from_dict(r.config).to_dict() == r.config for r in runs)
    # seeds = N counts from the scenario's seed: seeds = 1 is `lbsim run`
    assert load_sweep({"scenario": str(tmp_path / "tiny.toml"), "seeds": 3}).seeds == [1, 2, 3]


@pytest.mark.parametrize(
    "grid, key",
    [
        ('"network.latncy" = [0.01, 0.02]', "network.latncy"),
        ('"frontends.0.rate" = [1.0, -1.0]', "frontends[0].rate"),  # only the second value is invalid
        ('"frontends.5.rate" = [1.0]', "frontends.5"),
        ('"router.stpe" = [0.1]', "router.stpe"),  # a parameter of none of the routers
        ('"simulation.seed" = [1, 2]', "grid.simulation.seed"),
    ],
)
def test_invalid_key_fails_before_any_run(tmp_path, monkeypatch, grid, key):
    from lbsim.experiments import sweeps

    def no_run(config):
        raise AssertionError("a run started")

    monkeypatch.setattr(sweeps, "run_config", no_run)
    spec = write_sweep(tmp_path, f'scenario = "tiny.toml"\nrouters = ["jsq", "dgdlb"]\nseeds = 2\n[grid]\n{grid}\n')
    with pytest.raises(ScenarioError) as err:
        sweep(spec, tmp_path / "out", progress=False)
    assert err.value.key == key
    assert not run_files(tmp_path / "out")


def test_router_errors_found_up_front(tmp_path):
    # weights of the wrong length are only seen when the router is built: still before any run
    spec = write_sweep(
        tmp_path,
        'scenario = "tiny.toml"\nrouters = ["jsq", "weighted:weights=[1.0, 2.0]"]\n',
    )
    with pytest.raises(ScenarioError) as err:
        sweep(spec, tmp_path / "out", progress=False)
    assert err.value.key == "router.weights"
    assert not run_files(tmp_path / "out")


def test_sweep_file_errors(tmp_path):
    write_sweep(tmp_path)
    scenario = str(tmp_path / "tiny.toml")
    for spec, key in [
        ({"scenario": scenario, "rotuers": ["jsq"]}, "rotuers"),
        ({"routers": ["jsq"]}, "scenario"),
        ({"scenario": scenario, "seeds": 0}, "seeds"),
        ({"scenario": scenario, "seeds": [1, 1]}, "seeds"),
        ({"scenario": scenario, "routers": ["jsq", "jsq"]}, "routers"),
        ({"scenario": scenario, "grid": {"frontends.0.rate": 2.0}}, "grid.frontends.0.rate"),
        ({"scenario": scenario, "job_scales": [0.1, -1]}, "job_scales"),
        ({"scenario": str(tmp_path / "missing.toml")}, str(tmp_path / "missing.toml")),
    ]:
        with pytest.raises(ScenarioError) as err:
            load_sweep(spec)
        assert err.value.key == key, spec


# -- sweeps ---------------------------------------------------------------------------------
def test_sweep_outputs(clean_sweep):
    spec, results = clean_sweep
    out = spec.parent / "out"
    assert len(results) == 18 and results["key"].is_unique
    assert list(results.columns[:5]) == ["key", "frontends.0.rate", "job_scale", "router", "seed"]
    assert not set(TIMING_FIELDS) & set(results.columns)
    assert results.equals(pd.read_parquet(out / "results.parquet"))
    timings = pd.read_parquet(out / "timings.parquet")
    assert list(timings["key"]) == list(results["key"]) and (timings["wall_seconds"] > 0).all()
    assert {p.stem for p in run_files(out)} == set(results["key"])
    record = json.loads((out / "runs" / f"{results['key'][0]}.json").read_text())
    assert record["params"] == {"frontends.0.rate": 1.5, "job_scale": 0.1, "router": "jsq", "seed": 1}
    # a run file holds all it takes to run it again, and that gives the same summary
    again = lbsim.simulate(lbsim.Scenario.from_dict(record["config"])).summary()
    assert {k: v for k, v in again.items() if k not in TIMING_FIELDS} == {
        k: v for k, v in record["summary"].items() if k not in TIMING_FIELDS
    }
    # the load grid reached the scenario
    assert results.groupby("frontends.0.rate")["offered_load"].first().tolist() == [3.0, 4.0]


def test_rerun_skips_completed_runs(clean_sweep, monkeypatch):
    from lbsim.experiments import sweeps

    spec, results = clean_sweep

    def no_run(config):
        raise AssertionError("a completed run ran again")

    monkeypatch.setattr(sweeps, "run_config", no_run)
    assert sweep(spec, spec.parent / "out", progress=False).equals(results)


def test_resume_after_sigkill(clean_sweep, tmp_path):
    spec, clean = clean_sweep
    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    code = f"from lbsim.experiments import sweep; sweep({str(spec)!r}, {str(out)!r}, progress=False)"
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(run_files(out)) < 4 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
    done = run_files(out)
    assert 4 <= len(done) < len(clean), "the sweep was not killed mid-way"
    assert not (out / "results.parquet").exists()
    # what a kill during a write leaves behind: a partial temporary file (of a dead process)
    missing = next(k for k in clean["key"] if not (out / "runs" / f"{k}.json").exists())
    partial = out / "runs" / f".{missing}.json.{child.pid}.tmp"
    partial.write_text('{"key": "' + missing + '", "summ')

    resumed = sweep(spec, out, progress=False)
    assert resumed.equals(clean)
    assert pd.read_parquet(out / "results.parquet").equals(clean)
    assert [p.stem for p in run_files(out)] == sorted(clean["key"])
    assert not list((out / "runs").glob(".*"))




@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_resume_after_sigkill_of_a_process_pool(clean_sweep, tmp_path):
    """Killing a sweep with a pool of workers leaves no process behind, and it resumes exactly."""
    spec, clean = clean_sweep
    spec = write_sweep(tmp_path)
    out = tmp_path / "out"
    script = tmp_path / "run.py"  # a file, not -c: pool workers re-import the main module
    script.write_text(
        "from lbsim.experiments import sweep\n"
        "if __name__ == '__main__':\n"
        f"    sweep({str(spec)!r}, {str(out)!r}, workers=2, progress=False)\n"
    )
    child = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 120
    while len(run_files(out)) < 4 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = descendants(child.pid)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert workers and len(run_files(out)) < len(clean), "the sweep was not killed mid-way"
    deadline = time.monotonic() + 30
    while (left := {p for p in workers if _running(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"
    assert sweep(spec, out, progress=False).equals(clean)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def first_seed(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["seed"] == 1].reset_index(drop=True)


@pytest.mark.parametrize("executor", ["dask", "local"])
def test_executors_give_identical_tables(clean_sweep, tmp_path, executor):
    """Two worker processes (a dask LocalCluster, or a process pool) against the in-process reference.

    The sweep is the reference's restricted to its first seed: a run's key is
    its configuration, so its rows must be the reference's rows, value for value.
    """
    if executor == "dask":
        pytest.importorskip("distributed")
    spec, clean = clean_sweep
    spec = write_sweep(tmp_path, TINY_SWEEP.replace("seeds = 3", "seeds = 1"))
    results = sweep(spec, tmp_path / "out", workers=2, executor=executor, progress=False)
    assert results.equals(first_seed(clean))


def test_executor_arguments(tmp_path):
    spec = write_sweep(tmp_path)
    for kwargs, key in [({"workers": 0}, "workers"), ({"executor": "ray"}, "executor"), ({"scheduler": "tcp://x:1"}, "scheduler")]:
        with pytest.raises(ScenarioError) as err:
            sweep(spec, tmp_path / "out", progress=False, **kwargs)
        assert err.value.key == key


# -- comparisons ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    scenario = lbsim.load_scenario(
        ROOT / "scenarios" / "two_regions.toml", ["simulation.horizon=100", "simulation.warmup=20"]
    )
    out = tmp_path_factory.mktemp("compare")
    routers = ["random", "weighted:split=optimal", "jsq"]
    return scenario, routers, compare(scenario, routers, seeds=3, out=out, progress=False)


def test_comparison_table(comparison):
    scenario, routers, result = comparison
    table = result.table
    quantiles = [f"{q}{s}" for q in ("p50", "p90", "p99", "p999") for s in ("", "_low", "_high")]
    ratio = ["ratio_to_optimum", "ratio_to_optimum_low", "ratio_to_optimum_high"]
    overload = ["served", "served_low", "served_high", "unbounded"]
    assert list(table.columns) == [
        "router", "seeds", "jobs", "mean", "mean_low", "mean_high", *quantiles, *ratio, *overload
    ]  # fmt: skip
    assert (table["unbounded"] == 0).all()
    assert sorted(table["router"]) == sorted(routers)
    assert table["mean"].is_monotonic_increasing
    assert (table["seeds"] == 3).all()
    assert (table["mean_low"] < table["mean"]).all() and (table["mean"] < table["mean_high"]).all()
    assert (table["p50"] < table["p90"]).all() and (table["p99"] < table["p999"]).all()
    assert table["jobs"].tolist() == result.jobs.groupby("router").size()[table["router"]].tolist()
    # the mean is the mean over seeds of each run's own mean latency
    per_seed = result.runs.groupby("router")["mean_latency"].mean()
    assert np.allclose(table.set_index("router")["mean"], per_seed[table["router"]], rtol=1e-12)
    assert len(result.runs) == 9 and set(result.runs["seed"]) == {1, 2, 3}


def test_comparison_against_the_optimum(comparison):
    scenario, _, result = comparison
    from lbsim.optimum import optimum  # (lbsim.optimum is shadowed by the submodule once it is imported)

    assert result.optimum == pytest.approx(optimum(scenario).mean_latency)
    table = result.table.set_index("router")
    # no router beats the centralized optimum (within its interval), and its split comes close
    assert (table["ratio_to_optimum_high"] >= 1.0).all(), table["ratio_to_optimum"]
    assert table.loc["weighted:split=optimal", "ratio_to_optimum_low"] < 1.1
    assert table.loc["random", "ratio_to_optimum"] > table.loc["weighted:split=optimal", "ratio_to_optimum_high"]


def test_comparison_uses_common_random_numbers(comparison):
    _, routers, result = comparison
    jobs = result.jobs
    for seed in (1, 2, 3):
        reference = jobs[(jobs["seed"] == seed) & (jobs["router"] == routers[0])].set_index("job_id")
        for router in routers[1:]:
            other = jobs[(jobs["seed"] == seed) & (jobs["router"] == router)].set_index("job_id")
            common = reference.index.intersection(other.index)
            assert len(common) > 0.95 * min(len(reference), len(other))
            for column in ("frontend", "t_arrival", "size"):
                assert np.array_equal(reference.loc[common, column], other.loc[common, column]), (router, column)
            # the same jobs, routed differently
            assert not np.array_equal(reference.loc[common, "backend"], other.loc[common, "backend"])
    # and different seeds are different jobs
    first = jobs[(jobs["router"] == routers[0])].groupby("seed")["t_arrival"].first()
    assert first.is_unique


def test_comparison_files_and_text(comparison):
    _, routers, result = comparison
    out = result.out
    assert pd.read_parquet(out / "comparison.parquet").equals(result.table)
    assert np.allclose(pd.read_csv(out / "comparison.csv")["mean"], result.table["mean"], rtol=1e-12)
    assert pd.read_parquet(out / "runs.parquet").equals(result.runs)
    assert (out / "latency_ccdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = str(result).splitlines()
    assert len(lines) == 2 + len(routers) + 1
    assert len({len(line) for line in lines[:-1]}) == 1  # aligned
    for line, router in zip(lines[2:], result.table["router"]):
        assert line.startswith(router)
    assert "optimum mean latency" in lines[-1]


def test_comparison_without_optimum(tmp_path):
    write_sweep(tmp_path)
    scenario = lbsim.load_scenario(
        tmp_path / "tiny.toml", ["simulation.horizon=30", "simulation.rate_schedule=[[0.0, 1.0], [15.0, 1.2]]"]
    )
    result = compare(scenario, ["jsq", "random"], seeds=[5, 9], progress=False)
    assert result.table["ratio_to_optimum"].isna().all() and math.isnan(result.optimum)
    assert "no optimum" in format_comparison(result.table, result.optimum)
    assert set(result.runs["seed"]) == {5, 9}


def test_example_sweep_file_expands():
    runs = expand(load_sweep(ROOT / "scenarios" / "sweep_example.toml"))
    assert len(runs) >= 200
    assert {r.params["router"] for r in runs} >= {"jsq", "weighted:split=optimal"}
