"""BF-IO and best-fit admission (lbsim/llm/bfio.py) against brute force, hand-worked examples and a decode loop.

The yardstick of one admission is its imbalance after the fact,
``G * max_g L'_g - sum_g L'_g`` (idle work at the barrier of the next step);
``bfio_exact`` must equal the minimum over every assignment (enumerated), and
no heuristic may beat it. The decode loop is the paper's setting in small
(Chen et al., arXiv:2601.17855): saturated ranks, sticky requests growing by
one token per step, prompts and outputs from its synthetic normal workload.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import lbsim
from lbsim.llm.bfio import (
    BestfitParams,
    BfioExactParams,
    BfioParams,
    Br0Params,
    _project,
    bestfit,
    bfio,
    bfio_exact,
    br0,
    estimate_outputs,
)
from lbsim.llm.subset_sum import largest_fitting, smallest_total


# -- helpers -------------------------------------------------------------------------------
def imbalance_after(loads: np.ndarray, prompts: np.ndarray, admissions: list[tuple[int, int]]) -> int:
    """``G * M - sum of new loads`` with ``M`` the largest new load."""
    new = np.asarray(loads, dtype=np.int64).copy()
    for candidate, rank in admissions:
        new[rank] += prompts[candidate]
    return int(len(new) * new.max() - new.sum())


def assert_valid(admissions: list[tuple[int, int]], free: np.ndarray, count: int) -> None:
    """Distinct candidates in range, at most ``free[g]`` on rank ``g``, every slot filled when the pool allows."""
    candidates = [c for c, _ in admissions]
    assert len(set(candidates)) == len(candidates)
    assert all(0 <= c < count for c in candidates)
    per_rank = np.bincount([g for _, g in admissions], minlength=len(free))
    assert len(per_rank) == len(free)
    assert np.all(per_rank <= free)
    assert len(admissions) == min(int(free.sum()), count)


def brute_force_imbalance(loads: np.ndarray, free: np.ndarray, prompts: np.ndarray) -> int:
    """The least imbalance over every assignment of candidates to ranks (or to nobody) that fills ``min(F, R)`` slots."""
    ranks = len(loads)
    target = min(int(free.sum()), len(prompts))
    best = None
    for choice in itertools.product(range(-1, ranks), repeat=len(prompts)):
        taken = [g for g in choice if g >= 0]
        if len(taken) != target or np.any(np.bincount(taken, minlength=ranks) > free):
            continue
        value = imbalance_after(loads, prompts, [(c, g) for c, g in enumerate(choice) if g >= 0])
        best = value if best is None else min(best, value)
    assert best is not None
    return best


def small_instance(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ranks = int(rng.integers(1, 4))
    loads = rng.integers(0, 400, ranks)
    free = rng.integers(0, 3, ranks)
    prompts = rng.integers(1, 300, int(rng.integers(1, 6)))
    return loads, free, prompts


# -- hand-worked examples ------------------------------------------------------------------
def test_bestfit_hand_worked():
    # M = 100. Rank 3 (load 0, gap 100) takes 60; rank 1 (50, gap 50) takes 50 -> 100;
    # rank 0 (100, gap 0): nothing fits, the smallest, 10 -> 110 = M; rank 1 (100, gap 10):
    # 10 is gone, nothing fits, the smallest left, 20 -> 120.
    loads = np.array([100, 50, 80, 0])
    free = np.array([1, 2, 0, 1])
    prompts = np.array([30, 60, 10, 50, 20])
    assert bestfit(loads, free, prompts) == [(1, 3), (3, 1), (2, 0), (4, 1)]
    # the exact program puts 30 + 20 on rank 1 instead: loads 110, 100, 80, 60
    assert imbalance_after(loads, prompts, bfio_exact(loads, free, prompts)) == 4 * 110 - 350
    # so does BF-IO's phase 2: rank 3 fills its margin 100 with 60, rank 1 its margin 50 with 30 + 20
    assert sorted(bfio(loads, free, prompts, [], [], np.zeros(5), horizon=0)) == [(0, 1), (1, 3), (2, 0), (4, 1)]


def test_bestfit_prefers_the_earliest_of_equal_prompts():
    assert bestfit(np.array([0, 10]), np.array([1, 0]), np.array([5, 7, 7, 20])) == [(1, 0)]
    assert bestfit(np.array([10, 10]), np.array([1, 0]), np.array([9, 3, 3])) == [(1, 0)]


def test_br0_hand_worked():
    loads_hat = np.array([100, 50, 80, 0])  # room 0, 50, 20, 100
    # 30 fits on ranks 1 and 3 (score 30 each): the lower index
    assert br0(loads_hat, 30) == 1
    # 60 fits only on rank 3
    assert br0(loads_hat, 60) == 3
    # 200 fits nowhere: 200 - 4 * (200 - room) is largest where the room is largest
    assert br0(loads_hat, 200) == 3
    # equal loads: no room anywhere, every score equal, rank 0
    assert br0(np.array([7, 7, 7]), 5) == 0


def test_projection_drops_requests_when_their_output_is_used_up():
    loads = np.array([30, 5])
    lengths = [np.array([10, 20]), np.array([5])]
    remaining = [np.array([1, 3]), np.array([9])]
    projected = _project(loads, lengths, remaining, 3)
    assert projected[:, 0].tolist() == [30, 20, 20, 0]
    assert projected[:, 1].tolist() == [5, 5, 5, 5]
    assert _project(loads, lengths, remaining, 0).tolist() == [[30, 5]]
    # T = min(H, the longest remaining output, 9 here, or a longer candidate estimate)
    assert _project(loads, lengths, remaining, 100).shape == (10, 2)
    assert _project(loads, lengths, remaining, 100, longest=12).shape == (13, 2)


# -- subset sum against enumeration --------------------------------------------------------
def test_largest_fitting_equals_enumeration():
    rng = np.random.default_rng(3)
    for _ in range(300):
        values = rng.integers(1, 60, int(rng.integers(1, 10)))
        k = int(rng.integers(1, 5))
        capacity = int(rng.integers(0, 200))
        totals = [sum(values[list(c)]) for c in itertools.combinations(range(len(values)), k)]
        fitting = [t for t in totals if t <= capacity]
        found = largest_fitting(values, k, capacity)
        if not fitting:
            assert found is None
            if k <= len(values):
                assert values[smallest_total(values, k)].sum() == min(totals)
        else:
            assert found is not None and len(set(found.tolist())) == k
            assert values[found].sum() == max(fitting)


def test_largest_fitting_returns_a_fit_when_its_budget_runs_out():
    rng = np.random.default_rng(4)
    values = 2 * rng.integers(1, 4000, 1024)  # even values, odd capacity: no exact fit ends the search early
    for budget in (1, 2, 10, 100, 4096):
        found = largest_fitting(values, 7, 15_001, node_budget=budget)
        assert found is not None and len(set(found.tolist())) == 7
        assert values[found].sum() <= 15_001
    assert values[largest_fitting(values, 7, 15_001)].sum() == 15_000


# -- the exact program and the heuristics ---------------------------------------------------
def test_bfio_exact_equals_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(60):
        loads, free, prompts = small_instance(rng)
        admissions = bfio_exact(loads, free, prompts)
        assert_valid(admissions, free, len(prompts))
        assert imbalance_after(loads, prompts, admissions) == brute_force_imbalance(loads, free, prompts)


def test_heuristics_never_beat_the_exact_admission():
    rng = np.random.default_rng(12)
    for _ in range(200):
        ranks = int(rng.integers(2, 6))
        loads = rng.integers(0, 3000, ranks)
        free = rng.integers(0, 4, ranks)
        prompts = rng.integers(1, 1500, int(rng.integers(1, 9)))
        exact = imbalance_after(loads, prompts, bfio_exact(loads, free, prompts))
        assert imbalance_after(loads, prompts, bestfit(loads, free, prompts)) >= exact
        for threshold in (0, 7):
            admissions = bfio(loads, free, prompts, [], [], np.zeros(0), horizon=0, greedy_threshold=threshold)
            assert imbalance_after(loads, prompts, admissions) >= exact


def test_bfio_exact_refuses_a_program_above_its_size_limit():
    with pytest.raises(ValueError, match="size_limit"):
        bfio_exact(np.zeros(4, np.int64), np.ones(4, np.int64), np.ones(10, np.int64), size_limit=39)
    assert len(bfio_exact(np.zeros(4, np.int64), np.ones(4, np.int64), np.ones(10, np.int64), size_limit=40)) == 4


def test_bfio_without_lookahead_reads_no_output_length():
    rng = np.random.default_rng(5)
    loads = rng.integers(0, 5000, 6)
    free = np.array([3, 0, 1, 9, 2, 1])
    prompts = rng.integers(1, 2000, 24)
    lengths = [rng.integers(1, 500, 4) for _ in range(6)]
    remaining = [rng.integers(1, 50, 4) for _ in range(6)]
    reference = bfio(loads, free, prompts, lengths, remaining, rng.integers(1, 99, 24), horizon=0)
    # None would raise on any read
    assert bfio(loads, free, prompts, None, None, None, horizon=0) == reference
    with pytest.raises(ValueError, match="horizon"):
        bfio(loads, free, prompts, None, None, None, horizon=1)


def test_lookahead_sees_a_rank_about_to_empty():
    # rank 0 is the fuller now (110 vs 100) but its only request ends after this step; rank 1's lasts 50 steps.
    # H = 0 puts the prompt on the emptier rank now (1); H = 5 on the rank that will be empty (0).
    loads, free, prompts = np.array([110, 100]), np.array([1, 1]), np.array([50])
    lengths, remaining, outputs = [np.array([110]), np.array([100])], [np.array([1]), np.array([50])], np.array([30])
    assert bfio(loads, free, prompts, lengths, remaining, outputs, horizon=0) == [(0, 1)]
    assert bfio(loads, free, prompts, lengths, remaining, outputs, horizon=5) == [(0, 0)]


# -- every policy returns a valid assignment -----------------------------------------------
@st.composite
def engine_states(draw: st.DrawFn) -> dict:
    ranks = draw(st.integers(1, 6))
    free = np.array(draw(st.lists(st.integers(0, 4), min_size=ranks, max_size=ranks)), dtype=np.int64)
    active = [draw(st.integers(0, 3)) for _ in range(ranks)]
    lengths = [np.array(draw(st.lists(st.integers(1, 900), min_size=a, max_size=a)), dtype=np.int64) for a in active]
    remaining = [np.array(draw(st.lists(st.integers(0, 40), min_size=a, max_size=a)), dtype=np.int64) for a in active]
    count = draw(st.integers(0, 14))
    prompts = np.array(draw(st.lists(st.integers(1, 700), min_size=count, max_size=count)), dtype=np.int64)
    outputs = np.array(draw(st.lists(st.integers(1, 60), min_size=count, max_size=count)), dtype=np.int64)
    loads = np.array([int(x.sum()) for x in lengths], dtype=np.int64)
    return {
        "loads": loads,
        "free": free,
        "prompts": prompts,
        "lengths": lengths,
        "remaining": remaining,
        "outputs": outputs,
    }


@settings(max_examples=150, deadline=None)
@given(state=engine_states(), horizon=st.sampled_from([0, 1, 5, 30]), threshold=st.integers(0, 8))
def test_every_policy_returns_a_valid_assignment(state: dict, horizon: int, threshold: int):
    loads, free, prompts = state["loads"], state["free"], state["prompts"]
    count = len(prompts)
    assert_valid(bestfit(loads, free, prompts), free, count)
    admissions = bfio(
        loads,
        free,
        prompts,
        state["lengths"],
        state["remaining"],
        state["outputs"],
        horizon,
        greedy_threshold=threshold,
    )
    assert_valid(admissions, free, count)
    if count * int(np.count_nonzero(free)) <= 40:
        assert_valid(bfio_exact(loads, free, prompts), free, count)
    rank = br0(loads, int(prompts[0]) if count else 1)
    assert 0 <= rank < len(loads)


def test_bfio_considers_only_its_first_candidates():
    loads, free, prompts = np.zeros(3, np.int64), np.full(3, 5), np.arange(1, 41)
    admissions = bfio(loads, free, prompts, [], [], None, 0, candidates=6)
    assert sorted(c for c, _ in admissions) == list(range(6))


# -- estimates and parameters --------------------------------------------------------------
def test_estimate_outputs():
    outputs = np.array([1, 2, 100, 1000, 5000])
    assert estimate_outputs(outputs, np.random.default_rng(0)).tolist() == outputs.tolist()
    estimates = estimate_outputs(np.full(20_000, 1000), np.random.default_rng(1), 0.5, 0.1)
    assert estimates.min() >= 500 and estimates.max() <= 1100
    # U[0.5, 1.1] has mean 0.8; the standard error of 20 000 draws is 0.6 / sqrt(12 * 20 000) * 1000 ~ 1.2
    assert abs(estimates.mean() - 800) < 6
    assert estimate_outputs(np.ones(100, np.int64), np.random.default_rng(2), 0.9, 0.0).min() == 1


@pytest.mark.parametrize(
    ("model", "key", "value"),
    [
        (BfioParams, "horizon", -1),
        (BfioParams, "horizon", 2.5),
        (BfioParams, "decay", 0.0),
        (BfioParams, "decay", 1.5),
        (BfioParams, "greedy_threshold", -1),
        (BfioParams, "candidates", 0),
        (BfioParams, "noise_low", 1.0),
        (BfioParams, "noise_high", -0.1),
        (BfioExactParams, "size_limit", 0),
        (BestfitParams, "anything", 1),
        (Br0Params, "anything", 1),
    ],
)
def test_parameters_out_of_range_name_the_key(model, key, value):
    with pytest.raises(ValidationError, match=key):
        model(**{key: value})


def test_parameter_defaults():
    params = BfioParams()
    assert (params.horizon, params.alpha, params.beta, params.decay) == (0, 1.0, 43.0, 0.86)
    assert (params.greedy_threshold, params.candidates, params.noise_low, params.noise_high) == (7, 1024, 0.0, 0.0)
    assert BfioParams(horizon=20.0).horizon == 20


# -- a small saturated decode loop ---------------------------------------------------------
def synthetic_normal_workload(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The paper's synthetic workload: (prompt, output) bivariate normal, means 3200/1200, sds 2600/700, corr -0.1."""
    sd = np.array([2600.0, 700.0])
    covariance = np.outer(sd, sd) * np.array([[1.0, -0.1], [-0.1, 1.0]])
    draws = np.maximum(1, np.rint(rng.multivariate_normal([3200.0, 1200.0], covariance, count))).astype(np.int64)
    return draws[:, 0], draws[:, 1]


def fcfs(loads: np.ndarray, free: np.ndarray, prompts: np.ndarray) -> list[tuple[int, int]]:
    slots = [g for g in range(len(free)) for _ in range(int(free[g]))]
    return list(zip(range(len(prompts)), slots, strict=False))


def jsq(loads: np.ndarray, free: np.ndarray, prompts: np.ndarray) -> list[tuple[int, int]]:
    loads = loads.astype(np.int64).copy()
    free = free.copy()
    admissions = []
    for candidate, prompt in enumerate(prompts):
        open_ranks = np.flatnonzero(free > 0)
        if not len(open_ranks):
            break
        rank = int(open_ranks[np.argmin(loads[open_ranks])])
        admissions.append((candidate, rank))
        loads[rank] += prompt
        free[rank] -= 1
    return admissions


def mean_imbalance(policy, ranks: int = 8, batch: int = 16, steps: int = 3000, warmup: int = 500, seed: int = 2026):
    """Mean of ``G max L - sum L`` over the steps after ``warmup``, with a pool that never runs dry."""
    rng = np.random.default_rng(seed)
    prompts, outputs = synthetic_normal_workload(ranks * batch * steps // 300 + 10 * ranks * batch, rng)
    pool = list(range(len(prompts)))
    reveal = 4 * ranks
    length = np.zeros((ranks, batch), np.int64)  # resident tokens of the request in each slot
    left = np.zeros((ranks, batch), np.int64)  # output tokens still to generate (0: empty slot)
    imbalance = []
    for step in range(steps):
        busy = left > 0
        loads = length.sum(axis=1)
        free = batch - busy.sum(axis=1)
        shown = np.array(pool[:reveal])
        lengths = [length[g, busy[g]] for g in range(ranks)]
        remaining = [left[g, busy[g]] for g in range(ranks)]
        admissions = policy(loads, free, prompts[shown], lengths, remaining, outputs[shown])
        assert_valid(admissions, free, len(shown))
        for candidate, rank in admissions:
            slot = int(np.flatnonzero(left[rank] == 0)[0])
            request = shown[candidate]
            length[rank, slot] = prompts[request]
            left[rank, slot] = outputs[request]
        taken = {int(shown[c]) for c, _ in admissions}
        pool = [r for r in pool[:reveal] if r not in taken] + pool[reveal:]
        loads = length.sum(axis=1)
        if step >= warmup:
            imbalance.append(ranks * loads.max() - loads.sum())
        busy = left > 0
        length[busy] += 1
        left[busy] -= 1
        length[left == 0] = 0
    return float(np.mean(imbalance))


def test_bfio_without_lookahead_leaves_less_imbalance_than_fcfs_and_jsq():
    def plain(rule):
        return lambda loads, free, prompts, lengths, remaining, outputs: rule(loads, free, prompts)

    with_bfio = mean_imbalance(
        lambda loads, free, prompts, lengths, remaining, outputs: bfio(
            loads, free, prompts, lengths, remaining, outputs, horizon=0
        )
    )
    with_fcfs = mean_imbalance(plain(fcfs))
    with_jsq = mean_imbalance(plain(jsq))
    assert with_bfio < with_jsq
    assert with_bfio < with_fcfs


# -- the evidence's scenario files (analysis/bfio.py) ------------------------------------------
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def test_the_evidence_scenarios_load_and_run():
    energy = lbsim.load_scenario(SCENARIOS / "bfio_energy.toml", ["jobs.count=300"])
    assert energy.simulation.mode == "saturated"
    assert energy.backends[0].params.power.kind == "time_split"
    summary = lbsim.simulate(energy.replace(**{"backends.0.admission": {"name": "bfio", "horizon": 20}})).summary()
    assert summary["jobs_completed"] == 300 and summary["energy"] > 0

    open_mode = lbsim.load_scenario(
        SCENARIOS / "bfio_open.toml", ["simulation.horizon=20", "simulation.warmup=5"], warn=False
    )
    assert open_mode.simulation.mode == "open" and open_mode.num_backends == 3
    assert all(b.params.workers == 16 and b.params.slots == 72 for b in open_mode.backends)
    assert lbsim.simulate(open_mode, router="least_tokens").summary()["jobs_completed"] > 0
