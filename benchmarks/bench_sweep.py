"""Sweep wall time with 1 and 2 workers: the speed-up of running a sweep's runs in parallel.

    python benchmarks/bench_sweep.py                         # scenarios/sweep_example.toml, 1 and 2 workers
    python benchmarks/bench_sweep.py --workers 1 2 4 --executor dask
    python benchmarks/bench_sweep.py path/to/sweep.toml --keep out/bench

Each worker count runs the whole sweep into a fresh output directory (no
run is skipped), then the results are checked to be identical across worker
counts. The load average is printed too: on a shared machine the speed-up
is bounded by the cores the other processes leave free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from lbsim.experiments import expand, load_sweep, sweep

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "scenarios" / "sweep_example.toml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--executor", choices=["local", "dask"], default="local")
    parser.add_argument("--keep", help="write the output directories under this path (default: a temporary one)")
    parser.add_argument("--progress", action="store_true", help="show the sweep's progress bar")
    args = parser.parse_args()

    runs = len(expand(load_sweep(args.spec)))
    print(f"{args.spec}: {runs} runs, executor {args.executor}, {os.cpu_count()} cores")
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    walls: dict[int, float] = {}
    results: dict[int, pd.DataFrame] = {}
    try:
        for workers in args.workers:
            out = base / f"workers_{workers}"
            shutil.rmtree(out, ignore_errors=True)  # fresh: every run computed
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            results[workers] = sweep(args.spec, out, workers=workers, executor=args.executor, progress=args.progress)
            walls[workers] = time.perf_counter() - started
            busy = pd.read_parquet(out / "timings.parquet")["wall_seconds"].sum()
            print(
                f"workers {workers}: {walls[workers]:7.1f} s wall, {busy:7.1f} s simulating "
                f"({runs / walls[workers]:.2f} runs/s; load average {load_before:.1f} before, "
                f"{os.getloadavg()[0]:.1f} after)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    first = args.workers[0]
    for workers in args.workers[1:]:
        same = results[workers].equals(results[first])
        print(
            f"speed-up {first} -> {workers} workers: {walls[first] / walls[workers]:.2f}x "
            f"(results {'identical' if same else 'DIFFER'})"
        )


if __name__ == "__main__":
    main()
