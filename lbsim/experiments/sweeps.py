"""Parameter sweeps: the cartesian product of a grid of scenario keys, routers, job scales and seeds, resumably.

**A sweep file** (TOML)::

    scenario = "two_regions.toml"          # relative to the sweep file
    routers = ["jsq", "dgdlb", "weighted:split=optimal"]
    seeds = 10                              # or a list: [1, 2, 3]
    job_scales = [0.1, 0.05]                # optional

    [set]                                   # optional fixed overrides
    "simulation.horizon" = 200.0

    [grid]                                  # any --set key path -> values
    "frontends.0.rate" = [4.0, 5.0, 6.0]
    "router.step" = [0.02, 0.05]

Keys are the paths ``lbsim run --set`` takes (list elements by index). A
router is a name or ``name:param=value,param=value`` (or an inline table
``{ name = "weighted", split = "optimal" }``). ``router.*`` keys in ``[grid]``
and ``[set]`` apply to the routers that have that parameter and leave the
others alone (``jsq`` has no ``step``; its runs are not repeated per step).
``seeds = N`` means the scenario's ``simulation.seed`` and the ``N - 1``
seeds after it, so ``seeds = 1`` reproduces ``lbsim run``.

**Outputs of a sweep** (``out/``):

- ``runs/<key>.json``: one file per run, its summary, its sweep coordinates,
  its full configuration and the lbsim version that ran it
  (:class:`~lbsim.experiments.store.RunStore`; resuming with another
  version's runs is refused, never mixed).
  ``key`` is a short sha256 of the canonical configuration (the resolved
  scenario, router and seed included), so a run is identified by what it
  computes. Files appear whole, so re-running a sweep after a crash or
  ``kill -9`` skips exactly the runs that finished.
- ``results.parquet``: one row per run, in the order of the expansion (grid
  points, first key slowest, then job scale, router, seed): ``key``, a
  column per grid key, ``job_scale``, ``router``, ``seed``, then the summary
  fields except the timing ones (``router_params`` as JSON text);
- ``timings.parquet``: ``key`` and the timing fields (``wall_seconds``,
  ``jobs_per_second``), which measure the machine, not the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine import simulate
from ..engine.result import TIMING_FIELDS
from ..files import write_parquet
from ..scenario import Scenario
from .executors import check_executor, config_costs, execute
from .specs import Run, expand, load_sweep
from .store import RunStore

__all__ = ["run_config", "sweep"]


def run_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The pure function a sweep runs: a resolved scenario dict in, its summary out."""
    return simulate(Scenario.from_dict(config)).summary()


def sweep(
    spec: str | Path | Mapping[str, Any],
    out: str | Path,
    workers: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run a sweep file (or dict) into ``out`` and return ``results.parquet`` as a DataFrame.

    Every run is expanded and validated first (an invalid key fails the whole
    sweep before any run starts); runs whose file exists in ``out/runs`` are
    skipped, so a sweep resumes where it stopped. ``executor``: ``"local"``
    (a process pool of ``workers``; ``workers=1`` runs in this process) or
    ``"dask"`` (a new ``LocalCluster`` of ``workers`` processes, or the
    cluster at ``scheduler``: an address or a ``distributed.Client``, whose
    workers then set the parallelism). Runs are computed by the workers and
    written here, by the caller, so remote workers need no shared disk. Run
    files in ``out/runs`` that belong to no run of this sweep are left alone
    and left out of the tables.

    As with any process pool, a script that starts one with ``workers > 1``
    must do so under ``if __name__ == "__main__":`` (workers re-import it).
    """
    check_executor(workers, executor, scheduler)
    runs = expand(load_sweep(spec))
    out = Path(out)
    store = RunStore(out / "runs")
    records = store.finished(run.key for run in runs)
    by_key = {run.key: run for run in runs}

    def save(key: str, summary: dict[str, Any]) -> None:
        run = by_key[key]
        records[key] = store.save(key, run.params, summary, run.config)

    tasks = [(run.key, run.config) for run in runs if run.key not in records]
    execute(
        run_config,
        tasks,
        save,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        total=len(runs),
        desc="sweep",
        weights=config_costs({run.key: run.config for run in runs}) if progress else None,
    )
    results, timings = _tables(runs, records)
    write_parquet(out / "results.parquet", results)
    write_parquet(out / "timings.parquet", timings)
    return results


def _tables(runs: Sequence[Run], records: Mapping[str, dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, timing_rows = [], []
    for run in runs:
        summary = records[run.key]["summary"]
        rows.append(_row(run.key, run.params, summary))
        timing_rows.append({"key": run.key, **{k: summary.get(k, math.nan) for k in TIMING_FIELDS}})
    results = pd.DataFrame(rows)
    for column in runs[0].params if runs else ():
        results[column] = _column(results[column])
    for column in results.columns:  # summary fields that are tables (router_params): JSON text
        if results[column].dtype == object and any(isinstance(v, (dict, list)) for v in results[column]):
            results[column] = [json.dumps(v, sort_keys=True) for v in results[column]]
    return results, pd.DataFrame(timing_rows, columns=["key", *TIMING_FIELDS])


def _row(key: str, params: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    row = {"key": key, **params}
    # the coordinates win over the summary's own router name / seed / job scale
    row |= {k: v for k, v in summary.items() if k not in row and k not in TIMING_FIELDS}
    return row


def _column(values: pd.Series) -> pd.Series:
    """Parameter values as one parquet type: lists, tables and mixed types become JSON text."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    kinds = {type(v) for v in present}
    if kinds <= {int, float} or (len(kinds) == 1 and kinds <= {str, bool}):
        return values
    return pd.Series([None if v is None else json.dumps(v) for v in values], index=values.index, dtype=object)


