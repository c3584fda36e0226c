"""Router comparisons on common random numbers: mean and tail latency with confidence intervals across seeds.

**Common random numbers.** Arrivals and sizes come from their own RNG
streams (docs/model.md, section 4), so every router run on seed ``s`` sees
the same jobs. Comparing routers on shared seeds removes the between-seed
noise from their differences.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd

from ..engine import simulate
from ..files import atomic_write, write_parquet, write_text
from ..scenario import Scenario, load_scenario
from ..stats import QUANTILE_NAMES, summarize
from .executors import check_executor, execute
from .specs import SweepSpec, _routers, _seeds, expand

__all__ = ["JOB_COLUMNS", "Comparison", "compare", "format_comparison"]

#: per-job columns a comparison keeps (measured jobs only): enough for the ECDF and for checking CRN
JOB_COLUMNS = ("job_id", "frontend", "backend", "t_arrival", "size", "latency")


def _run_with_jobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison's run: the summary and the measured jobs (for CIs on quantiles and the ECDF)."""
    result = simulate(Scenario.from_dict(config))
    measured = result.measured()
    return {"summary": result.summary(), "jobs": {c: measured[c].to_numpy() for c in JOB_COLUMNS}}


@dataclass
class Comparison:
    """Routers compared on common random numbers.

    ``table``: one row per router, sorted by mean latency: ``router``,
    ``seeds``, ``jobs`` (measured jobs over all seeds), ``mean`` and
    ``p50 p90 p99 p999``, each with ``_low``/``_high`` 95% bounds across
    seeds, and ``ratio_to_optimum`` (with bounds): mean latency over the
    centralized optimum's (NaN when there is none). ``runs``: one row per
    (router, seed), its summary. ``jobs``: the measured jobs of every run
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
) -> Comparison:
    """Run every router on the same seeds and compare their latency (see :class:`Comparison`).

    ``scenario`` is a Scenario or a path; ``routers`` are names or
    ``name:param=value,...`` (``"weighted:split=optimal"``); ``seeds`` a
    count (from ``simulation.seed`` on) or a list. Mean and quantiles get
    95% intervals across seeds (replications, :func:`lbsim.stats.summarize`).
    With ``out``, writes ``comparison.parquet``, ``comparison.csv``,
    ``runs.parquet`` and ``latency_ccdf.png`` there. With ``progress``, shows
    a progress bar (on stderr); the table is ``str(comparison)``.
    """
    from ..arguments import check_list, check_scenario

    check_executor(workers, executor, scheduler)
    if isinstance(scenario, (str, Path)):
        scenario = load_scenario(scenario)
    scenario = check_scenario(scenario)
    base = scenario.to_dict()
    spec = SweepSpec(base, _routers(check_list(routers, "routers")), _seeds(seeds, scenario.simulation.seed))
    runs = expand(spec)
    results: dict[str, dict[str, Any]] = {}
    execute(
        _run_with_jobs,
        [(run.key, run.config) for run in runs],
        results.__setitem__,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        total=len(runs),
        desc="compare",
    )

    run_rows = [
        {"router": run.params["router"], "seed": run.params["seed"]}
        | {k: v for k, v in results[run.key]["summary"].items() if k not in ("router", "seed")}
        for run in runs
    ]
    runs_table = pd.DataFrame(run_rows)
    jobs = pd.concat(
        [
            pd.DataFrame({"router": run.params["router"], "seed": run.params["seed"], **results[run.key]["jobs"]})
            for run in runs
        ],
        ignore_index=True,
    )
    reference = _optimum_mean_latency(scenario)
    table = _comparison_table(jobs, [r.label for r in spec.routers], len(spec.seeds), reference)
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


def format_comparison(table: pd.DataFrame, optimum: float = math.nan, level: float = 0.95) -> str:
    """The comparison as aligned text: estimates with +- half-widths of their intervals."""
    columns = [("mean", "mean (s)")] + [(q, _quantile_title(q) + " (s)") for q in QUANTILE_NAMES]
    header = ["router", "seeds", "jobs"] + [title for _, title in columns] + ["/ optimum"]
    body = []
    for row in table.itertuples(index=False):
        r = cast(Any, row)._asdict()  # pandas-stubs type itertuples' namedtuples as plain tuples
        cells = [str(r["router"]), str(r["seeds"]), str(r["jobs"])]
        cells += [_with_interval(r[name], r[f"{name}_low"], r[f"{name}_high"]) for name, _ in columns]
        cells.append(
            _with_interval(r["ratio_to_optimum"], r["ratio_to_optimum_low"], r["ratio_to_optimum_high"], digits=3)
        )
        body.append(cells)
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), "  ".join("-" * w for w in widths), *map(line, body)]
    where = f"optimum mean latency {optimum:.4g} s" if math.isfinite(optimum) else "no optimum to compare with"
    lines.append(f"{where}; +- is the half-width of {level:.0%} intervals across seeds (common random numbers)")
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
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "comparison.parquet", comparison.table)
    write_text(out / "comparison.csv", comparison.table.to_csv(index=False))
    write_parquet(out / "runs.parquet", comparison.runs)
    figure = comparison.plot()
    atomic_write(out / "latency_ccdf.png", lambda p: figure.savefig(p, format="png", dpi=130))
    return out


