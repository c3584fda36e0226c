"""Speed of the llm engine: saturated steps and requests per second; open-mode global jobs per second.

    python benchmarks/bench_llm.py             # both sections
    python benchmarks/bench_llm.py saturated   # one engine, every request waiting at t = 0
    python benchmarks/bench_llm.py open        # scenarios/llm_dp_global.toml under least_tokens and dgdlb

``saturated``: G = 16, 64, 256 ranks of B = 72 slots under fcfs and jsq, on
the BF-IO paper's synthetic workload (bivariate normal tokens), 10 requests
per slot. ``open``: the six engines of ``scenarios/llm_dp_global.toml`` behind
a global router, ``--horizon`` seconds; jobs (requests) per second of the
whole ``lbsim.simulate`` call in CPU and wall time, the median of ``--rounds``
rounds that interleave the routers (a drift of the machine's speed hits both).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import lbsim
from lbsim.llm import LLMParams, make_tokens, run_saturated

ROOT = Path(__file__).resolve().parent.parent


def bench_saturated(requests_per_slot: float, workers_list: str) -> None:
    slots = 72
    header = f"{'G':>5} {'admission':>10} {'requests':>9} {'steps':>7} {'wall s':>8} {'cpu s':>8}"
    print(f"{header} {'steps/s':>9} {'requests/s':>11}")
    for workers in (int(g) for g in workers_list.split(",")):
        n = int(requests_per_slot * workers * slots)
        prompt, output = make_tokens({"kind": "normal"}).sample(np.random.default_rng(1), n)
        for admission in ("fcfs", "jsq"):
            params = LLMParams.from_spec({"workers": workers, "slots": slots, "admission": {"name": admission}})
            wall, cpu = time.perf_counter(), time.process_time()
            result = run_saturated(params, prompt, output, 1)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            steps = result.summary["steps"]
            rates = f"{steps / wall:>9.0f} {n / wall:>11.0f}"
            print(f"{workers:>5} {admission:>10} {n:>9} {steps:>7} {wall:>8.2f} {cpu:>8.2f} {rates}")


def bench_open(horizon: float, rounds: int, routers: tuple[str, ...] = ("least_tokens", "dgdlb")) -> None:
    """Jobs per CPU and wall second of an open-mode global run, median of interleaved rounds."""
    overrides = [f"simulation.horizon={horizon}", f"simulation.warmup={horizon / 5}"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", default=["saturated", "open"], choices=["saturated", "open"])
    parser.add_argument("--requests-per-slot", type=float, default=10.0)
    parser.add_argument("--workers", default="16,64,256")
    parser.add_argument("--horizon", type=float, default=30.0, help="open: simulated seconds per run (default 30)")
    parser.add_argument("--rounds", type=int, default=5, help="open: interleaved rounds (default 5)")
    args = parser.parse_args()
    for what in args.what:
        if what == "saturated":
            bench_saturated(args.requests_per_slot, args.workers)
        else:
            bench_open(args.horizon, args.rounds)


if __name__ == "__main__":
    main()
