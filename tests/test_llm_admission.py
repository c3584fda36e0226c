"""Admission policies on small hand examples, and the llm backend's parameter validation."""

from __future__ import annotations

import numpy as np
import pytest

from lbsim.errors import ScenarioError
from lbsim.llm import ADMISSIONS, Candidates, LLMParams, RankState, make_admission
from lbsim.llm.admission import parameter_table


def state(loads, free, active=None, queued=None) -> RankState:
    loads = np.array(loads, np.int64)
    g = len(loads)
    return RankState(
        loads=loads,
        active=np.array(active if active is not None else [0] * g, np.int64),
        free=np.array(free, np.int64),
        queued=np.array(queued if queued is not None else [0] * g, np.int64),
        queued_tokens=np.zeros(g, np.int64),
        lengths=[np.zeros(0, np.int64)] * g,
        remaining=[np.zeros(0, np.int64)] * g,
    )


def candidates(prompts) -> Candidates:
    prompts = np.array(prompts, np.int64)
    return Candidates(prompts, np.ones_like(prompts))


def policy(name: str, workers: int = 3, slots: int = 4, **params):
    return make_admission({"name": name, **params}).build(workers, slots, np.random.default_rng(0))


def test_fcfs_takes_the_first_free_slots_count_and_fills_rank_0_first() -> None:
    # Free slots (2, 0, 1): three entries, two to rank 0, one to rank 2; the fourth waits.
    pairs = policy("fcfs").admit(state([5, 0, 9], [2, 0, 1]), candidates([10, 20, 30, 40]))
    assert pairs == [(0, 0), (1, 0), (2, 2)]


def test_jsq_counts_prompts_placed_in_the_same_call_and_breaks_ties_low() -> None:
    # Loads (100, 50, 50), free slots (2, 2, 1):
    # 0 (prompt 30) -> rank 1 (50, tie with 2: lowest index): loads (100, 80, 50)
    # 1 (prompt 60) -> rank 2 (50): loads (100, 80, 110), rank 2 full
    # 2 (prompt 10) -> rank 1 (80): loads (100, 90, 110), rank 1 full
    # 3 (prompt 5)  -> rank 0 (100)
    pairs = policy("jsq").admit(state([100, 50, 50], [2, 2, 1]), candidates([30, 60, 10, 5, 7]))
    assert pairs == [(0, 1), (1, 2), (2, 1), (3, 0), (4, 0)]


def test_round_robin_restarts_at_rank_0_unless_persistent() -> None:
    rr = policy("round_robin")
    assert rr.admit(state([0, 0, 0], [1, 0, 2]), candidates([1, 1, 1])) == [(0, 0), (1, 2), (2, 2)]
    assert rr.admit(state([0, 0, 0], [1, 1, 1]), candidates([1, 1])) == [(0, 0), (1, 1)]
    persistent = policy("round_robin", persistent=True)
    assert persistent.admit(state([0, 0, 0], [1, 1, 1]), candidates([1, 1])) == [(0, 0), (1, 1)]
    assert persistent.admit(state([0, 0, 0], [1, 1, 1]), candidates([1, 1])) == [(0, 2), (1, 0)]


def test_vllm_dp_scores_4_waiting_plus_running_from_a_rotating_start() -> None:
    vllm = policy("vllm_dp")
    s = state([0, 0, 0], [4, 4, 4], active=[3, 1, 1], queued=[0, 0, 0])
    # Published at t = 0: scores (3, 1, 1). Start 0: rank 1 (first of the tie); local waiting (0, 1, 0).
    assert vllm.assign(s, 10, 0.0) == 1
    # Scores (3, 5, 1): rank 2; then (3, 5, 5): rank 0 (start 2 scans 2, 0, 1: 0 has 3).
    assert vllm.assign(s, 10, 0.01) == 2
    assert vllm.assign(s, 10, 0.02) == 0
    # Scores (7, 5, 5), start 0: rank 1.
    assert vllm.assign(s, 10, 0.03) == 1
    # At t = 0.1 the ranks publish again: (3, 1, 1) from the state; start 1: rank 1.
    assert vllm.assign(s, 10, 0.1) == 1
    # Local count again: (3, 5, 1), start 2: rank 2.
    assert vllm.assign(s, 10, 0.15) == 2


def test_parameter_table_lists_every_policy_with_its_dispatch() -> None:
    rows = {row["admission"]: row for row in parameter_table()}
    assert {"fcfs", "jsq", "round_robin", "vllm_dp"} <= set(rows) == set(ADMISSIONS)
    assert rows["vllm_dp"]["dispatch"] == "on_arrival" and rows["fcfs"]["dispatch"] == "pool"
    assert [p["name"] for p in rows["round_robin"]["params"]] == ["persistent"]
    first = rows["vllm_dp"]["params"][0]
    assert (first["name"], first["default"], first["required"], first["constraints"]) == ("publish_interval", 0.1, False, "> 0")


def test_defaults() -> None:
    p = LLMParams.from_spec({"workers": 16, "slots": 72})
    assert p.look_ahead == 64 and p.admission.name == "fcfs" and p.dispatch == "pool"
    assert p.step_time.kind == "barrier" and p.power.kind == "utilisation" and p.kv_limit is None
    assert LLMParams.from_spec({"workers": 2, "slots": 1, "kv_capacity": 1000, "kv_watermark": 0.9}).kv_limit == 900
    h100 = LLMParams.from_spec({"workers": 1, "slots": 1, "step_time": {"kind": "affine", "preset": "h100_llama8b"}}).step_time
    assert (h100.a, h100.b, h100.c, h100.p) == (7.7e-3, 4.4e-6, 76e-9, 0.0)
    h200 = LLMParams.from_spec({"workers": 1, "slots": 1, "step_time": {"kind": "affine", "preset": "h200_llama8b", "p": 1e-5}}).step_time
    assert (h200.a, h200.c, h200.p) == (5.7e-3, 53e-9, 1e-5)


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"workers": 2, "slots": 0}, "dp.slots", "must be >= 1, got 0"),
        ({"workers": 0, "slots": 2}, "dp.workers", "must be >= 1"),
        ({"slots": 2}, "dp.workers", "missing"),
        ({"workers": 2, "slots": 2, "reveal": 0}, "dp.reveal", ">= 1"),
        ({"workers": 2, "slots": 2, "slot": 3}, "dp.slot", "did you mean 'slots'"),
        ({"workers": 2, "slots": 2, "admission": {"name": "fcfss"}}, "dp.admission.name", "did you mean 'fcfs'"),
        ({"workers": 2, "slots": 2, "admission": {"name": "round_robin", "persistant": True}}, "dp.admission.persistant", "persistent"),
        ({"workers": 2, "slots": 2, "admission": {"name": "vllm_dp"}}, "dp.admission.name", 'needs dispatch = "on_arrival"'),
        ({"workers": 2, "slots": 2, "dispatch": "on_arrival"}, "dp.admission.name", 'needs dispatch = "pool"'),
        ({"workers": 2, "slots": 2, "dispatch": "somewhere"}, "dp.dispatch", "pool"),
        ({"workers": 2, "slots": 2, "step_time": {"kind": "barier"}}, "dp.step_time.kind", "did you mean 'barrier'"),
        ({"workers": 2, "slots": 2, "step_time": {"kind": "barrier", "base": -1.0}}, "dp.step_time.base", "must be >= 0"),
        ({"workers": 2, "slots": 2, "step_time": {"kind": "affine"}}, "dp.step_time.a", "missing"),
        ({"workers": 2, "slots": 2, "step_time": {"kind": "affine", "preset": "a100"}}, "dp.step_time", "unknown preset"),
        ({"workers": 2, "slots": 2, "power": {"idle": 500.0, "max": 400.0}}, "dp.power", "max must be >= idle"),
        ({"workers": 2, "slots": 2, "power": {"kind": "time_split", "busy": -1.0}}, "dp.power.busy", "must be >= 0"),
        ({"workers": 2, "slots": 2, "kv_capacity": 0}, "dp.kv_capacity", "must be >= 1"),
        ({"workers": 2, "slots": 2, "kv_watermark": 1.5}, "dp.kv_watermark", "must be <= 1"),
    ],
)
def test_bad_parameters_name_the_key(spec: dict, key: str, words: str) -> None:
    with pytest.raises(ScenarioError) as err:
        LLMParams.from_spec(spec, "dp")
    assert err.value.key == key and words in err.value.message, str(err.value)
