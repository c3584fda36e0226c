"""Wall time of the fluid model: 100 frontends x 1000 backends, dense, 5-80 ms delays, 1000 s of model time.

Also (``--case stiff``, and printed first by default) issue 13's stiff case:
GMSR on 2 frontends x 3 backends with no network delay, 200 s of model time,
which lbsim integrates with LSODA (lbsim/fluid/stiff.py); target: under a
second. ``--compare-heun`` also runs Heun's method at its default step (about
1.5 million steps, minutes) for the before/after.

Target: under 30 s for DGD-LB. The scenario is built here (seeded): saturating
backends ``c ~ U(1, 3)``, ``k = 1`` (so ``mu'(0) <= 3/s``), one-way delays
``U(5, 80)`` ms on every edge, demand 70% of the total capacity split evenly
over the frontends. The time step is the fluid model's default for the
router: for DGD-LB ``min(0.1 / max mu'(0), interval)`` snapped to the tick
grid, i.e. ``0.1/3 s`` (30 000 steps, 10 000 gradient ticks); delays need no
resolving because arrivals are integrated exactly and observations are
interpolated (lbsim/fluid/integrator.py). The split history is not recorded (it would
be 1000 x 100 x 1000 numbers); the load history is.

DGD-LB's step is 0.001: with 100 frontends all moving flow onto the same
cheap backends, the loop gain of a backend is about ``step * (total demand) *
d/dx[1/mu']``, 100 times one frontend's, and the default 0.05 (like 0.004)
oscillates here while 0.001 settles. The work per tick is the same either
way. Wall and CPU time are both printed: on a shared machine they differ.

``--case short`` is the same 2 x 3 GMSR with 1 ms one-way delays, 200 s: short
herding loops go to LSODA too (lbsim/fluid/stiff.py,
``short_delays``); before, Heun's method at half the delay (400 000 steps).

``--interleave BEFORE_DIR`` measures before/after: it runs each case in a
subprocess alternately with ``PYTHONPATH=BEFORE_DIR`` (an older lbsim
checkout) and with this checkout, ``--rounds`` times, and prints the median
CPU time (the child's user + system) and wall time of each and the per-round
CPU ratios: on a shared machine CPU time is the steadier measure.

    python benchmarks/bench_fluid.py [--case both|stiff|short|big] [--router dgdlb] [--horizon 1000] [--dt DT]
    python benchmarks/bench_fluid.py --interleave /tmp/before --rounds 3 [--case ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import lbsim
from lbsim.fluid import default_time_step, fluid


def big_scenario(frontends: int = 100, backends: int = 1000, seed: int = 7, utilisation: float = 0.7) -> lbsim.Scenario:
    rng = np.random.default_rng(seed)
    capacity = rng.uniform(1.0, 3.0, backends)
    delay = rng.uniform(0.005, 0.080, (frontends, backends))
    demand = utilisation * capacity.sum() / frontends
    return lbsim.Scenario.from_dict(
        {
            "name": "fluid_bench",
            "simulation": {"horizon": 1000.0, "warmup": 100.0, "sample_interval": 1.0},
            "frontends": [{"rate": float(demand)} for _ in range(frontends)],
            "backends": [{"service": {"kind": "saturating", "c": float(c), "k": 1.0}} for c in capacity],
            "network": {"delay": delay.tolist()},
            "router": {"name": "dgdlb"},
        }
    )


def stiff_scenario() -> lbsim.Scenario:
    """Issue 13: two frontends, three unlike backends, no delay, GMSR (tests/test_fluid.py's HETEROGENEOUS)."""
    services = [
        {"kind": "saturating", "c": 4.0, "k": 2.0},
        {"kind": "saturating", "c": 3.0, "k": 1.0},
        {"kind": "exponential", "c": 2.5, "k": 1.5},
    ]
    return lbsim.Scenario.from_dict(
        {
            "name": "fluid_stiff",
            "simulation": {"horizon": 200.0, "warmup": 0.0, "sample_interval": 1.0},
            "frontends": [{"rate": 3.0}, {"rate": 2.5}],
            "backends": [{"service": s} for s in services],
            "network": {"delay": 0.0},
            "router": {"name": "gmsr"},
        }
    )


def run_stiff(compare_heun: bool) -> None:
    scenario = stiff_scenario()
    runs = [("default", None)]
    if compare_heun:
        runs.append(("heun", default_time_step(scenario)))
    for label, dt in runs:
        cpu, started = _cpu_seconds(), time.perf_counter()
        result = fluid(scenario, dt=dt)
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        print(
            f"fluid gmsr 2 x 3, no delay, 200 s ({label}): {getattr(result, 'method', 'heun')}, {result.steps} steps "
            f"(mean step {result.dt:.3g} s), wall {wall:.2f} s, CPU {cpu:.2f} s; "
            f"final load {np.round(result.final_load, 6).tolist()}"
        )


def run_short(delays: tuple[float, ...] = (0.001,)) -> None:
    for delay in delays:
        scenario = stiff_scenario().replace(**{"network.delay": delay})
        cpu, started = _cpu_seconds(), time.perf_counter()
        result = fluid(scenario)
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        print(
            f"fluid gmsr 2 x 3, delay {delay * 1000:g} ms, 200 s: {getattr(result, 'method', 'heun')}, "
            f"{result.steps} steps, "
            f"wall {wall:.2f} s, CPU {cpu:.2f} s; final load {np.round(result.final_load, 4).tolist()}"
        )


def interleave(before: str, cases: list[str], rounds: int, extra: list[str]) -> None:
    """Each case in subprocesses, before and after alternately; medians of CPU and wall, per-round CPU ratios."""
    after = str(Path(__file__).resolve().parent.parent)
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(rounds):
        for case in cases:
            for label, path in (
                (("before", before), ("after", after)) if r % 2 == 0 else (("after", after), ("before", before))
            ):
                env = {**os.environ, "PYTHONPATH": path}
                command = [sys.executable, __file__, "--case", case, *extra]
                cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                wall = time.perf_counter() - started
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu_s = used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime
                figures.setdefault((case, label), []).append((cpu_s, wall))
                last = done.stdout.strip().splitlines()[-1:] or done.stderr.strip().splitlines()[-1:]
                print(f"round {r} {case} {label}: CPU {cpu_s:.2f} s, wall {wall:.2f} s | {last[0] if last else ''}",
                      flush=True)  # fmt: skip
    for case in cases:
        b, a = figures[(case, "before")], figures[(case, "after")]
        ratios = [x[0] / y[0] for x, y in zip(b, a)]
        print(
            f"{case}: before CPU {statistics.median(x[0] for x in b):.2f} s"
            f" wall {statistics.median(x[1] for x in b):.2f} s; after CPU {statistics.median(x[0] for x in a):.2f} s"
            f" wall {statistics.median(x[1] for x in a):.2f} s;"
            f" before/after CPU per round {', '.join(f'{q:.2f}' for q in ratios)}"
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["both", "stiff", "short", "big"], default="both")
    parser.add_argument("--interleave", metavar="BEFORE_DIR", help="before/after in subprocesses (module docstring)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-heun", action="store_true", help="stiff case: also Heun's method (minutes)")
    parser.add_argument("--router", default="dgdlb")
    parser.add_argument("--horizon", type=float, default=1000.0)
    parser.add_argument("--dt", type=float, default=None)
    parser.add_argument(
        "--step",
        type=float,
        default=0.001,
        help="DGD-LB step: 0.001 is stable here; the default 0.05 is not (the loop gain grows with the demand)",
    )
    parser.add_argument("--frontends", type=int, default=100)
    parser.add_argument("--backends", type=int, default=1000)
    args = parser.parse_args()
    if args.interleave:
        cases = ["stiff", "short", "big"] if args.case == "both" else [args.case]
        extra = ["--horizon", str(args.horizon)] if args.horizon != 1000.0 else []
        interleave(args.interleave, cases, args.rounds, extra)
        return
    if args.case == "short":
        run_short()
        return
    if args.case in ("both", "stiff"):
        run_stiff(args.compare_heun)
    if args.case == "stiff":
        return

    built = time.perf_counter()
    scenario = big_scenario(args.frontends, args.backends)
    built = time.perf_counter() - built
    params = {"step": args.step} if args.router == "dgdlb" else {}
    cpu = _cpu_seconds()
    started = time.perf_counter()
    result = fluid(scenario, router=args.router, horizon=args.horizon, dt=args.dt, record_split=False, **params)
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"fluid {args.router}: {args.frontends} x {args.backends} dense, {args.horizon:g} s of model time, "
        f"dt = {result.dt:.4g} s ({result.steps} steps)"
    )
    print(f"  wall {wall:.2f} s ({1e6 * wall / result.steps:.0f} us/step), CPU {cpu:.2f} s")
    print(f"  scenario built in {built:.2f} s")
    print(f"  peak RSS {peak:.0f} MiB")
    print(f"  final total load {result.final_load.sum():.4f}, fluid mean latency {result.mean_latency():.5f} s")


if __name__ == "__main__":
    main()
