"""Prequal against jsq on scenarios/bench.toml: jobs per CPU second, interleaved in one process, median ratio.

    python benchmarks/bench_prequal.py [horizon] [rounds]
    python benchmarks/bench_prequal.py instructions   # CPU instructions per job under callgrind (valgrind)

CPU time (``time.process_time``) of the whole ``lbsim.simulate`` call; the
two routers alternate within each round, so a busy machine slows both alike,
and the figure is the median of the per-round ratios. Instruction counts do
not move with the machine's load: each is the difference between runs of
two horizons, so start-up and imports cancel out.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import lbsim

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "bench.toml"

INSTRUCTIONS_CHILD = """
import sys
import lbsim
scenario = lbsim.load_scenario(sys.argv[1], ["simulation.horizon=" + sys.argv[3], "simulation.warmup=1"], warn=False)
lbsim.simulate(scenario, router=sys.argv[2])
"""


def bench_cpu(horizon: float, rounds: int) -> None:
    scenario = lbsim.load_scenario(SCENARIO, [f"simulation.horizon={horizon}"], warn=False)
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"jsq": [], "prequal": []}
    for r in range(rounds):
        per = {}
        for router in ("jsq", "prequal") if r % 2 == 0 else ("prequal", "jsq"):
            started = time.process_time()
            result = lbsim.simulate(scenario, router=router)
            per[router] = result.counts["jobs_arrived"] / (time.process_time() - started)
            rates[router].append(per[router])
        ratios.append(per["prequal"] / per["jsq"])
        print(f"round {r}: jsq {per['jsq']:,.0f} prequal {per['prequal']:,.0f} jobs/CPU s, ratio {ratios[-1]:.3f}")
    print(f"median: jsq {statistics.median(rates['jsq']):,.0f} prequal {statistics.median(rates['prequal']):,.0f}"
          f" jobs/CPU s, ratio {statistics.median(ratios):.3f}")  # fmt: skip


def bench_instructions(short: float = 2.0, long: float = 7.0) -> None:
    """Instructions per job: (count(long) - count(short)) / (jobs(long) - jobs(short)), for jsq and prequal."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _callgrind

    if not _callgrind.available():
        print("instructions: valgrind not installed (apt-get install valgrind)")
        return

    def jobs(horizon: float) -> int:
        sc = lbsim.load_scenario(SCENARIO, [f"simulation.horizon={horizon}", "simulation.warmup=1"], warn=False)
        return int(lbsim.simulate(sc, router="jsq").counts["jobs_arrived"])

    extra = jobs(long) - jobs(short)  # arrivals do not depend on the router
    per_job = {}
    for router in ("jsq", "prequal"):
        counts = [_callgrind.instructions(INSTRUCTIONS_CHILD, str(SCENARIO), router, str(h)) for h in (short, long)]
        per_job[router] = (counts[1] - counts[0]) / extra
        print(f"{router:>8}: {per_job[router]:>10,.0f} instructions/job (horizon {long} minus {short}: {extra} jobs)")
    print(f"   ratio: {per_job['jsq'] / per_job['prequal']:.3f} (jobs per instruction, prequal / jsq)")


def main() -> None:
    if sys.argv[1:2] == ["instructions"]:
        bench_instructions()
        return
    horizon = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    bench_cpu(horizon, rounds)


if __name__ == "__main__":
    main()
