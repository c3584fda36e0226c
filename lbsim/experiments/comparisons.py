"""Router comparisons on common random numbers: mean and tail latency with confidence intervals across seeds.

**Common random numbers.** Arrivals and sizes come from their own RNG
streams (docs/model.md, section 4), so every router run on seed ``s`` sees
the same jobs. Comparing routers on shared seeds removes the between-seed
noise from their differences.

**Overload.** Beside latency, the table reports ``served`` (work units per
second the backends served, jobs finished or not: docs/model.md section 3)
and ``unbounded``, the number of seeds whose queues grew without bound
(:func:`queue_growth`): in overload the latency of the jobs that completed
says little, and these two columns say what happened to the rest.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..engine import simulate
from ..files import atomic_write, write_parquet, write_text
from ..outputs import experiment_directory
from ..scenario import Scenario, load_scenario
from ..stats import QUANTILE_NAMES, mean_ci, summarize
from .executors import check_executor, config_costs, execute
from .specs import SweepSpec, _routers, _seeds, expand
from .store import RunStore

__all__ = ["JOB_COLUMNS", "Comparison", "compare", "format_comparison", "queue_growth"]

#: per-job columns a comparison keeps (measured jobs only): enough for the ECDF and for checking CRN
JOB_COLUMNS = ("job_id", "frontend", "backend", "t_arrival", "size", "latency")


#: batches of the late window in :func:`queue_growth`, and the t statistic above which growth is significant
GROWTH_BATCHES = 10
GROWTH_T = 4.5
#: ... and the smallest growth over the late window, relative to its mean number of jobs, that counts
GROWTH_RELATIVE = 0.1


def queue_growth(timeseries: pd.DataFrame, t0: float, t1: float) -> tuple[float, float, bool]:
    """The growth of the jobs at the backends: late-window slope (jobs/s), its t statistic, and unbounded or not.

    The total number of jobs at the backends is averaged over
    ``GROWTH_BATCHES`` equal batches of a window and a least-squares line is
    fitted to the batch means; batches much longer than the system's
    relaxation time are nearly independent, so ``slope / se`` is about
    Student's t with ``GROWTH_BATCHES - 2`` degrees of freedom under a
    stationary system (batch means: Law and Kelton, Simulation Modeling and
    Analysis, 3rd ed., section 9.5.3). The slope returned is that of the late
    window, the second half of ``[t0, t1)``. *Unbounded* is a significant
    positive slope (``t > GROWTH_T``) over both the whole window and its late
    half, whose growth over the late half is also at least
    ``GROWTH_RELATIVE`` of the mean number there: an overloaded backend's
    queue grows linearly (``(Lambda_j - cap_j) / sbar`` jobs per second)
    throughout, a stable one's drifts by noise only. A heuristic: in a run
    whose batches are not much longer than the relaxation time (short runs,
    loads close to critical) noise can pass for growth.
    """
    total = timeseries.groupby("t", sort=True)["jobs"].sum()
    t = total.index.to_numpy(dtype=float)
    n = total.to_numpy(dtype=float)
    whole = _trend(t, n, t0, t1)
    start = t0 + 0.5 * (t1 - t0)
    slope, t_stat, level = _trend(t, n, start, t1)
    unbounded = (
        min(whole[1], t_stat) > GROWTH_T and slope * (t1 - start) >= GROWTH_RELATIVE * max(level, 1e-300)
    )
    return slope, t_stat, bool(unbounded)


def _trend(t: np.ndarray, n: np.ndarray, start: float, end: float) -> tuple[float, float, float]:
    """Least-squares slope of the batch means of ``n`` over ``[start, end)``, its t statistic, their mean."""
    edges = np.linspace(start, end, GROWTH_BATCHES + 1)
    which = np.searchsorted(edges, t, side="right") - 1
    inside = (t >= start) & (t < end)
    means = np.array([n[inside & (which == b)].mean() if (inside & (which == b)).any() else np.nan
                      for b in range(GROWTH_BATCHES)])  # fmt: skip
    centres = 0.5 * (edges[:-1] + edges[1:])
    ok = np.isfinite(means)
    if ok.sum() < 3:
        return math.nan, math.nan, math.nan
    x, y = centres[ok], means[ok]
    dx = x - x.mean()
    slope = float(dx @ (y - y.mean()) / (dx @ dx))
    resid = y - y.mean() - slope * dx
    se = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(dx @ dx))
    t_stat = slope / se if se > 0 else (math.inf if slope > 0 else 0.0)
    return slope, t_stat, float(y.mean())


def _run_with_jobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison's run: the summary, queue growth and the measured jobs (for CIs on quantiles and the ECDF)."""
    result = simulate(Scenario.from_dict(config))
    measured = result.measured()
    sim = result.scenario.simulation
    slope, t_stat, unbounded = queue_growth(result.timeseries, sim.warmup, sim.horizon)
    growth = {"queue_growth": slope, "queue_growth_t": t_stat, "unbounded": unbounded}
    return {"summary": result.summary() | growth, "jobs": {c: measured[c].to_numpy() for c in JOB_COLUMNS}}


@dataclass
class Comparison:
    """Routers compared on common random numbers.

    ``table``: one row per router, sorted by mean latency: ``router``,
    ``seeds``, ``jobs`` (measured jobs over all seeds), ``mean`` and
    ``p50 p90 p99 p999``, each with ``_low``/``_high`` 95% bounds across
    seeds, ``ratio_to_optimum`` (with bounds): mean latency over the
    centralized optimum's (NaN when there is none), ``served`` (with bounds:
    work units per second served, jobs finished or not) and ``unbounded``
    (how many seeds' queues grew without bound, :func:`queue_growth`).
    ``runs``: one row per (router, seed), its summary with ``queue_growth``,
    ``queue_growth_t`` and ``unbounded``. ``jobs``: the measured jobs of every run
    (``router``, ``seed`` and :data:`JOB_COLUMNS`).
    """

    table: pd.DataFrame
    runs: pd.DataFrame
    jobs: pd.DataFrame
    optimum: float
    level: float = 0.95
    out: Path | None = None

    def format_table(self) -> str:
        """The table as aligned text (:func:`format_comparison`): what ``lbsim compare`` prints."""
        return format_comparison(self.table, self.optimum, self.level)

    def __str__(self) -> str:
        return self.format_table()

    def plot(self) -> Any:
        """The latency ECDF and CCDF (log tail) of every router: a matplotlib Figure.

        See :func:`lbsim.plots.latency_distribution`.
        """
        from ..plots import latency_distribution

        return latency_distribution(self.jobs, order=list(self.table["router"]), reference=self.optimum)


def compare(
    scenario: Scenario | str | Path,
    routers: Sequence[str | Mapping[str, Any]],
    seeds: int | Sequence[int],
    out: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    *,
    executor: str = "local",
    scheduler: Any = None,
    force: bool = False,
) -> Comparison:
    """Run every router on the same seeds and compare their latency (see :class:`Comparison`).

    ``scenario`` is a Scenario or a path; ``routers`` are names or
    ``name:param=value,...`` (``"weighted:split=optimal"``); ``seeds`` a
    count (from ``simulation.seed`` on) or a list. Mean and quantiles get
    95% intervals across seeds (replications, :func:`lbsim.stats.summarize`).
    With ``out``, writes ``comparison.parquet``, ``comparison.csv``,
    ``runs.parquet`` and ``latency_ccdf.png`` there, each atomically, and
    keeps every finished run in ``out/runs`` (its summary and measured jobs,
    :class:`~lbsim.experiments.store.RunStore`), so the same comparison run
    again, after Ctrl-C or ``kill -9``, reuses them and runs only the rest;
    an ``out`` that holds another command's output is refused unless
    ``force`` (:func:`lbsim.outputs.experiment_directory`). With
    ``progress``, shows a progress bar (on stderr, on a terminal); the table
    is ``str(comparison)``.
    """
    from ..arguments import check_list, check_scenario

    check_executor(workers, executor, scheduler)
    if isinstance(scenario, (str, Path)):
        scenario = load_scenario(scenario)
    scenario = check_scenario(scenario)
    base = scenario.to_dict()
    spec = SweepSpec(base, _routers(check_list(routers, "routers")), _seeds(seeds, scenario.simulation.seed))
    runs = expand(spec)
    by_key = {run.key: run for run in runs}
    results: dict[str, dict[str, Any]] = {}
    store = None
    if out is not None:
        command = {
            "command": "compare",
            "scenario": base,
            "routers": [r.label for r in spec.routers],
            "seeds": spec.seeds,
        }
        store = RunStore(experiment_directory(out, command, force) / "runs")
        for key, record in store.finished(by_key).items():
            jobs = store.table(key, "jobs")
            results[key] = {"summary": record["summary"], "jobs": {c: jobs[c].to_numpy() for c in JOB_COLUMNS}}

    def save(key: str, outcome: dict[str, Any]) -> None:
        if store is not None:
            run = by_key[key]
            store.save(key, run.params, outcome["summary"], run.config, tables={"jobs": pd.DataFrame(outcome["jobs"])})
        results[key] = outcome

    execute(
        _run_with_jobs,
        [(run.key, run.config) for run in runs if run.key not in results],
        save,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        total=len(runs),
        desc="compare",
        weights=config_costs({run.key: run.config for run in runs}) if progress else None,
    )

    run_rows = [
        {"router": run.params["router"], "seed": run.params["seed"]}
        | {k: v for k, v in results[run.key]["summary"].items() if k not in ("router", "seed")}
        for run in runs
    ]
    runs_table = pd.DataFrame(run_rows)
    if "router_params" in runs_table:  # a table per run: JSON text in parquet
        runs_table["router_params"] = [json.dumps(p, sort_keys=True) for p in runs_table["router_params"]]
    jobs = pd.concat(
        [
            pd.DataFrame({"router": run.params["router"], "seed": run.params["seed"], **results[run.key]["jobs"]})
            for run in runs
        ],
        ignore_index=True,
    )
    reference = _optimum_mean_latency(scenario)
    table = _comparison_table(jobs, [r.label for r in spec.routers], len(spec.seeds), reference)
    table = _with_overload(table, runs_table)
    comparison = Comparison(table, runs_table, jobs, reference)
    if out is not None:
        comparison.out = _write_comparison(comparison, Path(out))
    return comparison


def _optimum_mean_latency(scenario: Scenario) -> float:
    """The centralized optimum's mean latency, or NaN when it is not the right reference or has no solution."""
    # The optimum is a static split for constant rates and capacities: with a
    # rate schedule or antagonists it answers a different question.
    if scenario.simulation.rate_schedule or any(b.antagonist is not None for b in scenario.backends):
        return math.nan
    from ..optimum import optimum

    try:
        return float(optimum(scenario).mean_latency)
    except Exception as exc:  # an overloaded scenario has no optimum; the comparison still stands
        warnings.warn(f"no optimum to compare with: {exc}", RuntimeWarning, stacklevel=3)
        return math.nan


def _comparison_table(jobs: pd.DataFrame, order: list[str], seeds: int, reference: float) -> pd.DataFrame:
    table = summarize(jobs, by="router", replication="seed")  # warm-up already cut: jobs are measured ones
    table = table.rename(columns={"count": "jobs"})
    table = table.set_index("router").reindex(order).reset_index()
    table.insert(1, "seeds", seeds)
    table["jobs"] = table["jobs"].fillna(0).astype("int64")
    for suffix in ("", "_low", "_high"):
        table[f"ratio_to_optimum{suffix}"] = table[f"mean{suffix}"] / reference
    # stable: routers with equal means keep the order they were given in
    return table.sort_values("mean", kind="stable", na_position="last").reset_index(drop=True)


def _with_overload(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``served`` (mean over seeds, with its 95% t interval) and ``unbounded`` (seeds flagged) by router."""
    rows = {}
    for router, group in runs.groupby("router", sort=False):
        ci = mean_ci(group["served"].to_numpy(dtype=float))
        rows[router] = {"served": ci.estimate, "served_low": ci.low, "served_high": ci.high,
                        "unbounded": int(group["unbounded"].sum())}  # fmt: skip
    extra = pd.DataFrame.from_dict(rows, orient="index")
    return table.join(extra, on="router")


def format_comparison(table: pd.DataFrame, optimum: float = math.nan, level: float = 0.95) -> str:
    """The comparison as aligned text: estimates with +- half-widths of their intervals."""
    columns = [("mean", "mean (s)")] + [(q, _quantile_title(q) + " (s)") for q in QUANTILE_NAMES]
    header = ["router", "seeds", "jobs"] + [title for _, title in columns] + ["/ optimum"]
    overload = "served" in table.columns
    if overload:
        header += ["served (work/s)", "unbounded"]
    body = []
    for row in table.itertuples(index=False):
        r = cast(Any, row)._asdict()  # pandas-stubs type itertuples' namedtuples as plain tuples
        cells = [str(r["router"]), str(r["seeds"]), str(r["jobs"])]
        cells += [_with_interval(r[name], r[f"{name}_low"], r[f"{name}_high"]) for name, _ in columns]
        cells.append(
            _with_interval(r["ratio_to_optimum"], r["ratio_to_optimum_low"], r["ratio_to_optimum_high"], digits=3)
        )
        if overload:
            cells.append(_with_interval(r["served"], r["served_low"], r["served_high"]))
            cells.append(f"{r['unbounded']}/{r['seeds']}" if r["unbounded"] else "")
        body.append(cells)
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), "  ".join("-" * w for w in widths), *map(line, body)]
    where = f"optimum mean latency {optimum:.4g} s" if math.isfinite(optimum) else "no optimum to compare with"
    lines.append(f"{where}; +- is the half-width of {level:.0%} intervals across seeds (common random numbers)")
    if overload and table["unbounded"].any():
        lines.append("unbounded: seeds whose queues grew without bound (latencies cover only the jobs that finished)")
    return "\n".join(lines)


def _quantile_title(name: str) -> str:
    digits = name[1:]
    return f"p{digits[:2]}.{digits[2:]}" if len(digits) > 2 else name


def _with_interval(estimate: float, low: float, high: float, digits: int = 4) -> str:
    if not math.isfinite(estimate):
        return "n/a"
    text = f"{estimate:.{digits}g}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" ± {(high - low) / 2:.2g}"
    return text


def _write_comparison(comparison: Comparison, out: Path) -> Path:
    write_parquet(out / "comparison.parquet", comparison.table)
    write_text(out / "comparison.csv", comparison.table.to_csv(index=False))
    write_parquet(out / "runs.parquet", comparison.runs)
    figure = comparison.plot()
    atomic_write(out / "latency_ccdf.png", lambda p: figure.savefig(p, format="png", dpi=130))
    return out


