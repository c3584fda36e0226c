"""Job-size scaling down to 0.001: the table, the wall time and the peak memory.

Runs :func:`lbsim.scaling.scaling` on ``scenarios/fluid_burst.toml`` (DGD-LB,
100 s, a load burst; about a million jobs per run at scale 0.001) on seeds
1..N, and prints the per-scale table, the fitted slopes, the total wall time
and the peak resident memory of the process (``resource.getrusage``). Runs
are sequential by default (``--workers`` to use processes; peak RSS is then
that of this process only).

    python benchmarks/bench_scaling.py [--scenario scenarios/fluid_burst.toml] [--seeds 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import time

import lbsim
from lbsim.scaling import scaling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="scenarios/fluid_burst.toml")
    parser.add_argument("--router", default=None)
    parser.add_argument("--scales", default="1,0.1,0.01,0.001")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    scenario = lbsim.load_scenario(args.scenario)
    scales = [float(s) for s in args.scales.split(",")]
    started = time.perf_counter()
    result = scaling(scenario, args.router, scales, args.seeds, out=args.out, progress=True, workers=args.workers)
    wall = time.perf_counter() - started
    print(result.format_table())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    biggest = result.runs[result.runs["scale"] == min(scales)]
    print(f"wall {wall:.1f} s for {len(result.runs)} runs (fluid model {result.fluid.wall_seconds:.2f} s)")
    print(
        f"scale {min(scales):g}: {biggest['jobs_arrived'].mean():,.0f} jobs per run, "
        f"{biggest['jobs_per_second'].mean():,.0f} jobs per wall second"
    )
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
