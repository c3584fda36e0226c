"""Job-size scaling: does the stochastic system converge to its fluid model as jobs get smaller?

docs/model.md section 1: ``job_scale = s`` makes jobs ``s`` times smaller and ``1/s``
times more numerous at the same volume rate, so the loads ``x_j = n_j * sbar``
should approach the fluid trajectory (lbsim/fluid.py) as ``s -> 0``, with
fluctuations of order ``sqrt(s)`` (a functional law of large numbers with a
central-limit correction: Kurtz, "Solutions of ordinary differential equations
as limits of pure jump Markov processes", J. Appl. Prob. 1970; for GMSR the
convergence is proved in Zhang et al., arXiv:2411.17103).

:func:`scaling` runs the simulator at each scale on common seeds ``1..N``
(all from an empty system, as the fluid trajectory), and measures each run's
distance to the fluid loads at the sample times ``k * sample_interval``:

* ``sup_distance = max_{t, j} |x_j(t) - x_j^fluid(t)|`` (load units);
* ``rms_distance = sqrt(mean_{t, j} (x_j(t) - x_j^fluid(t))^2)``, the
  time-averaged root mean square over backends.

Per scale: mean and 95% Student t interval over the seeds
(:func:`lbsim.stats.mean_ci`); across scales, the least-squares slope of
``log(mean distance)`` against ``log(scale)`` (1/2 expected), with a 95%
interval from the regression of every run's log distance. Job records are
switched off (``simulation.record_jobs = false``) since only the time series
is used; the runs are kept one at a time, so memory is one run's.

The runs go to the executor of :mod:`lbsim.experiments.executors` (this
process, a process pool or dask; the numbers do not depend on it). With an
output directory, each finished run is kept in ``out/runs/<key>.json``
(:class:`~lbsim.experiments.store.RunStore`: its distances, counts and wall
time, and for the first seed the loads drawn in ``trajectories.png``), so
running the same study again, after a crash or Ctrl-C, reuses them and
only runs the rest. The key covers the run's scenario at its scale, router,
parameters, seed, fluid options and drawn backends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ScenarioError
from .files import atomic_write, write_json, write_parquet
from .fluid import FluidResult, fluid

if TYPE_CHECKING:  # pandas loads on first use: importing lbsim stays quick
    import pandas as pd

__all__ = ["ScalingResult", "scaling", "trajectory_distance"]

METRICS = ("sup_distance", "rms_distance")


def trajectory_distance(timeseries: pd.DataFrame, fluid_t: np.ndarray, fluid_load: np.ndarray) -> dict[str, float]:
    """Sup and RMS distance between a run's sampled loads and the fluid loads (T, B) at times ``fluid_t``.

    The run's ``timeseries`` (``t, backend, load``) must sample the same times
    (the simulator and :func:`~lbsim.fluid.fluid` both sample at
    ``k * sample_interval < horizon``).
    """
    T, B = fluid_load.shape
    frame = timeseries.sort_values(["t", "backend"], kind="stable")
    t = frame["t"].to_numpy()[::B]
    if len(frame) != T * B or not np.allclose(t, fluid_t, rtol=0, atol=1e-9 * max(1.0, float(fluid_t[-1]))):
        raise ValueError(f"the run samples {len(t)} times, the fluid model {T}: they must sample the same grid")
    load = frame["load"].to_numpy().reshape(T, B)
    gap = load - fluid_load
    return {"sup_distance": float(np.abs(gap).max()), "rms_distance": float(np.sqrt(np.mean(gap**2)))}


@dataclass
class ScalingResult:
    """``runs`` (one row per scale and seed), ``table`` (one row per scale), the fits and the fluid trajectory.

    ``fits[metric]`` holds ``slope`` (least squares on the per-scale means),
    ``slope_low``/``slope_high`` (95% interval from the per-run regression)
    and ``intercept``. ``trajectories`` has the loads of seed ``seeds[0]`` at
    every scale and of the fluid model (``scale`` NaN) for the plotted backends.
    """

    scenario: Any
    router: str
    runs: pd.DataFrame
    table: pd.DataFrame
    fits: dict[str, dict[str, float]]
    fluid: FluidResult
    trajectories: pd.DataFrame
    backends_shown: list[int] = field(default_factory=list)

    def format_table(self) -> str:
        """The per-scale table as text, with the fitted slopes."""
        columns = {
            "scale": "{:g}",
            "runs": "{:d}",
            "jobs_per_run": "{:,.0f}",
            "sup_mean": "{:.4g}",
            "sup_low": "{:.4g}",
            "sup_high": "{:.4g}",
            "rms_mean": "{:.4g}",
            "rms_low": "{:.4g}",
            "rms_high": "{:.4g}",
            "wall_per_run": "{:.2f}",
        }
        table = self.table[list(columns)].copy()
        for name, fmt in columns.items():
            table[name] = [fmt.format(v) if np.isfinite(v) else "nan" for v in table[name]]
        lines = [
            f"job-size scaling of {self.scenario.name} under {self.router}: "
            f"distance to the fluid loads (load units), mean and 95% CI over seeds",
            table.to_string(index=False),
        ]
        for metric, fit in self.fits.items():
            lines.append(
                f"{metric}: log-log slope {fit['slope']:.3f} "
                f"(95% CI {fit['slope_low']:.3f} .. {fit['slope_high']:.3f}; 0.5 expected)"
            )
        return "\n".join(lines)

    def write(self, out: str | Path) -> Path:
        """``scaling.parquet``, ``runs.parquet``, ``scaling.json``, ``scaling.png`` and ``trajectories.png``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in (("scaling", self.table), ("runs", self.runs)):
            write_parquet(out / f"{name}.parquet", frame)
        meta = {
            "scenario": self.scenario.name,
            "router": self.router,
            "fits": self.fits,
            "fluid_dt": self.fluid.dt,
            "fluid_band": self.fluid.band,
        }
        write_json(out / "scaling.json", meta)
        from . import plots

        title = f"{self.scenario.name}, {self.router}"
        figure = plots.scaling_distances(self.runs, self.fits, METRICS, title=f"{title}: stochastic vs fluid")
        atomic_write(out / "scaling.png", lambda p: figure.savefig(p, format="png", dpi=120))
        names = [self.scenario.backend_label(j) for j in range(self.scenario.num_backends)]
        figure = plots.scaling_trajectories(
            self.trajectories, list(self.table["scale"]), backends=self.backends_shown, names=names,
            title=f"{title}: stochastic (solid) vs fluid (dashed)", figsize=(7.5, 1.9 * len(self.table) + 0.6),
        )  # fmt: skip
        atomic_write(out / "trajectories.png", lambda p: figure.savefig(p, format="png", dpi=120))
        return out


def scaling(
    scenario,
    router: str | None = None,
    scales: Sequence[float] = (1.0, 0.1, 0.01, 0.001),
    seeds: int | Sequence[int] = 4,
    out: str | Path | None = None,
    progress: bool = True,
    *,
    workers: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    backends_shown: Sequence[int] | None = None,
    fluid_options: dict[str, Any] | None = None,
    force: bool = False,
    **router_params,
) -> ScalingResult:
    """Simulate ``scenario`` at each job scale on seeds ``1..seeds`` and measure the distance to the fluid model.

    ``router`` defaults to the scenario's; ``router_params`` are passed to both
    the simulator and the fluid model. ``seeds`` is a count (seeds 1..N, common
    to all scales) or a list. ``out``: keep every finished run in ``out/runs``
    (a rerun reuses them) and write the tables and figures there
    (:meth:`ScalingResult.write`). ``progress``: a progress bar over runs (on
    stderr, on a terminal; its ETA weighs runs by their expected job count);
    the table is :meth:`ScalingResult.format_table`.
    ``force``: replace an ``out`` that holds another command's output (without
    it, such an ``out`` is refused; the same study's is resumed). ``workers``,
    ``executor`` (``"local"`` or ``"dask"``) and ``scheduler``: where the
    runs go, as for :func:`lbsim.experiments.sweep` (results do not depend
    on it). ``backends_shown``: the backends drawn in ``trajectories.png``
    (default: the most and the least loaded at the end of the fluid
    trajectory). ``fluid_options``: ``dt``, ``band`` for :func:`~lbsim.fluid.fluid`.
    """
    import pandas as pd

    from .arguments import check_list, check_positive, check_scenario
    from .experiments.executors import check_executor, execute, run_cost
    from .experiments.specs import _seeds, config_key
    from .experiments.store import RunStore
    from .outputs import experiment_directory

    check_scenario(scenario)
    scales = [float(check_positive(s, "scales", optional=False) or 0.0) for s in check_list(scales, "scales")]
    if not scales:
        raise ScenarioError("scales", "must list at least one job scale")
    seed_list = _seeds(int(seeds) if isinstance(seeds, np.integer) else seeds, 1)
    check_executor(workers, executor, scheduler)
    name = router or scenario.router.name
    base = scenario.replace(**{"simulation.record_jobs": False})
    fluid_result = fluid(base, router=name, record_split=False, **(fluid_options or {}), **router_params)
    if backends_shown is None:  # the most and the least loaded in the fluid model: two distinct curves
        order = np.argsort(-fluid_result.final_load, kind="stable")
        backends_shown = sorted({int(order[0]), int(order[-1])})
    shown = [int(j) for j in backends_shown]

    keep = seed_list[0]
    runs: list[tuple[str, dict[str, Any], dict[str, Any], tuple]] = []  # key, params, config, payload
    for scale in scales:
        at_scale = base.replace(**{"simulation.job_scale": scale})
        for seed in seed_list:
            kept = shown if seed == keep else None
            # everything the run's record depends on, the fluid model it is measured against included
            config = {
                "scenario": at_scale.to_dict(),
                "router": name,
                "router_params": dict(router_params),
                "seed": seed,
                "fluid_options": dict(fluid_options or {}),
                "backends_kept": kept,
            }
            payload = (at_scale, name, seed, kept, router_params)
            runs.append((config_key(config), {"scale": scale, "seed": seed}, config, payload))
    store = None
    if out is not None:
        command = {
            "command": "scaling",
            "scenario": base.to_dict(),
            "router": name,
            "router_params": dict(router_params),
            "scales": scales,
            "seeds": seed_list,
            "fluid_options": dict(fluid_options or {}),
            "backends_shown": shown,
        }
        store = RunStore(experiment_directory(out, command, force) / "runs")
    records = store.finished(key for key, *_ in runs) if store is not None else {}
    by_key = {key: (params, config) for key, params, config, _ in runs}

    def save(key: str, outcome: dict[str, Any]) -> None:
        params, config = by_key[key]
        distance = trajectory_distance(outcome["timeseries"], fluid_result.t, fluid_result.load)
        arrived, wall = outcome["jobs_arrived"], outcome["wall_seconds"]
        row = {
            **params,
            "jobs_arrived": arrived,
            **distance,
            "wall_seconds": wall,
            "jobs_per_second": arrived / wall if wall > 0 else math.nan,
        }
        kept = outcome["kept"]
        record = {"key": key, "params": params, "summary": row, "config": config, "trajectory": kept}
        records[key] = store.save(key, params, row, config, trajectory=kept) if store is not None else record

    tasks = [(key, payload) for key, _, _, payload in runs if key not in records]
    execute(
        _scaling_run,
        tasks,
        save,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        total=len(runs),
        desc=f"scaling {name}",
        weights={key: run_cost(payload[0]) for key, _, _, payload in runs} if progress else None,
    )
    rows = [records[key]["summary"] for key, *_ in runs]
    trajectories = [
        _trajectory_frame(records[key]["trajectory"]).assign(scale=params["scale"])
        for key, params, *_ in runs
        if records[key].get("trajectory") is not None
    ]
    table = pd.DataFrame(rows)
    fluid_rows = pd.DataFrame(
        {
            "t": np.repeat(fluid_result.t, len(shown)),
            "backend": np.tile(np.array(shown, dtype=np.int32), len(fluid_result.t)),
            "load": fluid_result.load[:, shown].reshape(-1),
            "scale": np.nan,
        }
    )
    from .plots import scaling_fits

    result = ScalingResult(
        scenario=scenario,
        router=name,
        runs=table,
        table=_table(table),
        fits=scaling_fits(table, METRICS),
        fluid=fluid_result,
        trajectories=pd.concat([*trajectories, fluid_rows], ignore_index=True),
        backends_shown=shown,
    )
    if out is not None:
        result.write(out)
    return result


def _scaling_run(payload: tuple) -> dict[str, Any]:
    """One simulation: its time series, arrivals, wall time, and the kept backends' loads (or None)."""
    from .engine import simulate

    scenario, router, seed, kept_backends, router_params = payload
    started = time.perf_counter()
    result = simulate(scenario, router=router, seed=seed, **router_params)
    wall = time.perf_counter() - started
    timeseries = result.timeseries[["t", "backend", "load"]]
    kept = None
    if kept_backends is not None:
        loads = timeseries[timeseries["backend"].isin(kept_backends)]
        # plain lists: the record is JSON, and a float's repr reads back to the same float
        kept = {"t": loads["t"].tolist(), "backend": loads["backend"].tolist(), "load": loads["load"].tolist()}
    arrived = int(result.counts["jobs_arrived"])
    del result  # the job records go now, before the next run
    return {"timeseries": timeseries, "jobs_arrived": arrived, "wall_seconds": wall, "kept": kept}


def _trajectory_frame(kept: Mapping[str, list]) -> pd.DataFrame:
    """A run's kept loads (``t``, ``backend``, ``load``), with the simulator's column types."""
    import pandas as pd

    return pd.DataFrame(
        {
            "t": np.asarray(kept["t"], dtype=np.float64),
            "backend": np.asarray(kept["backend"], dtype=np.int32),
            "load": np.asarray(kept["load"], dtype=np.float64),
        }
    )


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    from .stats import mean_ci

    rows = []
    for scale, group in runs.groupby("scale", sort=False):
        row: dict[str, Any] = {"scale": scale, "runs": len(group), "jobs_per_run": float(group["jobs_arrived"].mean())}
        for metric in METRICS:
            ci = mean_ci(group[metric].to_numpy())
            short = metric.split("_")[0]
            row |= {f"{short}_mean": ci.estimate, f"{short}_low": ci.low, f"{short}_high": ci.high}
        row["wall_per_run"] = float(group["wall_seconds"].mean())
        rows.append(row)
    return pd.DataFrame(rows)
