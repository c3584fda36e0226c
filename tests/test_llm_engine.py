"""The llm engine: the step order on a hand-worked example, conservation, KV capacity, FIFO limit, determinism."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lbsim.llm import (
    LLMEngine,
    LLMParams,
    LLMRequest,
    equivalent_rate,
    make_tokens,
    run_saturated,
)
from lbsim.llm.steps import StepLog

CONSTANT = {"kind": "barrier", "base": 1.0, "per_token": 0.0}


def params(**spec) -> LLMParams:
    return LLMParams.from_spec({"workers": 2, "slots": 2, **spec})


def test_step_order_on_a_hand_worked_example() -> None:
    """G = 2, B = 2, fcfs, step = 1 + 0.1 * max L; prompts 1..5, outputs 2, 1, 3, 1, 2.

    t = 0: requests 0, 1 on rank 0 (L = 1 + 2 = 3), 2, 3 on rank 1 (L = 3 + 4 = 7).
    Step 1: 1 + 0.1 * 7 = 1.7 s. Emit: L = (5, 9). Requests 1 (2 + 1 = 3 tokens) and 3
    (4 + 1 = 5) finish at 1.7: L = (2, 4); imbalance 2*4 - 6 = 2, idle rate (0.5 + 0)/2 = 0.25.
    Admit request 4 (prompt 5) on rank 0: L = (7, 4).
    Step 2: 1 + 0.7 = 1.7 s, t = 3.4. Emit: L = (9, 5). Request 0 (1 + 2 = 3) finishes: L = (6, 5);
    imbalance 12 - 11 = 1, idle rate (0 + 1/6)/2 = 1/12.
    Step 3: 1 + 0.6 = 1.6 s, t = 5.0. Emit: L = (7, 6); requests 4 (5 + 2) and 2 (3 + 3) finish: L = (0, 0).
    """
    p = params(step_time={"kind": "barrier", "base": 1.0, "per_token": 0.1}, power={"idle": 100.0, "max": 400.0, "exponent": 1.0})
    result = run_saturated(p, [1, 2, 3, 4, 5], [2, 1, 3, 1, 2])
    steps, jobs = result.steps, result.jobs
    assert steps["duration"].tolist() == pytest.approx([1.7, 1.7, 1.6])
    assert steps["t"].tolist() == pytest.approx([1.7, 3.4, 5.0])
    assert steps["load_max"].tolist() == [4, 6, 0] and steps["load_sum"].tolist() == [6, 11, 0]
    assert steps["imbalance"].tolist() == [2, 1, 0]
    assert steps["idle_rate"].tolist() == pytest.approx([0.25, 1 / 12, 0.0])
    assert steps["active"].tolist() == [2, 2, 0] and steps["pool"].tolist() == [1, 0, 0]
    # Power with exponent 1 after step 1: ranks at 2/4 and 4/4 of the top: 250 + 400 W.
    assert steps["power"].iloc[0] == pytest.approx(650.0)
    assert steps["energy"].iloc[0] == pytest.approx(650.0 * 1.7)
    # Barrier idle: step 1 own times 1.3 and 1.7: (0.4) / (2 * 1.7).
    assert steps["barrier_idle"].iloc[0] == pytest.approx(0.4 / 3.4)
    assert jobs["rank"].tolist() == [0, 0, 1, 1, 0]
    assert jobs["t_done"].tolist() == pytest.approx([3.4, 1.7, 5.0, 1.7, 5.0])
    assert jobs["t_admit"].tolist() == pytest.approx([0, 0, 0, 0, 1.7])
    assert jobs["t_first_token"].tolist() == pytest.approx([1.7, 1.7, 1.7, 1.7, 3.4])
    assert jobs["tpot"].iloc[[0, 2, 4]].tolist() == pytest.approx([1.7, 3.3 / 2, 1.6])
    summary = result.summary
    # Window: admission happened after step 1 last: steps 1..1.
    assert summary["steps_window"] == 1
    assert summary["mean_imbalance"] == 2 and summary["mean_idle_rate"] == pytest.approx(0.25)
    assert summary["throughput_tokens"] == pytest.approx(4 / 1.7)
    assert summary["makespan"] == pytest.approx(5.0)
    assert summary["mean_tpot"] == pytest.approx(np.mean([3.4 / 2, 1.7, 5 / 3, 1.7, 3.3 / 2]))
    assert summary["tokens_emitted"] == 9 == sum([2, 1, 3, 1, 2])


def test_single_slot_constant_step_is_fifo_with_deterministic_service() -> None:
    p = LLMParams.from_spec({"workers": 1, "slots": 1, "step_time": {"kind": "barrier", "base": 0.25, "per_token": 0.0}})
    outputs = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    result = run_saturated(p, np.full(len(outputs), 7), outputs)
    # Finish times are exact multiples of the step time (0.25 is exact in binary).
    assert result.jobs["t_done"].tolist() == (0.25 * np.cumsum(outputs)).tolist()
    assert result.jobs["t_admit"].tolist() == [0.0, *(0.25 * np.cumsum(outputs)[:-1]).tolist()]


def test_single_slot_open_engine_is_an_md1_queue() -> None:
    """Poisson arrivals to G = B = 1 with service of `output` steps of 0.25 s: Lindley, then the M/D/1 mean."""
    rng = np.random.default_rng(11)
    service, rho, n = 4 * 0.25, 0.7, 40_000
    arrivals = np.cumsum(rng.exponential(service / rho, n))
    engine = LLMEngine(LLMParams.from_spec({"workers": 1, "slots": 1, "step_time": {"kind": "barrier", "base": 0.25, "per_token": 0.0}}))
    requests = [LLMRequest(i, 5, 4, float(t)) for i, t in enumerate(arrivals)]
    for request in requests:
        engine.advance(request.t_arrival)
        engine.arrive(request, request.t_arrival)
    engine.run()
    done = np.array([r.t_done for r in requests])
    expected = np.empty(n)
    previous = 0.0
    for i, t in enumerate(arrivals):  # Lindley: start at max(arrival, previous finish)
        previous = expected[i] = max(t, previous) + service
    assert np.allclose(done, expected, rtol=0, atol=1e-9)
    # M/D/1: mean wait rho * D / (2 (1 - rho)); batch-means error over 25 batches.
    waits = done - arrivals - service
    batches = waits[: n // 25 * 25].reshape(25, -1).mean(axis=1)
    theory = rho * service / (2 * (1 - rho))
    assert abs(waits.mean() - theory) < 4.5 * batches.std(ddof=1) / 5


def run_open(p: LLMParams, n: int, seed: int, rate: float):
    rng = np.random.default_rng(seed)
    prompt, output = make_tokens({"kind": "lognormal", "prompt_mu": 5.0, "prompt_sigma": 0.8, "output_mu": 3.5, "output_sigma": 0.8}).sample(rng, n)
    # Capped so that every request fits an empty rank's KV cache (1000 + 400 <= 1500, 1000 <= 0.95 * 1500).
    prompt, output = np.minimum(prompt, 1000), np.minimum(output, 400)
    times = np.cumsum(rng.exponential(1 / rate, n))
    engine = LLMEngine(p, np.random.default_rng(seed))
    requests = [LLMRequest(i, int(a), int(b), float(t)) for i, (a, b, t) in enumerate(zip(prompt, output, times))]
    finished: list[LLMRequest] = []
    peaks = []
    for request in requests:
        finished += engine.advance(request.t_arrival)
        engine.arrive(request, request.t_arrival)
        peaks.append(engine.loads.max())
        if engine.kv_capacity is not None and engine.busy:
            # The step in progress grows every rank by its active requests: it must fit.
            assert (engine.loads + engine.active <= engine.kv_capacity).all()
    while engine.busy:
        finished += engine.advance(engine.next_event_time)
        if engine.kv_capacity is not None and engine.busy:
            assert (engine.loads + engine.active <= engine.kv_capacity).all()
    return engine, requests, finished


@pytest.mark.parametrize("admission", ["fcfs", "jsq", "round_robin", "vllm_dp"])
def test_conservation_and_kv_capacity_with_preemptions(admission: str) -> None:
    dispatch = "on_arrival" if admission == "vllm_dp" else "pool"
    p = LLMParams.from_spec(
        {"workers": 3, "slots": 8, "admission": {"name": admission}, "dispatch": dispatch, "kv_capacity": 1500, "kv_watermark": 0.95,
         "step_time": {"kind": "barrier", "base": 0.01, "per_token": 1e-6}}
    )  # fmt: skip
    engine, requests, finished = run_open(p, 3000, 5, rate=60.0)
    assert engine.preemptions > 0  # the capacity binds: the test exercises preemption
    ids = [r.request_id for r in finished]
    assert sorted(ids) == list(range(len(requests)))  # none lost, none duplicated
    assert engine.completed == len(requests) and engine.active_total == 0 and engine.pool_length == 0
    assert int(engine.loads.sum()) == 0 and engine.waiting_tokens == 0
    # Every token emitted is an output token of a finished request or was lost to a preemption.
    assert engine.tokens_emitted - engine.tokens_lost == sum(r.output for r in requests)
    assert sum(r.preemptions for r in requests) == engine.preemptions
    for r in requests:
        assert r.t_arrival <= r.t_admit < r.t_first_token <= r.t_done


def test_determinism() -> None:
    p = LLMParams.from_spec({"workers": 4, "slots": 6, "admission": {"name": "jsq"}, "kv_capacity": 3000})
    a = run_open(p, 800, 9, rate=30.0)
    b = run_open(p, 800, 9, rate=30.0)
    assert [(r.request_id, r.rank, r.t_done, r.preemptions) for r in a[2]] == [(r.request_id, r.rank, r.t_done, r.preemptions) for r in b[2]]
    pd.testing.assert_frame_equal(a[0].log.frame(), b[0].log.frame())


def test_sampled_steps_keep_exact_running_sums() -> None:
    p = LLMParams.from_spec({"workers": 4, "slots": 8})
    prompt, output = make_tokens({"kind": "normal", "prompt_mean": 300.0, "prompt_sd": 100.0, "output_mean": 60.0, "output_sd": 30.0}).sample(
        np.random.default_rng(1), 400
    )
    full = run_saturated(p, prompt, output)
    sampled = run_saturated(p, prompt, output, sample_interval=0.5)
    rows = sampled.steps
    assert len(rows) < len(full.steps) / 10
    # Each row is the last step ending at or before a multiple of 0.5 s (or the last step).
    steps = full.steps.set_index("step")
    for _, row in rows.iterrows():
        k = int(row["step"])
        assert row["energy_total"] == steps["energy"].loc[:k].cumsum().iloc[-1]
        assert row["imbalance_total"] == steps["imbalance"].loc[:k].sum()
    assert rows["step"].iloc[-1] == full.steps["step"].iloc[-1]
    assert sampled.summary == full.summary


def test_time_split_power_and_barrier_idle() -> None:
    """Two ranks, one request each of prompts 10 and 30; step = 1 + 0.01 L: own 1.1 and 1.3 s."""
    p = params(step_time={"kind": "barrier", "base": 1.0, "per_token": 0.01}, power={"kind": "time_split", "busy": 300.0, "idle": 50.0},
               admission={"name": "round_robin"})  # fmt: skip
    result = run_saturated(p, [10, 30], [1, 1])
    step = result.steps.iloc[0]
    assert step["duration"] == pytest.approx(1.3)
    # Rank 0 computes 1.1 s and waits 0.2 s; rank 1 computes 1.3 s.
    assert step["energy"] == pytest.approx(300 * 1.1 + 50 * 0.2 + 300 * 1.3)
    assert step["barrier_idle"] == pytest.approx(0.2 / 2.6)
    assert result.summary["barrier_idle"] == pytest.approx(0.2 / 2.6)


def test_affine_step_time_counts_admitted_prompt_tokens() -> None:
    p = params(step_time={"kind": "affine", "sync": 0.5, "a": 1.0, "b": 0.1, "c": 0.01, "p": 0.001}, admission={"name": "round_robin"})
    result = run_saturated(p, [100, 200], [2, 2])
    # Step 1: rank 1 has 1 request, 200 tokens, 200 admitted: 0.5 + 1 + 0.1 + 2 + 0.2 = 3.8.
    # Step 2: rank 1 at 201 tokens, nothing admitted: 0.5 + 1 + 0.1 + 2.01 = 3.61.
    assert result.steps["duration"].tolist() == pytest.approx([3.8, 3.61])


def test_equivalent_rate_is_the_balanced_engine_throughput() -> None:
    p = LLMParams.from_spec({"workers": 4, "slots": 10, "reveal": 40, "step_time": {"kind": "barrier", "base": 0.005, "per_token": 1e-6}})
    # 4 ranks x 10 requests of constant resident length 1000 (prompt 1000, one output token):
    # a step of 0.005 + 1e-6 * 10 * 1000 = 0.015 s emits 40 tokens.
    rate = equivalent_rate(p, mean_length=1000.0)
    assert rate.value(40.0) == pytest.approx(40 / 0.015)
    result = run_saturated(p, np.full(40, 1000), np.ones(40, dtype=int))
    assert result.summary["throughput_tokens"] == pytest.approx(rate.value(40.0))
    # Work unit one token, jobs of 200 tokens: mu(x) at x = 40 * 200.
    scaled = equivalent_rate(p, mean_length=1000.0, mean_size=200.0)
    assert scaled.value(40 * 200.0) == pytest.approx(40 / 0.015)
    assert math.isclose(scaled.supremum, 4 / 1e-3)


def test_steplog_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError):
        StepLog("x", 0.0)
