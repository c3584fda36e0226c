"""Engine throughput and memory: jobs per wall second by router, scaling in B, peak memory.

    python benchmarks/bench_engine.py            # everything
    python benchmarks/bench_engine.py routers    # jobs/s of every router on scenarios/bench.toml
    python benchmarks/bench_engine.py scaling    # power_of_d, 16 vs 1024 backends
    python benchmarks/bench_engine.py memory     # peak RSS of a 5-million-job run with job records
    python benchmarks/bench_engine.py instructions  # the same scaling in CPU instructions per job (valgrind)

Figures are simulated jobs per wall second of the whole ``lbsim.simulate``
call (set-up, run, DataFrames), best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import lbsim
from lbsim.routers import ROUTERS

ROOT = Path(__file__).resolve().parent.parent


#: A benchmark counts the jobs that arrive: no drain after the horizon, whose later arrivals go unmeasured
#: (and an older lbsim, measured by ``bench_routers.py --before``, has no such key).
NO_DRAIN = {"drain": False} if "drain" in lbsim.scenario.SimulationTable.model_fields else {}
NO_DRAIN_SET = [f"simulation.drain={str(v).lower()}" for v in NO_DRAIN.values()]


def jobs_per_second(scenario, router: str, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        result = lbsim.simulate(scenario, router=router)
        best = max(best, result.counts["jobs_arrived"] / (time.perf_counter() - started))
    return best


def bench_routers(repeat: int) -> None:
    overrides = ["simulation.horizon=200", *NO_DRAIN_SET]
    scenario = lbsim.load_scenario(ROOT / "scenarios" / "bench.toml", overrides, warn=False)
    print(f"scenarios/bench.toml (4 frontends, 16 backends, delayed telemetry), horizon 200 s, best of {repeat}")
    for name in sorted(ROUTERS):
        try:
            rate = jobs_per_second(scenario, name, repeat)
        except lbsim.ScenarioError as exc:  # a router needing parameters the scenario lacks
            print(f"  {name:<16} skipped ({exc})")
            continue
        print(f"  {name:<16} {rate:>10,.0f} jobs/s")


def wide_scenario(backends: int, jobs: int, capacity: float | None = None) -> lbsim.Scenario:
    """4 frontends, ``backends`` saturating PS backends at 75% load, 5-80 ms delays, delayed telemetry.

    ``capacity`` is the total (default 3 per backend): holding it fixed while
    ``backends`` grows keeps the traffic, and so the jobs in flight, the same.
    """
    rng = np.random.default_rng(3)
    capacity = 3.0 * backends if capacity is None else capacity
    c = capacity / backends
    sbar = 0.05
    horizon = jobs * sbar / (0.75 * capacity)
    return lbsim.Scenario.from_dict(
        {
            "simulation": {
                "horizon": horizon, "warmup": horizon / 10, "job_scale": sbar, "sample_interval": horizon / 20,
                **NO_DRAIN,
            },
            "frontends": [{"rate": 0.75 * capacity / 4}] * 4,
            "backends": [{"service": {"kind": "saturating", "c": c, "k": c / 3}}] * backends,
            "network": {"delay": rng.uniform(0.005, 0.08, size=(4, backends)).tolist()},
            "router": {"name": "power_of_d", "d": 2},
        }
    )  # fmt: skip


def bench_scaling(repeat: int, jobs: int = 200_000) -> None:
    """Per-job cost at 16 and 1024 backends, at two traffic levels.

    At a fixed traffic the number of jobs in flight is the same, so the
    difference is what the number of backends costs; at a fixed load per
    backend, 1024 backends also carry 64 times the traffic (bigger event heap,
    bigger working set), which costs the same with 16 backends.
    """
    print(f"power_of_d (d=2), 4 frontends, {jobs} jobs, 75% load, delayed telemetry, best of {repeat}")
    for label, capacity in (("total capacity 48 (same traffic)", 48.0), ("total capacity 3072 (same traffic)", 3072.0)):
        scenarios = {b: wide_scenario(b, jobs, capacity) for b in (16, 1024)}
        rates = dict.fromkeys(scenarios, 0.0)
        for _ in range(repeat):  # interleaved, so that a drift of the machine's speed hits both
            for b, scenario in scenarios.items():
                rates[b] = max(rates[b], jobs_per_second(scenario, "power_of_d", 1))
        cells = "  ".join(f"{b:>4} backends {r:>8,.0f} jobs/s ({1e6 / r:5.2f} us/job)" for b, r in rates.items())
        print(f"  {label:<36} {cells}  change {rates[16] / rates[1024] - 1:+.1%}")
    print("  target: per-job cost within 25% from 16 to 1024 backends at the same traffic")


MEMORY_CHILD = """
import resource, sys, time, lbsim
jobs = int(sys.argv[1])
rate = 3.0
s = lbsim.Scenario.from_dict({
    "simulation": {"horizon": jobs * 0.01 / rate, "warmup": 1.0, "job_scale": 0.01, "sample_interval": 10.0,
                   "drain": False},
    "frontends": [{"rate": rate}],
    "backends": [{"service": {"kind": "saturating", "c": 2.0, "k": 1.0}}] * 2,
    "router": {"name": "random"},
})
t = time.perf_counter()
r = lbsim.simulate(s)
r.summary()
print(r.counts["jobs_arrived"], len(r.jobs), time.perf_counter() - t,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_memory(jobs: int = 5_000_000) -> None:
    print(f"peak memory of one run with {jobs:,} jobs and job records (fresh process)")
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(jobs)], capture_output=True, text=True, check=True)
    arrived, recorded, seconds, peak_mib = out.stdout.split()
    print(f"  jobs arrived {int(arrived):,}, job records {int(recorded):,}, {float(seconds):.1f} s")
    print(f"  peak RSS {float(peak_mib):,.0f} MiB (target < 1.5 GB = 1430 MiB)")


INSTRUCTIONS_CHILD = """
import sys
sys.path.insert(0, {here!r})
from bench_engine import wide_scenario
import lbsim
backends, jobs = int(sys.argv[1]), int(sys.argv[2])
scenario = wide_scenario(backends, max(jobs, 1000), capacity=48.0)
if jobs:
    lbsim.simulate(scenario)
"""


def bench_instructions(jobs: int = 40_000) -> None:
    """Instructions per job under callgrind: the same on a busy or a quiet machine.

    Each count is the difference between a run of ``jobs`` jobs and a run of
    none, so start-up and imports cancel out.
    """
    import _callgrind

    if not _callgrind.available():
        print("instructions: valgrind not installed (apt-get install valgrind)")
        return
    child = INSTRUCTIONS_CHILD.format(here=str(Path(__file__).resolve().parent))

    def count(backends: int, n: int) -> int:
        return _callgrind.instructions(child, str(backends), str(n))

    print(f"power_of_d (d=2), total capacity 48: CPU instructions per job under callgrind ({jobs} jobs minus none)")
    per_job = {}
    for backends in (16, 1024):
        per_job[backends] = (count(backends, jobs) - count(backends, 0)) / jobs
        print(f"  {backends:>5} backends  {per_job[backends]:>10,.0f} instructions/job")
    print(f"  change 16 -> 1024 backends: {per_job[1024] / per_job[16] - 1:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="*", default=["routers", "scaling", "memory"])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for what in args.what:
        {"routers": lambda: bench_routers(args.repeat), "scaling": lambda: bench_scaling(args.repeat),
         "memory": bench_memory, "instructions": bench_instructions}[what]()  # fmt: skip


if __name__ == "__main__":
    main()
