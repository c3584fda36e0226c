"""M/M/1 FIFO at load 0.9: simulated jobs per wall second of lbsim.simulate against a heapq floor.

The floor is the smallest honest pure-Python M/M/1 event loop (a heap of
(time, kind) and random.expovariate), run in the same process, so the ratio
does not depend on the machine. Each is run ``--repeat`` times, interleaved,
and the best of each is reported (the least disturbed by other load), with
the spread of the ratio over the rounds.

On a shared virtual machine wall-clock speeds drift by up to a factor of two
within minutes, so ``--instructions`` also counts CPU instructions per job of
both under callgrind (valgrind), which other load does not disturb. The
ratio in instructions is an upper bound of the one in time: lbsim touches
more memory per job than the floor's tiny loop, so it also waits on caches.

    python benchmarks/bench_mm1.py [--jobs 300000] [--repeat 5] [--instructions]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from pathlib import Path

import lbsim


def heapq_floor(jobs: int, load: float = 0.9, seed: int = 1) -> float:
    """Customers per second of a minimal heapq M/M/1 FIFO loop."""
    rnd = random.Random(seed)
    events = [(rnd.expovariate(load), 0)]
    in_system = done = 0
    started = time.perf_counter()
    while done < jobs:
        t, kind = heapq.heappop(events)
        if kind == 0:  # arrival
            heapq.heappush(events, (t + rnd.expovariate(load), 0))
            in_system += 1
            if in_system == 1:
                heapq.heappush(events, (t + rnd.expovariate(1.0), 1))
        else:  # departure
            in_system -= 1
            done += 1
            if in_system:
                heapq.heappush(events, (t + rnd.expovariate(1.0), 1))
    return jobs / (time.perf_counter() - started)


def mm1_scenario(jobs: int, load: float = 0.9) -> lbsim.Scenario:
    horizon = jobs / load
    return lbsim.Scenario.from_dict(
        {
            "name": "mm1",
            "simulation": {
                "horizon": horizon, "warmup": horizon / 10, "seed": 1, "sample_interval": horizon / 100,
                "drain": False,  # (a benchmark counts the jobs that arrive: no unmeasured ones after the horizon)
            },
            "frontends": [{"rate": load}],
            "backends": [{"discipline": "fifo", "service": {"kind": "constant", "c": 1.0}}],
            "router": {"name": "random"},
        }
    )


def lbsim_rate(scenario: lbsim.Scenario) -> tuple[float, dict]:
    started = time.perf_counter()
    result = lbsim.simulate(scenario)
    elapsed = time.perf_counter() - started
    return result.counts["jobs_arrived"] / elapsed, result.summary()


INSTRUCTIONS_CHILD = """
import sys
sys.path.insert(0, {here!r})
from bench_mm1 import heapq_floor, lbsim_rate, mm1_scenario
what, jobs = sys.argv[1], int(sys.argv[2])
heapq_floor(jobs) if what == "floor" else lbsim_rate(mm1_scenario(jobs))
"""


def instructions_per_job(jobs: int) -> dict[str, float]:
    """Instructions per job of each, the difference of runs of ``jobs`` and ``jobs // 3`` jobs
    (start-up, imports and the fixed costs of a run cancel out)."""
    import _callgrind

    child = INSTRUCTIONS_CHILD.format(here=str(Path(__file__).resolve().parent))
    small = jobs // 3
    return {
        what: (_callgrind.instructions(child, what, str(jobs)) - _callgrind.instructions(child, what, str(small)))
        / (jobs - small)
        for what in ("floor", "lbsim")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="also count instructions per job (valgrind)")
    args = parser.parse_args()
    scenario = mm1_scenario(args.jobs)
    floors, rates = [], []
    for _ in range(args.repeat):
        floors.append(heapq_floor(args.jobs))
        rate, summary = lbsim_rate(scenario)
        rates.append(rate)
    floor, rate = max(floors), max(rates)
    rounds = [r / f for r, f in zip(rates, floors)]
    print(f"M/M/1 FIFO, load 0.9, {args.jobs} jobs, best of {args.repeat} interleaved rounds")
    print(f"  heapq floor       {floor:>10,.0f} customers/s")
    print(f"  lbsim.simulate    {rate:>10,.0f} jobs/s  (end to end: build, run, DataFrames)")
    print(f"  ratio             {rate / floor:>10.1%}  (target >= 40%)")
    print(f"  ratio by round    {statistics.median(rounds):>10.1%}  median ({min(rounds):.1%} .. {max(rounds):.1%})")
    print(f"  mean latency      {summary['mean_latency']:.3f} s (theory 1/(c - lambda) = 10)")
    if args.instructions:
        import _callgrind

        if not _callgrind.available():
            print("  instructions: valgrind not installed (apt-get install valgrind)")
            return
        jobs = min(args.jobs, 60_000)  # callgrind runs some 50 times slower
        per_job = instructions_per_job(jobs)
        print(f"  CPU instructions per job under callgrind ({jobs} jobs minus {jobs // 3})")
        print(f"    heapq floor     {per_job['floor']:>10,.0f}")
        print(f"    lbsim.simulate  {per_job['lbsim']:>10,.0f}")
        print(f"    ratio           {per_job['floor'] / per_job['lbsim']:>10.1%}")


if __name__ == "__main__":
    main()
