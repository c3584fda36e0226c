"""Speed of the llm engine in saturated mode: steps and requests per second (CPU and wall time).

G = 16, 64, 256 ranks of B = 72 slots under fcfs and jsq, on the BF-IO
paper's synthetic workload (bivariate normal tokens), 10 requests per slot::

    python benchmarks/bench_llm.py [--requests-per-slot 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lbsim.llm import LLMParams, make_tokens, run_saturated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests-per-slot", type=float, default=10.0)
    parser.add_argument("--workers", default="16,64,256")
    args = parser.parse_args()
    slots = 72
    print(f"{'G':>5} {'admission':>10} {'requests':>9} {'steps':>7} {'wall s':>8} {'cpu s':>8} {'steps/s':>9} {'requests/s':>11}")
    for workers in (int(g) for g in args.workers.split(",")):
        n = int(args.requests_per_slot * workers * slots)
        prompt, output = make_tokens({"kind": "normal"}).sample(np.random.default_rng(1), n)
        for admission in ("fcfs", "jsq"):
            params = LLMParams.from_spec({"workers": workers, "slots": slots, "admission": {"name": admission}})
            wall, cpu = time.perf_counter(), time.process_time()
            result = run_saturated(params, prompt, output, 1)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            steps = result.summary["steps"]
            print(f"{workers:>5} {admission:>10} {n:>9} {steps:>7} {wall:>8.2f} {cpu:>8.2f} {steps / wall:>9.0f} {n / wall:>11.0f}")


if __name__ == "__main__":
    main()
