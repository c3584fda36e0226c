"""Per-job CPU cost of every registered router at 16, 128 and 1024 backends, traffic scaled with the fleet.

    python benchmarks/bench_routers.py                    # every router, delayed telemetry: a markdown table
    python benchmarks/bench_routers.py --routers jsq --telemetry instant,delayed --sizes 16,128
    python benchmarks/bench_routers.py scale              # power_of_d: 1024 backends at 64x the traffic vs 16
    git worktree add /tmp/before 9500516                  # an older lbsim to compare with, then:
    python benchmarks/bench_routers.py --before /tmp/before   # each cell before -> after, interleaved

The fleet is :func:`bench_engine.wide_scenario`: 4 frontends, saturating PS
backends at 75% load, 5-80 ms delays; each backend has the same capacity, so
traffic grows with the fleet (1024 backends carry 64 times the jobs per
second of 16) and a run is a fixed number of jobs. A figure is the CPU time
(``time.process_time``: the other processes on a shared machine do not count)
of ``Simulation.run`` divided by the jobs that arrived, in microseconds.
Rounds are interleaved (every router and size once per round), so that a
drift of the machine's speed hits every cell alike; a cell is the median of
its rounds. With ``--before TREE`` the same cells are measured on the lbsim
of another source tree too, in a worker process that imports it (one
process per tree: a Python process imports one lbsim), interleaved cell by
cell with this tree's, and each cell shows both medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import wide_scenario

import lbsim
from lbsim.engine import Simulation
from lbsim.routers import ROUTERS


def cpu_per_job(scenario: lbsim.Scenario, router: str) -> float:
    """CPU microseconds per arrived job of one run (set-up excluded, result tables included)."""
    sim = Simulation(scenario, router=router)
    started = time.process_time()
    result = sim.run()
    return 1e6 * (time.process_time() - started) / result.counts["jobs_arrived"]


class Worker:
    """This script in another process with another source tree's lbsim first on its path: measures cells on request."""

    def __init__(self, tree: str):
        env = os.environ | {"PYTHONPATH": str(Path(tree).resolve())}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "worker"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def cpu_per_job(self, router: str, backends: int, telemetry: str, jobs: int) -> float:
        """The cell's figure in the other tree; NaN where that lbsim cannot run it (no such router...)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{router} {backends} {telemetry} {jobs}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


def serve() -> None:
    """The worker's loop: one ``router backends telemetry jobs`` line in, one figure out."""
    for line in sys.stdin:
        router, backends, telemetry, jobs = line.split()
        scenario = wide_scenario(int(backends), int(jobs)).replace(**{"network.telemetry": telemetry})
        try:
            value = cpu_per_job(scenario, router)
        except Exception:  # a router this lbsim does not have, or parameters the fleet lacks
            value = float("nan")
        print(value, flush=True)


def table(routers: list[str], sizes: list[int], telemetry: str, jobs: int, rounds: int, before: str | None) -> dict:
    scenarios = {b: wide_scenario(b, jobs).replace(**{"network.telemetry": telemetry}) for b in sizes}
    worker = Worker(before) if before else None
    cells: dict[tuple[str, int], list[float]] = {}
    old: dict[tuple[str, int], list[float]] = {}
    skipped: dict[str, str] = {}
    for _ in range(rounds):
        for name in routers:
            if name in skipped:
                continue
            for b, scenario in scenarios.items():
                try:
                    cells.setdefault((name, b), []).append(cpu_per_job(scenario, name))
                except lbsim.ScenarioError as exc:  # a router needing parameters the fleet lacks
                    skipped[name] = str(exc)
                    break
                if worker is not None:
                    old.setdefault((name, b), []).append(worker.cpu_per_job(name, b, telemetry, jobs))
    if worker is not None:
        worker.close()
    medians = {key: statistics.median(values) for key, values in cells.items() if key[0] not in skipped}
    print(f"\n{telemetry} telemetry, {jobs:,} jobs per run, median of {rounds} interleaved rounds, CPU us per job")
    if worker is not None:
        print(f"(each cell: before ({before}) -> now, and now / before; spread: min-max of the rounds)")
    print()
    print("| router | " + " | ".join(f"{b} backends" for b in sizes) + f" | {sizes[-1]} / {sizes[0]} |")
    print("| --- |" + " ---: |" * (len(sizes) + 1))
    for name in routers:
        if name in skipped:
            print(f"| {name} | skipped: {skipped[name]} |")
            continue
        row = [medians[name, b] for b in sizes]
        if worker is None:
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + f" | {row[-1] / row[0]:.2f} |")
            continue
        then = [statistics.median(old[name, b]) for b in sizes]
        text = [
            f"{t:.1f} -> {v:.1f} ({v / t:.2f}x; {min(cells[name, b]):.1f}-{max(cells[name, b]):.1f})"
            for t, v, b in zip(then, row, sizes)
        ]
        print(f"| {name} | " + " | ".join(text) + f" | {then[-1] / then[0]:.2f} -> {row[-1] / row[0]:.2f} |")
    return medians


def scale(jobs: int, rounds: int) -> None:
    """power_of_d at 1024 backends with 64x the traffic against 16 backends (the same load per backend)."""
    scenarios = {b: wide_scenario(b, jobs) for b in (16, 1024)}
    costs: dict[int, list[float]] = {16: [], 1024: []}
    for _ in range(rounds):
        for b, scenario in scenarios.items():
            costs[b].append(cpu_per_job(scenario, "power_of_d"))
    ratios = [big / small for small, big in zip(costs[16], costs[1024])]
    print(f"\npower_of_d (d=2), delayed telemetry, {jobs:,} jobs, 75% load per backend, {rounds} interleaved rounds")
    for b, values in costs.items():
        rounds_text = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {b:>5} backends  median {statistics.median(values):6.2f} us/job  ({rounds_text})")
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  1024 / 16 per round: {per_round}; median {statistics.median(ratios) - 1:+.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="table", choices=["table", "scale", "worker"])
    parser.add_argument("--routers", default=",".join(sorted(ROUTERS)))
    parser.add_argument("--sizes", default="16,128,1024")
    parser.add_argument("--telemetry", default="delayed", help="comma-separated telemetry modes")
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another lbsim source tree to measure each cell on too (a git worktree)")
    args = parser.parse_args()
    if args.what == "worker":
        serve()
        return
    if args.what == "scale":
        scale(args.jobs * 5, args.rounds)
        return
    sizes = [int(b) for b in args.sizes.split(",")]
    for telemetry in args.telemetry.split(","):
        table(args.routers.split(","), sizes, telemetry, args.jobs, args.rounds, args.before)


if __name__ == "__main__":
    main()
