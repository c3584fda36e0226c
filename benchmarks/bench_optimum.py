"""The centralized optimum at scale: 100 frontends x 1000 backends, dense.

Random one-way delays of 5-80 ms, every rate family in turn across the
backends (random parameters), total demand 70% of the total capacity (an
unbounded family counts its rate at load 4). Prints the wall time of
``lbsim.optimum.solve`` (best of ``--repeat``, the least disturbed by other
load on the machine) and its CPU time (all threads: steadier on a shared
machine; ``LBSIM_BLAS_THREADS=0`` leaves the BLAS pools at their size), its Newton
iterations, and the largest KKT violation:
the relative excess of a used edge's cost ``2 d_ij + pi_j`` over its
frontend's cheapest edge.

    python benchmarks/bench_optimum.py [--frontends 100] [--backends 1000] [--load 0.7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from lbsim.optimum import kkt_violation, solve
from lbsim.rates import RateFamily, make_rate

KINDS = ("saturating", "exponential", "batch", "servers", "constant", "power", "linear")


def backend(rng: np.random.Generator, kind: str) -> RateFamily:
    c, k = float(rng.uniform(2.0, 10.0)), float(rng.uniform(0.5, 5.0))
    params = {
        "saturating": {"c": c, "k": k},
        "exponential": {"c": c, "k": k},
        "batch": {"a": float(rng.uniform(0.02, 0.2)), "b": 1.0 / c},
        "servers": {"r": float(rng.uniform(0.5, 2.0)), "k": k},
        "constant": {"c": c},
        "power": {"c": c, "a": float(rng.uniform(0.3, 0.9))},
        "linear": {"r": float(rng.uniform(0.5, 2.0))},
    }[kind]
    return make_rate({"kind": kind, **params})


def instance(frontends: int, backends: int, load: float, seed: int):
    rng = np.random.default_rng(seed)
    rates = [backend(rng, KINDS[j % len(KINDS)]) for j in range(backends)]
    capacity = sum(r.supremum if math.isfinite(r.supremum) else float(r.value(4.0)) for r in rates)
    delay = rng.uniform(0.005, 0.080, (frontends, backends))
    weight = rng.uniform(0.5, 1.5, frontends)
    demand = load * capacity * weight / weight.sum()
    return rates, demand, delay, np.ones((frontends, backends), bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frontends", type=int, default=100)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates, demand, delay, connect = instance(args.frontends, args.backends, args.load, args.seed)
    times, cpu = [], []
    for _ in range(args.repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        opt = solve(rates, demand, delay, connect)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    used = int((opt.routing > 1e-9).sum())
    print(f"optimum {args.frontends} frontends x {args.backends} backends (dense, load {args.load:g})")
    print(f"  wall time      {min(times):.2f} s (best of {args.repeat}; all: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"  CPU time       {min(cpu):.2f} s (best of {args.repeat}; every thread of the process, BLAS's included)")
    print(f"  iterations     {opt.iterations} (interior point + polish Newton steps)")
    print(f"  KKT violation  {kkt_violation(opt, delay, connect):.1e} (relative, max over used edges)")
    print(f"  mean latency   {opt.mean_latency:.6f} s (network {opt.mean_network:.4f}, sojourn {opt.mean_sojourn:.4f})")
    print(f"  used edges     {used} of {connect.size}; backends at capacity: {int((opt.capacity_price > 0).sum())}")


if __name__ == "__main__":
    main()
