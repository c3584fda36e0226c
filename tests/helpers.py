"""Shared helpers for the engine tests: scenario builders and the statistics of a single long run.

Statistical tests compare one long, fixed-seed run against an exact answer
from queueing theory. Their tolerance is never picked by hand: it is ``Z``
standard errors, with the standard error estimated by *batch means* (the
measurement window is cut into ``k`` equal stretches of time; the spread of
the ``k`` batch estimates, divided by sqrt(k), estimates the error of the
whole-run estimate, correlations included, when batches are much longer
than the system's relaxation time). With k = 25 batches the studentized
error has about 24 degrees of freedom, so ``|t| > 4.5`` has probability
about 1e-4 under a correct simulator.

Helpers are plain functions, imported as ``from helpers import ...``:
``pythonpath = ["tests"]`` in pyproject.toml puts this directory on
``sys.path``. Fixtures and pytest hooks live in ``conftest.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

import lbsim
from lbsim.routers import Router

#: how many standard errors a statistical estimate may miss the theory by
Z = 4.5
#: batches used by batch-means standard errors
BATCHES = 25


# -- scenarios ---------------------------------------------------------------------------
def scenario(
    backends: Sequence[dict],
    rates: Sequence[float] = (1.0,),
    *,
    horizon: float = 100.0,
    warmup: float = 0.0,
    seed: int = 1,
    job_scale: float = 1.0,
    size: str = "exponential",
    size_mean: float = 1.0,
    size_params: dict | None = None,
    network: dict | None = None,
    router: str | dict = "random",
    sample_interval: float = 1.0,
    **simulation,
) -> lbsim.Scenario:
    """A scenario from the pieces a test cares about, through the public ``Scenario.from_dict``."""
    data = {
        "simulation": {
            "horizon": horizon,
            "warmup": warmup,
            "seed": seed,
            "job_scale": job_scale,
            "sample_interval": sample_interval,
            **simulation,
        },
        "jobs": {"size": size, "size_mean": size_mean, **(size_params or {})},
        "frontends": [{"rate": r} for r in rates],
        "backends": [copy.deepcopy(b) for b in backends],
        "network": dict(network or {}),
        "router": {"name": router} if isinstance(router, str) else dict(router),
    }
    return lbsim.Scenario.from_dict(data)


def backend(kind: str, discipline: str = "ps", max_load: float | None = None, **params) -> dict:
    """A backend table: ``backend("saturating", c=4, k=2)``."""
    table: dict = {"discipline": discipline, "service": {"kind": kind, **params}}
    if max_load is not None:
        table["max_load"] = max_load
    return table


# -- statistics of one run ---------------------------------------------------------------
def batch_estimate(
    times: np.ndarray,
    values: np.ndarray,
    t0: float,
    t1: float,
    statistic: Callable[[np.ndarray], float] = np.mean,
    batches: int = BATCHES,
) -> tuple[float, float]:
    """``statistic`` of the values whose time lies in [t0, t1), and its batch-means standard error.

    The estimate is computed on the whole window (not averaged over batches),
    so small-sample bias of nonlinear statistics (quantiles) stays out of it.
    """
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    inside = (times >= t0) & (times < t1)
    edges = np.linspace(t0, t1, batches + 1)
    which = np.searchsorted(edges, times[inside], side="right") - 1
    per_batch = np.array([statistic(values[inside][which == b]) for b in range(batches)])
    return float(statistic(values[inside])), float(per_batch.std(ddof=1) / math.sqrt(batches))


def time_average(timeseries: pd.DataFrame, t0: float, t1: float, column: str = "jobs", transform=None):
    """Time average over [t0, t1) of the number in system (all backends summed), with its standard error.

    The time series samples at a fixed grid, independent of the system's
    state, so its average is an unbiased estimate of the time average.
    """
    total = timeseries.groupby("t", sort=True)[column].sum()
    values = total.to_numpy(dtype=float)
    if transform is not None:
        values = transform(values)
    return batch_estimate(total.index.to_numpy(), values, t0, t1)


def assert_close(estimate: float, truth: float, se: float, what: str, z: float = Z) -> None:
    """``|estimate - truth| <= z * se``, with a message giving all three."""
    assert se > 0, f"{what}: standard error must be positive, got {se}"
    error = (estimate - truth) / se
    assert abs(error) <= z, f"{what}: estimate {estimate:.6g} vs theory {truth:.6g} is {error:+.2f} SE (se {se:.3g})"


# -- queueing theory, computed here (never by the simulator) ------------------------------
def birth_death_stationary(birth: float, death: Callable[[int], float], tail: float = 1e-15) -> np.ndarray:
    """Stationary law of a birth-death chain with constant birth rate and death rates ``death(n)``, n >= 1.

    pi(n) is proportional to prod_{k=1..n} birth / death(k); the chain is
    truncated once the terms fall below ``tail`` times the largest (the
    ratio of successive terms must end below 1: a stable chain).
    """
    log_terms = [0.0]
    peak = 0.0
    n = 0
    while True:
        n += 1
        log_terms.append(log_terms[-1] + math.log(birth) - math.log(death(n)))
        peak = max(peak, log_terms[-1])
        if log_terms[-1] < peak + math.log(tail) and birth < death(n):
            break
        if n > 10**6:
            raise ValueError("birth-death chain does not look stable")
    terms = np.exp(np.array(log_terms) - peak)
    return terms / terms.sum()


def erlang_c(servers: int, offered: float) -> float:
    """Erlang C: probability that an arrival waits in M/M/m with offered load a = lambda/mu < m."""
    m, a = servers, offered
    head = sum(a**k / math.factorial(k) for k in range(m))
    last = a**m / math.factorial(m) * m / (m - a)
    return last / (head + last)


def mmm_mean_sojourn(servers: int, arrival: float, service: float) -> float:
    """Mean sojourn in M/M/m: C(m, a) / (m mu - lambda) + 1/mu."""
    return erlang_c(servers, arrival / service) / (servers * service - arrival) + 1.0 / service


# -- reconstructing the true state from the jobs table ------------------------------------
def jobs_present(start: np.ndarray, end: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each time in ``at``: how many intervals [start, end) contain it (start <= t < end)."""
    start = np.sort(np.asarray(start, dtype=float))
    end = np.sort(np.asarray(end, dtype=float))
    at = np.asarray(at, dtype=float)
    return np.searchsorted(start, at, side="right") - np.searchsorted(end, at, side="right")


def float_tolerance(t: np.ndarray, ulps: float = 4.0) -> np.ndarray:
    """A few units in the last place of the times involved: the rounding of a handful of additions."""
    return ulps * np.spacing(np.abs(np.asarray(t, dtype=float)))


# -- processes --------------------------------------------------------------------------
def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# -- a router that records what it sees ---------------------------------------------------
class Spy(Router):
    """Test router: records every backend's job count as the view shows it, then joins the shortest."""

    name = "_test_spy"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.seen: list[tuple[float, int, list[int]]] = []

    def route(self, frontend, job, view):
        everyone = range(self.ctx.num_backends)
        observed = [view.jobs(frontend, j) for j in everyone]
        # The bulk readers (fast paths for JSQ-like routers) must agree with jobs().
        assert view.jobs_of(frontend, everyone) == observed
        assert view.loads(frontend).tolist() == [n * self.ctx.mean_size for n in observed]
        self.seen.append((self.ctx.now(), frontend, observed))
        candidates = self.neighbours[frontend]
        return self.pick_min(candidates, [observed[j] for j in candidates])


def check_counts(result: lbsim.Result) -> None:
    """Conservation: every job that arrived is completed by the horizon, drained after it, or left over;
    the jobs table holds the first two; each job once."""
    c = result.counts
    assert c["jobs_arrived"] == c["jobs_completed"] + c["jobs_in_system_end"]
    assert c["jobs_in_system_end"] == c["jobs_to_backends_end"] + c["jobs_at_backends_end"] + c["jobs_responding_end"]
    assert c["jobs_in_system_end"] == c["jobs_drained"] + c["jobs_undrained"]
    assert c["jobs_completed"] + c["jobs_drained"] == len(result.jobs)
    assert min(c.values()) >= 0
    ids = result.jobs["job_id"].to_numpy()
    assert len(np.unique(ids)) == len(ids) and (ids < c["jobs_arrived"]).all()
