"""Cost of one call of each admission policy of lbsim/llm/bfio.py at G = 16, 64, 256 ranks (B = 72, R = 4G).

The state is built here (seeded) to look like a saturated engine: every rank
holds ``B`` requests of the paper's synthetic normal workload (prompt and
output bivariate normal, means 3200/1200, sds 2600/700, correlation -0.1,
rounded, at least 1; Chen et al., arXiv:2601.17855), each at a uniformly
random point of its output, so ``L_g`` is about ``B * 3800`` tokens; the pool
shows ``R = 4G`` fresh requests. Two kinds of step:

* ``steady``: the slots freed by one decode step, each slot free with
  probability ``1/1200`` (one request in 1200 finishes per step), so about
  ``0.06 G`` free slots: BF-IO runs phase 2 only (subset sum) up to
  G ~ 116, and phase 1 first above;
* ``refill``: 8 free slots on every rank (a burst of completions): ``8G``
  admissions from ``4G`` candidates, BF-IO mostly in phase 1 (greedy).

Each policy is called on 5 such states in turn until 0.5 s of wall time
(at least 5 calls); CPU and wall time per call are printed (they differ on
a shared machine). ``bfio_exact`` is skipped above its size limit (it
raises; the engine reports that as a scenario error). Output estimates are
the true remaining lengths (noise 0).

    python benchmarks/bench_bfio.py [--ranks 16 64 256] [--budget 0.5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from lbsim.llm.bfio import BfioExactParams, bestfit, bfio, bfio_exact, br0

BATCH = 72


def workload(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    sd = np.array([2600.0, 700.0])
    covariance = np.outer(sd, sd) * np.array([[1.0, -0.1], [-0.1, 1.0]])
    draws = np.maximum(1, np.rint(rng.multivariate_normal([3200.0, 1200.0], covariance, count))).astype(np.int64)
    return draws[:, 0], draws[:, 1]


def engine_state(ranks: int, kind: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    if kind == "steady":
        free = rng.binomial(BATCH, 1 / 1200, ranks)
    else:
        free = np.full(ranks, 8)
    lengths, remaining = [], []
    for g in range(ranks):
        active = BATCH - int(free[g])
        prompt, output = workload(active, rng)
        generated = np.floor(rng.random(active) * output).astype(np.int64)
        lengths.append(prompt + generated)
        remaining.append(output - generated)
    prompts, outputs = workload(4 * ranks, rng)
    loads = np.array([int(x.sum()) for x in lengths], dtype=np.int64)
    return {
        "loads": loads,
        "free": free.astype(np.int64),
        "prompts": prompts,
        "outputs": outputs,
        "lengths": lengths,
        "remaining": remaining,
    }


def policies() -> dict[str, Callable[[dict], object]]:
    def with_horizon(horizon: int) -> Callable[[dict], object]:
        return lambda s: bfio(
            s["loads"], s["free"], s["prompts"], s["lengths"], s["remaining"], s["outputs"], horizon=horizon
        )

    return {
        "bestfit": lambda s: bestfit(s["loads"], s["free"], s["prompts"]),
        "bfio H=0": with_horizon(0),
        "bfio H=20": with_horizon(20),
        "bfio H=72": with_horizon(72),
        "bfio_exact": lambda s: bfio_exact(s["loads"], s["free"], s["prompts"]),
        "br0 (one arrival)": lambda s: br0(s["loads"], int(s["prompts"][0])),
    }


def time_policy(run: Callable[[dict], object], states: list[dict], budget: float) -> tuple[float, float, int]:
    calls = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while calls < 5 or time.perf_counter() - wall0 < budget:
        run(states[calls % len(states)])
        calls += 1
    return (time.process_time() - cpu0) / calls, (time.perf_counter() - wall0) / calls, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--budget", type=float, default=0.5, help="wall seconds spent per policy and state kind")
    args = parser.parse_args()
    limit = BfioExactParams().size_limit
    print(f"{'G':>4} {'step':>7} {'free':>5} {'policy':<18} {'cpu ms/call':>12} {'wall ms/call':>13} {'calls':>6}")
    for ranks in args.ranks:
        for kind in ("steady", "refill"):
            states = [engine_state(ranks, kind, seed) for seed in range(5)]
            free = np.mean([s["free"].sum() for s in states])
            for name, run in policies().items():
                if name == "bfio_exact" and max(len(s["prompts"]) * np.count_nonzero(s["free"]) for s in states) > limit:
                    print(f"{ranks:>4} {kind:>7} {free:>5.0f} {name:<18} {'above size_limit ' + str(limit):>27}")
                    continue
                cpu, wall, calls = time_policy(run, states, args.budget)
                print(f"{ranks:>4} {kind:>7} {free:>5.0f} {name:<18} {cpu * 1e3:>12.3f} {wall * 1e3:>13.3f} {calls:>6}")


if __name__ == "__main__":
    main()
