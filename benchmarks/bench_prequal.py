"""Prequal against jsq on scenarios/bench.toml: jobs per CPU second, interleaved in one process, median ratio.

    python benchmarks/bench_prequal.py [horizon] [rounds]

CPU time (``time.process_time``) of the whole ``lbsim.simulate`` call; the
two routers alternate within each round, so a busy machine slows both alike.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import lbsim

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "bench.toml"


def main() -> None:
    horizon = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
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


if __name__ == "__main__":
    main()
