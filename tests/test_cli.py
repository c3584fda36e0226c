"""The ``lbsim`` command line, run as a user runs it: the installed console script in a subprocess.

Each test starts a fresh interpreter (about a second of imports, most of the
cost of this module); ``pytest -n 2`` spreads them over the cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lbsim
from lbsim.routers import ROUTERS as _REGISTRY

ROUTERS = sorted(name for name in _REGISTRY if not name.startswith("_test"))  # not test_invariants' spy

ROOT = Path(__file__).parent.parent
TWO_REGIONS = str(ROOT / "scenarios" / "two_regions.toml")

JOB_COLUMNS = [
    "job_id", "frontend", "backend", "size", "t_arrival", "t_backend_arrival",
    "t_backend_done", "t_response", "latency", "sojourn",
]  # fmt: skip
SUMMARY_KEYS = [
    "router", "seed", "jobs_arrived", "jobs_completed", "jobs_in_system_end", "mean_latency",
    "p50", "p90", "p99", "p999", "throughput", "wall_seconds", "jobs_per_second",
]  # fmt: skip
QUIET_RUN = ["--horizon", "50", "--set", "simulation.warmup=5", "--quiet"]


#: the installed console script (beside this interpreter when its bin/ is not on PATH)
LBSIM = shutil.which("lbsim") or str(Path(sys.executable).with_name("lbsim"))


# name: (arguments, the key the one-line error must start with, or None, and a text it must contain)
BAD = {
    "unknown key (--set)": (["run", TWO_REGIONS, "--set", "simulation.horizn=5"], "simulation.horizn", "'horizon'"),
    "unknown key (file)": (["run", "{typo_file}"], "simulation.horizn", "'horizon'"),
    "negative rate": (["run", TWO_REGIONS, "--set", "frontends.0.rate=-1"], "frontends[0].rate", "-1"),
    "warmup after horizon": (["run", TWO_REGIONS, "--horizon", "100"], "simulation.warmup", "horizon"),
    "bad delay shape": (
        ["run", TWO_REGIONS, "--set", "network.delay=[[0.1, 0.2]]"],
        "network.delay",
        "one row per frontend",
    ),
    "no usable backend": (
        ["run", TWO_REGIONS, "--set", "network.connect=[[true, true, true, true], [false, false, false, false]]"],
        "network.connect[1]",
        "eu-west",
    ),
    "unknown router (--router)": (["run", TWO_REGIONS, "--router", "nope"], "--router", "'nope'"),
    "unknown router (--set)": (["run", TWO_REGIONS, "--set", 'router.name="nope"'], "router.name", "'nope'"),
    "unknown router parameter": (["run", TWO_REGIONS, "--set", "router.step=0.1"], "router.step", "jsq"),
    "wrong router weights": (
        ["run", TWO_REGIONS, "--router", "weighted", "--set", "router.weights=[1.0, 2.0]"],
        "router.weights",
        "4",
    ),
    "missing file": (["run", "{missing_file}"], None, "missing.toml"),
    "bad --set (no '=')": (["run", TWO_REGIONS, "--set", "frontends.0.rate"], "frontends.0.rate", "key.path=value"),
    "bad --set (no element)": (["run", TWO_REGIONS, "--set", "frontends.7.rate=1"], "frontends.7", "no element"),
    "unknown option": (["run", TWO_REGIONS, "--bogus"], None, "--bogus"),
    "validate: unknown key": (["validate", TWO_REGIONS, "--set", "jobs.sizes=2"], "jobs.sizes", "'sizes'"),
}


def _run(args: list[str], cwd: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    argv = [LBSIM, *args, *(["--out", str(out)] if out is not None else [])]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    """The run of the issue: two_regions, 50 s, warm-up 5 s, quiet."""
    tmp = tmp_path_factory.mktemp("cli")
    return _run(["run", TWO_REGIONS, *QUIET_RUN], tmp, tmp / "quiet"), tmp / "quiet"


# -- lbsim run ---------------------------------------------------------------------------
def test_run_writes_the_documented_files(quiet_run):
    proc, out = quiet_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"jobs.parquet", "timeseries.parquet", "summary.json"} <= names
    assert not any(n.startswith(".") for n in names), "temporary files left behind"

    jobs = pd.read_parquet(out / "jobs.parquet")
    assert set(JOB_COLUMNS) <= set(jobs.columns)
    assert len(jobs) > 100
    for col in ("job_id", "frontend", "backend"):
        assert pd.api.types.is_integer_dtype(jobs[col]), col
    assert jobs["t_arrival"].max() < 50.0  # (the drain after the horizon serves the jobs still in the system)
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert {"t", "backend", "load", "jobs"} <= set(ts.columns)
    assert sorted(ts["backend"].unique()) == [0, 1, 2, 3]
    np.testing.assert_allclose(np.diff(np.unique(ts["t"])), 1.0)  # sample_interval

    summary = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["router"] == "jsq" and summary["seed"] == 1
    assert summary["jobs_completed"] + summary["jobs_drained"] == len(jobs) == summary["jobs_arrived"]
    assert summary["jobs_arrived"] == summary["jobs_completed"] + summary["jobs_in_system_end"]
    assert summary["status"] == "complete" and summary["jobs_undrained"] == 0
    measured = jobs[jobs["t_arrival"] >= 5.0]
    assert summary["mean_latency"] == pytest.approx(measured["latency"].mean(), rel=1e-12)
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["p999"]


def test_run_matches_the_python_api(quiet_run):
    """The CLI and lbsim.simulate are the same operation: identical jobs for the same scenario and seed."""
    _, out = quiet_run
    s = lbsim.load_scenario(TWO_REGIONS, ["simulation.horizon=50", "simulation.warmup=5"])
    expected = lbsim.simulate(s).jobs
    pd.testing.assert_frame_equal(pd.read_parquet(out / "jobs.parquet"), expected, check_exact=True)


def test_run_flags_and_routing_file(tmp_path):
    out = tmp_path / "loud"
    args = ["run", TWO_REGIONS, "--horizon", "40", "--set", "simulation.warmup=4", "--router", "weighted"]
    proc = _run([*args, "--seed", "7", "--job-scale", "0.2"], tmp_path, out)
    assert proc.returncode == 0, proc.stderr
    for words in ("router", "weighted", "mean latency", "p99", "throughput"):
        assert words in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["router"], summary["seed"], summary["job_scale"], summary["horizon"]) == ("weighted", 7, 0.2, 40.0)
    routing = pd.read_parquet(out / "routing.parquet")
    assert {"t", "frontend", "backend", "prob"} <= set(routing.columns)
    np.testing.assert_allclose(routing.groupby(["t", "frontend"])["prob"].sum(), 1.0)
    assert {p.name for p in out.iterdir()} >= {"jobs.parquet", "timeseries.parquet", "routing.parquet", "summary.json"}


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_exits_2_with_one_line(tmp_path, name):
    args, key, text = BAD[name]
    typo = tmp_path / "typo.toml"
    typo.write_text(Path(TWO_REGIONS).read_text().replace("horizon = 2000.0", "horizn = 2000.0"))
    subs = {"{typo_file}": str(typo), "{missing_file}": str(tmp_path / "missing.toml")}
    args = [subs.get(a, a) for a in args]
    out = tmp_path / "out" if args[0] == "run" else None
    proc = _run(args, tmp_path, out)
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    if key is not None:
        assert lines[0].startswith(f"error: {key}: "), f"{lines[0]!r} does not name {key!r}"
    assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), f"wrote {sorted(p.name for p in out.iterdir())}"


# -- other commands ----------------------------------------------------------------------
def test_validate(tmp_path):
    proc = _run(["validate", TWO_REGIONS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and proc.stderr == ""


def test_validate_shows_the_capacity_warning_as_one_line(tmp_path):
    proc = _run(["validate", TWO_REGIONS, "--set", "frontends.0.rate=50"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "capacity" in lines[0]


def test_routers_lists_every_registered_router(tmp_path):
    proc = _run(["routers"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split(":")[0] for line in proc.stdout.splitlines() if line and not line.startswith(" ")}
    assert listed == set(ROUTERS) >= {"random", "round_robin", "jsq", "power_of_d", "weighted"}
    assert "    d (default 2, >= 1)" in proc.stdout  # default, then the bounds from the Params field


def test_routers_json(tmp_path):
    proc = _run(["routers", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert [row["router"] for row in table] == ROUTERS
    by_name = {row["router"]: row for row in table}
    assert all(row["description"] for row in table)
    (d,) = [p for p in by_name["power_of_d"]["params"] if p["name"] == "d"]
    assert d["default"] == 2 and d["description"]


def test_python_dash_m_lbsim_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "lbsim", "validate", "scenarios/two_regions.toml"], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok (2 frontends, 4 backends" in proc.stdout, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "lbsim", "run", "scenarios/nope.toml", "--out", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: scenarios/nope.toml"), proc.stderr
