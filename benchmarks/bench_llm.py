"""Speed of the llm engine and of its admission policies, in saturated engines of B = 72 slots per rank.

The BF-IO paper's synthetic workload throughout (bivariate normal tokens,
prompt/output means 3200/1200; Chen et al., arXiv:2601.17855). Sections::

    python benchmarks/bench_llm.py engine     # steps and requests per second, fcfs and jsq, G = 16, 64, 256
    python benchmarks/bench_llm.py policies   # cost per step of every policy at G = 16, 64, 256 (medians of rounds)
    python benchmarks/bench_llm.py run        # wall time of 10,000 requests, G = 16, bfio H = 20
    python benchmarks/bench_llm.py calls      # cost of one call of each pure function of lbsim/llm/bfio.py
    python benchmarks/bench_llm.py open       # open mode: scenarios/llm_dp_global.toml, jobs per second
    python benchmarks/bench_llm.py            # all five

``policies`` runs each policy's whole saturated engine (``--requests-per-slot``
requests per slot) and divides its CPU and wall time by its steps; the
policies take turns within each round (interleaved, so a slow minute of a
shared machine hits them all) and the medians over ``--rounds`` rounds are
printed, with the cost over fcfs's (the policy's own share). ``br0``
dispatches on arrival. ``bfio_exact`` is not run in a saturated engine: its
first admission (every rank empty, ``4G`` candidates, every prompt fits
anywhere) is a highly symmetric integer program on which HiGHS's branch and
bound takes 2 s at G = 4 and more than 90 s at G = 8; ``calls`` times it on
part-full engines, where it is fast.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import lbsim
from lbsim.llm import LLMParams, make_tokens, run_saturated
from lbsim.llm.bfio import BfioExactParams, bestfit, bfio, bfio_exact, br0

SLOTS = 72
ROOT = Path(__file__).resolve().parents[1]
#: every policy of the comparison: label, admission table, dispatch
POLICIES: dict[str, tuple[dict, str]] = {
    "fcfs": ({"name": "fcfs"}, "pool"),
    "jsq": ({"name": "jsq"}, "pool"),
    "round_robin": ({"name": "round_robin"}, "pool"),
    "bestfit": ({"name": "bestfit"}, "pool"),
    "bfio H=0": ({"name": "bfio", "horizon": 0}, "pool"),
    "bfio H=20": ({"name": "bfio", "horizon": 20}, "pool"),
    "bfio H=72": ({"name": "bfio", "horizon": 72}, "pool"),
    "br0": ({"name": "br0"}, "on_arrival"),
}


def workload(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (prompt, output) pairs of the paper's synthetic normal workload."""
    return make_tokens({"kind": "normal"}).sample(np.random.default_rng(seed), count)


def engine_params(workers: int, admission: dict, dispatch: str = "pool") -> LLMParams:
    return LLMParams.from_spec({"workers": workers, "slots": SLOTS, "admission": admission, "dispatch": dispatch})


def saturated(params: LLMParams, prompt: np.ndarray, output: np.ndarray) -> tuple[float, float, int]:
    """Wall and CPU seconds of one saturated run, and its steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_saturated(params, prompt, output, 1)
    return time.perf_counter() - wall, time.process_time() - cpu, int(result.summary["steps"])


# -- engine ----------------------------------------------------------------------------------
def engine_section(ranks: list[int], requests_per_slot: float) -> None:
    print(f"{'G':>5} {'admission':>10} {'requests':>9} {'steps':>7} {'wall s':>8} {'cpu s':>8}", end="")
    print(f" {'steps/s':>9} {'requests/s':>11}")
    for workers in ranks:
        n = int(requests_per_slot * workers * SLOTS)
        prompt, output = workload(n, 1)
        for admission in ("fcfs", "jsq"):
            wall, cpu, steps = saturated(engine_params(workers, {"name": admission}), prompt, output)
            print(f"{workers:>5} {admission:>10} {n:>9} {steps:>7} {wall:>8.2f} {cpu:>8.2f}", end="")
            print(f" {steps / wall:>9.0f} {n / wall:>11.0f}")


# -- policies --------------------------------------------------------------------------------
def policies_section(ranks: list[int], requests_per_slot: float, rounds: int) -> None:
    print(f"{'G':>5} {'policy':<12} {'steps':>6} {'cpu ms/step':>12} {'wall ms/step':>13} {'over fcfs (cpu ms)':>19}")
    for workers in ranks:
        n = int(requests_per_slot * workers * SLOTS)
        prompt, output = workload(n, 1)
        chosen = {name: engine_params(workers, admission, dispatch) for name, (admission, dispatch) in POLICIES.items()}
        cpu: dict[str, list[float]] = {name: [] for name in chosen}
        wall: dict[str, list[float]] = {name: [] for name in chosen}
        steps: dict[str, int] = {}
        for _ in range(rounds):
            for name, params in chosen.items():
                w, c, k = saturated(params, prompt, output)
                cpu[name].append(c / k)
                wall[name].append(w / k)
                steps[name] = k
        base = statistics.median(cpu["fcfs"])
        for name in POLICIES:
            c, w = statistics.median(cpu[name]), statistics.median(wall[name])
            print(
                f"{workers:>5} {name:<12} {steps[name]:>6} {c * 1e3:>12.3f} {w * 1e3:>13.3f} {(c - base) * 1e3:>19.3f}"
            )


# -- run -------------------------------------------------------------------------------------
def run_section(requests: int) -> None:
    prompt, output = workload(requests, 1)
    wall, cpu, steps = saturated(engine_params(16, {"name": "bfio", "horizon": 20}), prompt, output)
    print(f"G = 16, B = 72, bfio H = 20, {requests} requests: {steps} steps, {wall:.2f} s wall, {cpu:.2f} s CPU")


# -- open: a whole global system of engines -------------------------------------------------
def open_section(horizon: float, rounds: int, routers: tuple[str, ...] = ("least_tokens", "dgdlb")) -> None:
    """Jobs per CPU and wall second of an open-mode global run, median of interleaved rounds."""
    overrides = [f"simulation.horizon={horizon}", f"simulation.warmup={horizon / 5}", "simulation.drain=false"]
    scenario = lbsim.load_scenario(ROOT / "scenarios" / "llm_dp_global.toml", overrides, warn=False)
    print(f"scenarios/llm_dp_global.toml (3 frontends, 6 engines of 8 x 64), {horizon:g} s, median of {rounds} rounds")
    timings: dict[str, list[tuple[int, int, float, float]]] = {router: [] for router in routers}
    for _ in range(rounds):
        for router in routers:
            wall, cpu = time.perf_counter(), time.process_time()
            summary = lbsim.simulate(scenario, router=router).summary()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            timings[router].append((summary["jobs_arrived"], summary["steps"], wall, cpu))
    columns = f"{'jobs':>8} {'steps':>8} {'wall s':>7} {'cpu s':>7}"
    print(f"  {'router':<14} {columns} {'jobs/s wall':>11} {'jobs/s cpu':>10}")
    for router, runs in timings.items():
        jobs, steps = runs[0][:2]  # the same in every round: the runs are seeded
        wall = statistics.median(w for *_, w, _ in runs)
        cpu = statistics.median(c for *_, c in runs)
        rates = f"{jobs / wall:>11,.0f} {jobs / cpu:>10,.0f}"
        print(f"  {router:<14} {jobs:>8} {steps:>8} {wall:>7.2f} {cpu:>7.2f} {rates}")


# -- calls: the pure functions of lbsim/llm/bfio.py ------------------------------------------
def engine_state(ranks: int, kind: str, seed: int) -> dict:
    """A seeded state that looks like a saturated engine, and ``R = 4G`` fresh candidates.

    Every active request sits at a uniformly random point of its output, so
    ``L_g`` is about ``B * 3800`` tokens. ``steady``: each slot free with
    probability 1/1200 (one request in 1200 finishes per step), about 0.06 G
    free slots: BF-IO runs phase 2 only (subset sum) up to G ~ 116 and phase
    1 first above; ``refill``: 8 free slots on every rank (a burst of
    completions), 8G admissions from 4G candidates, mostly phase 1 (greedy).
    """
    rng = np.random.default_rng(seed)
    free = rng.binomial(SLOTS, 1 / 1200, ranks) if kind == "steady" else np.full(ranks, 8)
    sampler = make_tokens({"kind": "normal"})
    lengths, remaining = [], []
    for g in range(ranks):
        prompt, output = sampler.sample(rng, SLOTS - int(free[g]))
        generated = np.floor(rng.random(len(output)) * output).astype(np.int64)
        lengths.append(prompt + generated)
        remaining.append(output - generated)
    prompts, outputs = sampler.sample(rng, 4 * ranks)
    return {
        "loads": np.array([int(x.sum()) for x in lengths], dtype=np.int64),
        "free": free.astype(np.int64),
        "prompts": prompts,
        "outputs": outputs,
        "lengths": lengths,
        "remaining": remaining,
    }


def calls() -> dict[str, Callable[[dict], object]]:
    def with_horizon(horizon: int) -> Callable[[dict], object]:
        return lambda s: bfio(
            s["loads"], s["free"], s["prompts"], s["lengths"], s["remaining"], s["outputs"], horizon=horizon
        )

    return {
        "bestfit": lambda s: bestfit(s["loads"], s["free"], s["prompts"]),
        "bfio H=0": with_horizon(0),
        "bfio H=20": with_horizon(20),
        "bfio H=72": with_horizon(72),
        "bfio_exact": lambda s: bfio_exact(s["loads"], s["free"], s["prompts"]),
        "br0 (one arrival)": lambda s: br0(s["loads"], int(s["prompts"][0])),
    }


def time_call(run: Callable[[dict], object], states: list[dict], budget: float) -> tuple[float, float, int]:
    count = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while count < 5 or time.perf_counter() - wall0 < budget:
        run(states[count % len(states)])
        count += 1
    return (time.process_time() - cpu0) / count, (time.perf_counter() - wall0) / count, count


def calls_section(ranks: list[int], budget: float) -> None:
    limit = BfioExactParams().size_limit
    print(f"{'G':>4} {'step':>7} {'free':>5} {'policy':<18} {'cpu ms/call':>12} {'wall ms/call':>13} {'calls':>6}")
    for workers in ranks:
        for kind in ("steady", "refill"):
            states = [engine_state(workers, kind, seed) for seed in range(5)]
            free = np.mean([s["free"].sum() for s in states])
            for name, run in calls().items():
                if (
                    name == "bfio_exact"
                    and max(len(s["prompts"]) * np.count_nonzero(s["free"]) for s in states) > limit
                ):
                    print(f"{workers:>4} {kind:>7} {free:>5.0f} {name:<18} {'above size_limit ' + str(limit):>27}")
                    continue
                cpu, wall, count = time_call(run, states, budget)
                print(
                    f"{workers:>4} {kind:>7} {free:>5.0f} {name:<18} {cpu * 1e3:>12.3f} {wall * 1e3:>13.3f} {count:>6}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sections = ["engine", "policies", "run", "open", "calls"]
    parser.add_argument("sections", nargs="*", choices=sections, help="default: all")
    parser.add_argument("--workers", default="16,64,256", help="G values, comma-separated")
    parser.add_argument("--requests-per-slot", type=float, default=None, help="default: 10 (engine), 1.5 (policies)")
    parser.add_argument("--rounds", type=int, default=3, help="policies: interleaved rounds")
    parser.add_argument("--requests", type=int, default=10_000, help="run: requests")
    parser.add_argument("--horizon", type=float, default=30.0, help="open: simulated seconds per run")
    parser.add_argument("--budget", type=float, default=0.5, help="calls: wall seconds per function and state kind")
    args = parser.parse_args()
    ranks = [int(g) for g in args.workers.split(",")]
    sections = args.sections or sections
    if "engine" in sections:
        engine_section(ranks, args.requests_per_slot or 10.0)
    if "policies" in sections:
        policies_section(ranks, args.requests_per_slot or 1.5, args.rounds)
    if "run" in sections:
        run_section(args.requests)
    if "open" in sections:
        open_section(args.horizon, args.rounds)
    if "calls" in sections:
        calls_section(ranks, args.budget)


if __name__ == "__main__":
    main()
