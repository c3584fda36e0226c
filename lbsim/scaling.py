"""Job-size scaling: does the stochastic system converge to its fluid model as jobs get smaller?

DESIGN.md section 1: ``job_scale = s`` makes jobs ``s`` times smaller and ``1/s``
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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ScenarioError
from .files import write_json, write_parquet
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
        self.plot_scaling(out / "scaling.png")
        self.plot_trajectories(out / "trajectories.png")
        return out

    def plot_scaling(self, path: str | Path) -> None:
        """Log-log distance vs scale: every run, the means with their 95% CI, and the fitted lines."""
        import seaborn as sns
        from matplotlib.figure import Figure  # no pyplot: no global backend, renders with Agg

        long = self.runs.melt(
            id_vars=["scale", "seed"], value_vars=list(METRICS), var_name="metric", value_name="distance"
        )
        fig = Figure(figsize=(6.4, 4.8), layout="constrained")
        ax = fig.subplots()
        sns.scatterplot(data=long, x="scale", y="distance", hue="metric", alpha=0.45, ax=ax, legend=False)
        palette = sns.color_palette(n_colors=len(METRICS))
        scales = self.table["scale"].to_numpy()
        grid = np.geomspace(scales.min(), scales.max(), 50)
        for color, metric in zip(palette, METRICS):
            short = metric.split("_")[0]
            mean = self.table[f"{short}_mean"].to_numpy()
            low, high = self.table[f"{short}_low"].to_numpy(), self.table[f"{short}_high"].to_numpy()
            yerr = np.vstack([mean - low, high - mean])
            ax.errorbar(scales, mean, yerr=np.where(np.isfinite(yerr), yerr, 0.0), fmt="o", color=color, capsize=3)
            fit = self.fits[metric]
            ax.plot(
                grid,
                np.exp(fit["intercept"]) * grid ** fit["slope"],
                "--",
                color=color,
                label=f"{short}: slope {fit['slope']:.2f} [{fit['slope_low']:.2f}, {fit['slope_high']:.2f}]",
            )
        ax.set(xscale="log", yscale="log", xlabel="job scale", ylabel="distance to the fluid loads")
        ax.set_title(f"{self.scenario.name}, {self.router}: stochastic vs fluid")
        ax.legend(title="mean, 95% CI, log-log fit")
        fig.savefig(path, dpi=120)

    def plot_trajectories(self, path: str | Path) -> None:
        """Fluid vs stochastic loads (first seed) of the shown backends, one panel per scale."""
        import seaborn as sns
        from matplotlib.figure import Figure

        scales = list(self.table["scale"])
        labels = {j: self.scenario.backend_label(j) for j in self.backends_shown}
        data = self.trajectories.assign(backend=self.trajectories["backend"].map(labels))
        fig = Figure(figsize=(7.5, 1.9 * len(scales) + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(len(scales), 1, sharex=True, sharey=True))
        fluid_rows = data[data["scale"].isna()]
        for ax, scale in zip(axes, scales):
            runs = data[data["scale"] == scale]
            sns.lineplot(
                data=runs, x="t", y="load", hue="backend", palette="tab10", lw=0.7, alpha=0.8, ax=ax, legend=False
            )
            sns.lineplot(
                data=fluid_rows, x="t", y="load", hue="backend", palette="tab10", lw=1.6, linestyle="--", ax=ax,
                legend=ax is axes[0],
            )  # fmt: skip
            ax.set_ylabel(f"load\nscale {scale:g}")
        axes[0].set_title(f"{self.scenario.name}, {self.router}: stochastic (solid) vs fluid (dashed)")
        axes[-1].set_xlabel("t (s)")
        fig.savefig(path, dpi=120)


def scaling(
    scenario,
    router: str | None = None,
    scales: Sequence[float] = (1.0, 0.1, 0.01, 0.001),
    seeds: int | Sequence[int] = 4,
    out: str | Path | None = None,
    progress: bool = True,
    *,
    workers: int = 1,
    backends_shown: Sequence[int] | None = None,
    fluid_options: dict[str, Any] | None = None,
    **router_params,
) -> ScalingResult:
    """Simulate ``scenario`` at each job scale on seeds ``1..seeds`` and measure the distance to the fluid model.

    ``router`` defaults to the scenario's; ``router_params`` are passed to both
    the simulator and the fluid model. ``seeds`` is a count (seeds 1..N, common
    to all scales) or a list. ``out``: write the tables and figures there
    (:meth:`ScalingResult.write`). ``progress``: a progress bar over runs, and
    print the table at the end. ``workers > 1`` runs the simulations in that
    many processes (results do not depend on it). ``backends_shown``: the
    backends drawn in ``trajectories.png`` (default: the most and the least
    loaded at the end of the fluid trajectory). ``fluid_options``: ``dt``, ``band`` for :func:`~lbsim.fluid.fluid`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    scales = [float(s) for s in scales]
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ScenarioError("scales", f"must be positive numbers, got {scales}")
    seed_list = list(range(1, int(seeds) + 1)) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list:
        raise ScenarioError("seeds", "need at least one seed")
    name = router or scenario.router.name
    base = scenario.replace(**{"simulation.record_jobs": False})
    fluid_result = fluid(base, router=name, record_split=False, **(fluid_options or {}), **router_params)
    if backends_shown is None:  # the most and the least loaded in the fluid model: two distinct curves
        order = np.argsort(-fluid_result.final_load, kind="stable")
        backends_shown = sorted({int(order[0]), int(order[-1])})
    shown = [int(j) for j in backends_shown]

    tasks = [(scale, seed) for scale in scales for seed in seed_list]
    keep = seed_list[0]
    rows: list[dict[str, Any]] = []
    trajectories: list[pd.DataFrame] = []
    bar = tqdm(total=len(tasks), desc=f"scaling {name}", unit="run", disable=not progress)
    jobs = [(base, name, scale, seed, seed == keep, shown, router_params) for scale, seed in tasks]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = [pool.submit(_one_run, *job) for job in jobs]
            outcomes = []
            for future in done:
                outcomes.append(future.result())
                bar.update()
    else:
        outcomes = []
        for job in jobs:
            outcomes.append(_one_run(*job))
            bar.update()
    bar.close()
    for (scale, seed), (timeseries, counts, wall, kept) in zip(tasks, outcomes):
        distance = trajectory_distance(timeseries, fluid_result.t, fluid_result.load)
        rows.append(
            {
                "scale": scale,
                "seed": seed,
                "jobs_arrived": counts["jobs_arrived"],
                **distance,
                "wall_seconds": wall,
                "jobs_per_second": counts["jobs_arrived"] / wall if wall > 0 else math.nan,
            }
        )
        if kept is not None:
            trajectories.append(kept.assign(scale=scale))
    runs = pd.DataFrame(rows)
    fluid_rows = pd.DataFrame(
        {
            "t": np.repeat(fluid_result.t, len(shown)),
            "backend": np.tile(np.array(shown, dtype=np.int32), len(fluid_result.t)),
            "load": fluid_result.load[:, shown].reshape(-1),
            "scale": np.nan,
        }
    )
    result = ScalingResult(
        scenario=scenario,
        router=name,
        runs=runs,
        table=_table(runs),
        fits=_fits(runs),
        fluid=fluid_result,
        trajectories=pd.concat([*trajectories, fluid_rows], ignore_index=True),
        backends_shown=shown,
    )
    if out is not None:
        result.write(out)
    if progress:
        print(result.format_table())
    return result


def _one_run(scenario, router, scale, seed, keep, shown, router_params):
    """One simulation: its time series, counts, wall time, and (if ``keep``) the shown backends' loads."""
    from . import simulate

    started = time.perf_counter()
    result = simulate(scenario.replace(**{"simulation.job_scale": scale}), router=router, seed=seed, **router_params)
    wall = time.perf_counter() - started
    timeseries = result.timeseries[["t", "backend", "load"]]
    kept = timeseries[timeseries["backend"].isin(shown)].reset_index(drop=True) if keep else None
    counts = dict(result.counts)
    del result  # the job records go now, before the next run
    return timeseries, counts, wall, kept


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


def _fits(runs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Slope of log distance on log scale: on the per-scale means, with a 95% CI from all runs."""
    import scipy.stats

    fits = {}
    for metric in METRICS:
        positive = runs[runs[metric] > 0]
        means = positive.groupby("scale")[metric].mean()
        if len(means) < 2:
            fits[metric] = dict.fromkeys(("slope", "intercept", "slope_low", "slope_high"), math.nan)
            continue
        slope, intercept = np.polyfit(np.log(means.index.to_numpy()), np.log(means.to_numpy()), 1)
        regression = scipy.stats.linregress(np.log(positive["scale"]), np.log(positive[metric]))
        dof = len(positive) - 2
        half = scipy.stats.t.ppf(0.975, dof) * regression.stderr if dof > 0 else math.nan
        fits[metric] = {
            "slope": float(slope),
            "intercept": float(intercept),
            "slope_low": float(regression.slope - half),
            "slope_high": float(regression.slope + half),
        }
    return fits
