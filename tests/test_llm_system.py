"""LLM engines in the whole system: open mode against queueing theory, saturated mode, scenario keys, bad input.

The engine alone is tested in test_llm_engine.py; here it runs as the
backend model ``llm`` behind frontends, the network and the routers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import BATCHES, Z, batch_estimate

import lbsim
from lbsim.cli import main
from lbsim.engine import Simulation
from lbsim.errors import ScenarioError
from lbsim.routers.base import ROUTERS, Router, register


def _engine(**params) -> dict:
    table = {"model": "llm", "workers": 1, "slots": 1, "step_time": {"kind": "barrier", "base": 0.01, "per_token": 0.0}}
    table.update(params)
    return table


def _open(backends, rates=(1.0,), tokens=None, **simulation) -> lbsim.Scenario:
    tokens = tokens or {
        "kind": "independent",
        "prompt": {"size": "deterministic", "mean": 10},
        "output": {"size": "deterministic", "mean": 5},
    }
    return lbsim.Scenario.from_dict(
        {
            "simulation": {"horizon": 200.0, "warmup": 20.0, **simulation},
            "jobs": {"tokens": tokens},
            "frontends": [{"rate": r} for r in rates],
            "backends": backends,
            "router": {"name": "jsq"},
        }
    )


@pytest.mark.slow
def test_one_rank_one_slot_and_a_constant_step_is_md1():
    """G = B = 1, every step 10 ms, 5 output tokens: FIFO with deterministic service S = 50 ms (M/D/1).

    Pollaczek-Khinchine: mean sojourn S + rho S / (2 (1 - rho)); at rho = 0.7, 0.10833 s.
    """
    S, rho = 0.05, 0.7
    # rate in output tokens per second: rho / S jobs per second of 5 tokens each
    s = _open([_engine()], rates=(5 * rho / S,), horizon=6000.0, warmup=100.0)
    jobs = lbsim.simulate(s, seed=3).jobs
    sojourn = (jobs["t_backend_done"] - jobs["t_backend_arrival"]).to_numpy()
    # every service is exactly 5 steps: the gaps between an admission and the finish
    np.testing.assert_allclose(jobs["t_backend_done"] - jobs["t_admit"], S, rtol=1e-9)
    mean, se = batch_estimate(jobs["t_arrival"].to_numpy(), sojourn, 100.0, 6000.0)
    theory = S + rho * S / (2 * (1 - rho))
    assert abs(mean - theory) < Z * se, (mean, theory, se)
    assert se < 0.02 * theory  # the run is long enough for the check to mean something
    assert BATCHES >= 20


def test_jobs_carry_their_tokens_and_the_llm_columns():
    s = _open([_engine(workers=2, slots=2), _engine(workers=2, slots=2)], rates=(60.0,), horizon=60.0, warmup=5.0)
    result = lbsim.simulate(s, seed=2)
    jobs = result.jobs
    assert (jobs["prompt"] == 10).all() and (jobs["output"] == 5).all()
    np.testing.assert_array_equal(jobs["size"], 5.0)  # a job's size is its output tokens (job_scale 1)
    assert jobs["rank"].between(0, 1).all()
    assert (jobs["t_backend_arrival"] <= jobs["t_admit"]).all() and (jobs["t_admit"] < jobs["t_first_token"]).all()
    # a constant 10 ms step: 5 tokens take 5 steps, the first one ends the first step after admission
    np.testing.assert_allclose(jobs["t_first_token"] - jobs["t_admit"], 0.01, rtol=1e-9)
    np.testing.assert_allclose(jobs["tpot"], 0.01, rtol=1e-9)
    np.testing.assert_allclose(jobs["ttft"], jobs["t_first_token"] - jobs["t_arrival"], atol=1e-12)  # no delay
    summary = result.summary()
    for key in ("ttft_p99", "tpot_p99", "barrier_idle", "energy_per_token", "pool_wait_p99", "preemptions"):
        assert key in summary
    steps = result.steps
    assert set(steps["backend"]) == {0, 1}
    assert all((g["tokens_total"].diff().dropna() >= 0).all() for _, g in steps.groupby("backend"))


def test_tokens_conservation_in_open_mode():
    """Tokens emitted = outputs of the finished requests + tokens of those still decoding (no preemption here)."""
    s = _open([_engine(workers=2, slots=3)], rates=(80.0,), horizon=30.0, warmup=1.0)
    sim = Simulation(s, seed=4)
    result = sim.run()
    engine = sim.backends[0].engine
    finished = sum(r.output for r in sim.backends[0].requests if r.t_done is not None)
    decoding = sum(r.output - (r._finish_step - engine.step) for r in sim.backends[0].requests
                   if r.t_done is None and r.t_admit is not None)  # fmt: skip
    assert engine.tokens_lost == 0
    assert engine.tokens_emitted == finished + decoding
    c = result.counts
    assert c["jobs_arrived"] == c["jobs_completed"] + c["jobs_in_system_end"]


def test_same_seed_same_outputs_in_both_modes(tmp_path):
    s = _open([_engine(workers=2, slots=2)], rates=(50.0,), horizon=40.0, warmup=5.0)
    a, b = lbsim.simulate(s, seed=5), lbsim.simulate(s, seed=5)
    assert a.jobs.equals(b.jobs) and a.steps.equals(b.steps)
    sat = lbsim.load_scenario("scenarios/bfio_saturated.toml", ["jobs.count=300"])
    x, y = lbsim.simulate(sat).summary(), lbsim.simulate(sat).summary()
    x.pop("wall_seconds"), y.pop("wall_seconds")
    assert x == y


class EngineSpy(Router):
    """Records, at every decision, the job count and the engine state the view shows."""

    name = "_test_engine_spy"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.seen: list[tuple[int, object]] = []

    def route(self, frontend, job, view):
        for j in self.neighbours[frontend]:
            self.seen.append((view.jobs(frontend, j), view.engine_state(frontend, j)))
        return self.choice(self.neighbours[frontend])


@pytest.mark.parametrize("telemetry", ["delayed", "periodic", "instant"])
def test_engine_state_is_as_stale_as_the_job_count(telemetry):
    """Two histories, one clock: the jobs a view shows are the pool plus the occupied slots it shows."""
    register(EngineSpy)
    try:
        data = _open([_engine(workers=2, slots=2)] * 2, rates=(300.0,), horizon=20.0, warmup=1.0).to_dict()
        data["network"] = {"delay": [[0.013, 0.27]], "telemetry": telemetry, "period": 0.3}
        data["router"] = {"name": EngineSpy.name}
        sim = Simulation(lbsim.Scenario.from_dict(data), seed=1)
        sim.run()
        seen = sim.router.seen
        assert len(seen) > 1000
        for jobs, state in seen:
            assert jobs == state.pool_length + (4 - state.free_slots)
        assert any(state.pool_length > 0 for _, state in seen)
    finally:
        ROUTERS.pop(EngineSpy.name, None)


def test_a_trace_replaces_the_poisson_stream_and_rate_schedules_multiply(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("time,prompt,output\n0.5,10,3\n1.25,20,4\n7.0,30,2\n")
    path = tmp_path / "s.toml"
    path.write_text(
        """
[simulation]
horizon = 20.0
warmup = 0.0
[jobs]
tokens = { kind = "independent", prompt = { size = "deterministic", mean = 10 }, output = { size = "deterministic", mean = 5 } }
[[frontends]]
trace = "trace.csv"
[[frontends]]
rate = 50.0
rate_schedule = [[0.0, 1.0], [10.0, 0.0]]
[[backends]]
model = "llm"
workers = 2
slots = 4
step_time = { kind = "barrier", base = 0.01, per_token = 0.0 }
"""
    )
    s = lbsim.load_scenario(path)
    jobs = lbsim.simulate(s, router="round_robin").jobs
    traced = jobs[jobs["frontend"] == 0]
    np.testing.assert_array_equal(traced["t_arrival"], [0.5, 1.25, 7.0])
    np.testing.assert_array_equal(traced["prompt"], [10, 20, 30])
    np.testing.assert_array_equal(traced["output"], [3, 4, 2])
    other = jobs[jobs["frontend"] == 1]
    assert len(other) > 50 and (other["t_arrival"] < 10.0).all()  # the schedule stops it at t = 10


BAD = {
    "two engines in saturated mode": (
        ["--set", 'backends=[{ model = "llm", workers = 1, slots = 1 }, { model = "llm", workers = 1, slots = 1 }]'],
        "simulation.mode",
    ),
    "slots 0": (["--set", "backends.0.slots=0"], "backends[0].slots"),
    "admission a dispatch cannot run": (["--set", 'backends.0.admission={ name = "vllm_dp" }'], "backends[0].admission.name"),
    "unknown admission": (["--set", 'backends.0.admission={ name = "bfoi" }'], "backends[0].admission.name"),
    "bfio horizon below 0": (["--set", 'backends.0.admission={ name = "bfio", horizon = -1 }'], "backends[0].admission.horizon"),
    "bfio_exact too large": (
        ["--set", 'backends.0.admission={ name = "bfio_exact", size_limit = 10 }'],
        "backends[0].admission.size_limit",
    ),
    "no count": (["--set", "jobs.count=0"], "jobs.count"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_llm_input_is_one_line_naming_the_key(case, tmp_path):
    args, key = BAD[case]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "scenarios/bfio_saturated.toml", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {key}"), result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_pairs_file_with_a_missing_column_or_a_negative_length_names_the_line(tmp_path):
    for text, where in (("prompt\n10\n", "output"), ("prompt,output\n10,5\n3,-1\n", "line 3")):
        (tmp_path / "p.csv").write_text(text)
        with pytest.raises(ScenarioError) as err:
            lbsim.Scenario.from_dict(
                {
                    "simulation": {"mode": "saturated"},
                    "jobs": {"tokens": {"kind": "pairs", "file": str(tmp_path / "p.csv")}},
                    "backends": [_engine()],
                }
            )
        assert err.value.key.startswith("jobs.tokens") and where in str(err.value), str(err.value)


def test_saturated_run_writes_the_protocol_figures(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "scenarios/bfio_saturated.toml", "--set", "jobs.count=400", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    first = list(summary)[:7]
    assert first == ["steps_window", "mean_imbalance", "mean_idle_rate", "throughput_tokens", "energy", "mean_tpot", "makespan"]
    assert summary["jobs_completed"] == 400
    assert (out / "steps.parquet").exists() and (out / "jobs.parquet").exists()


def test_an_llm_backend_needs_tokens_and_the_optimum_uses_its_equivalent_rate():
    with pytest.raises(ScenarioError) as err:
        lbsim.Scenario.from_dict({"frontends": [{"rate": 1.0}], "backends": [_engine()]})
    assert err.value.key == "jobs.tokens"
    step = {"kind": "barrier", "base": 0.01, "per_token": 1e-5}
    s = _open([_engine(workers=4, slots=8, step_time=step), _engine(workers=2, slots=8, step_time=step)], rates=(100.0,))
    opt = lbsim.optimum(s)
    assert opt.load.shape == (2,) and np.isclose(opt.routing.sum(), 1.0)
    assert opt.routing[0, 0] > opt.routing[0, 1]  # the engine of more ranks takes more
