"""Figures from the tidy tables lbsim writes (seaborn on matplotlib).

Every function takes one of lbsim's tables as a DataFrame and draws it:

- jobs (``jobs.parquet``, ``Comparison.jobs``): :func:`latency_ecdf`,
  :func:`latency_ccdf` (log tail), :func:`latency_distribution` (both, a
  Figure), :func:`latency_over_time` (a quantile by arrival time);
- a comparison table (``Comparison.table``, ``lbsim.stats.summarize``):
  :func:`percentile_bars` (with CIs);
- time series (``timeseries.parquet``, simulated and ``lbsim.fluid``'s):
  :func:`load_trajectories`; routing (``routing.parquet``): :func:`routing_splits`;
- a sweep's ``results.parquet``: :func:`sweep_heatmap` (two columns x a
  metric), :func:`sweep_lines` (a metric against one column, a line per router);
- ``lbsim.scaling``'s tables: :func:`scaling_plot` (log-log, with the fit),
  :func:`scaling_fits` (the power laws and their intervals),
  :func:`scaling_distances` (every metric, a Figure) and
  :func:`scaling_trajectories` (simulated vs fluid loads per scale, a Figure).

A function that draws one panel takes ``ax=`` (draw there) and returns the
Axes; without it, it makes a new :class:`matplotlib.figure.Figure` on the Agg
canvas (``ax.figure``), so it neither needs a display nor touches pyplot's
state: a script saves it with ``ax.figure.savefig(path)``, a notebook shows
it with ``display(ax.figure)``. Groups keep the order they first appear in
(or ``order=``) and the same colour in every panel of one call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

__all__ = [
    "STATISTICS",
    "latency_ccdf",
    "latency_distribution",
    "latency_ecdf",
    "latency_over_time",
    "load_trajectories",
    "new_axes",
    "new_figure",
    "percentile_bars",
    "plain_log_ticks",
    "routing_splits",
    "scaling_distances",
    "scaling_fit",
    "scaling_fits",
    "scaling_plot",
    "scaling_trajectories",
    "sweep_heatmap",
    "sweep_lines",
]

#: the statistics of a comparison table, in the order bars are drawn
STATISTICS = ("mean", "p50", "p90", "p99", "p999")
_STAT_TITLES = {"mean": "mean", "p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99.9"}


# -- figures without pyplot ------------------------------------------------------------------
def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **subplots: Any):
    """A Figure on the Agg canvas and its axes (``figure.subplots``): no display, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize or (6.4 * ncols ** 0.8, 4.2 * nrows ** 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(nrows, ncols, squeeze=True, **subplots)


def new_axes(ax=None, figsize: tuple[float, float] = (6.4, 4.2)):
    """``ax`` itself, or the one Axes of a new Figure (:func:`new_figure`)."""
    if ax is not None:
        return ax
    _, ax = new_figure(figsize=figsize)
    return ax


def _order(frame: pd.DataFrame, by: str, order: Sequence[Any] | None) -> list[Any]:
    if order is not None:
        return list(order)
    return list(dict.fromkeys(frame[by])) if by in frame else []


def _palette(groups: Sequence[Any], palette: Any = None) -> dict[Any, Any]:
    import seaborn as sns

    if isinstance(palette, Mapping):
        return dict(palette)
    if palette is None and len(groups) > 10:  # the default cycle repeats after 10 colours
        palette = "tab20"
    return dict(zip(groups, sns.color_palette(palette, n_colors=max(len(groups), 1))))


def _groups(frame: pd.DataFrame, by: str | None) -> tuple[pd.DataFrame, str]:
    """The frame and a group column: ``by``, or a constant one when there is nothing to group by."""
    if by is not None and by in frame:
        return frame, by
    return frame.assign(_group="all"), "_group"


def plain_log_ticks(axis) -> None:
    """Label a log ``axis`` with plain numbers (1.2, 5, 20), not powers of ten.

    Minor ticks are labelled too when the axis spans little more than a
    decade, the 2s and 5s up to three decades, none beyond.
    """
    from matplotlib.ticker import FuncFormatter

    low, high = sorted(axis.get_view_interval())
    decades = math.log10(high / low) if low > 0 else math.inf

    def minor(v, _):
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6) if v > 0 else 0
        if decades < 1.2 or (decades < 3 and mantissa in (2.0, 5.0)):
            return f"{v:.3g}"
        return ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


# -- latency distributions -------------------------------------------------------------------
def _ecdf_points(values: np.ndarray, points: int = 1000) -> pd.DataFrame:
    """The ECDF at about ``2 * points`` order statistics: even in probability, and log-spaced in the tail.

    The ECDF is :func:`lbsim.stats.ecdf`'s (non-finite values dropped). Plotting every job of a
    million-job run is slow and draws nothing more;
    the tail points keep the CCDF exact down to ``1/n``.
    """
    from .stats import ecdf

    x, probability = ecdf(values)
    n = len(x)
    if n == 0:
        return pd.DataFrame({"value": [], "ecdf": [], "ccdf": []})
    body = np.linspace(0, n - 1, min(n, points)).astype(int)
    tail = n - np.unique(np.logspace(0, math.log10(n), min(n, points)).astype(int))
    index = np.unique(np.concatenate([body, tail, [0, n - 1]]))
    return pd.DataFrame({"value": x[index], "ecdf": probability[index], "ccdf": 1.0 - probability[index]})


def _curves(jobs: pd.DataFrame, by: str | None, order, value: str, points: int) -> tuple[pd.DataFrame, list, str]:
    jobs, by = _groups(jobs, by)
    groups = _order(jobs, by, order)
    parts = [
        _ecdf_points(jobs.loc[jobs[by] == g, value].to_numpy(dtype=float), points).assign(**{by: g})
        for g in groups
    ]
    curves = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["value", "ecdf", "ccdf", by])
    return curves, groups, by


def _reference_line(ax, reference: float | None, label: str) -> None:
    if reference is not None and math.isfinite(reference):
        ax.axvline(reference, color="0.35", linestyle="--", linewidth=1, label=label)


def latency_ecdf(
    jobs: pd.DataFrame,
    by: str | None = "router",
    order: Sequence[Any] | None = None,
    *,
    value: str = "latency",
    logx: bool = True,
    reference: float | None = None,
    reference_label: str = "optimum mean",
    palette: Any = None,
    points: int = 1000,
    ax=None,
):
    """ECDF ``P(latency <= x)`` of ``value`` per group of ``by`` (seeds pooled), log x axis by default.

    ``reference`` draws a vertical dashed line (e.g. the optimum's mean latency).
    """
    import seaborn as sns

    ax = new_axes(ax)
    curves, groups, by = _curves(jobs, by, order, value, points)
    colours = _palette(groups, palette)
    sns.lineplot(
        data=curves, x="value", y="ecdf", hue=by, hue_order=groups, palette=colours,
        estimator=None, sort=False, drawstyle="steps-post", ax=ax,
    )  # fmt: skip
    _reference_line(ax, reference, reference_label)
    ax.set(xlabel=f"{value} (s)", ylabel=f"P({value} <= x)", title="ECDF", ylim=(0, 1.01))
    if logx:
        ax.set_xscale("log")
    _legend(ax, by)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def latency_ccdf(
    jobs: pd.DataFrame,
    by: str | None = "router",
    order: Sequence[Any] | None = None,
    *,
    value: str = "latency",
    logx: bool = False,
    reference: float | None = None,
    reference_label: str = "optimum mean",
    palette: Any = None,
    points: int = 1000,
    ax=None,
):
    """CCDF ``P(latency > x)`` per group on a log y axis: the tail, down to ``1/n``."""
    import seaborn as sns

    ax = new_axes(ax)
    curves, groups, by = _curves(jobs, by, order, value, points)
    curves = curves[curves["ccdf"] > 0]
    colours = _palette(groups, palette)
    sns.lineplot(
        data=curves, x="value", y="ccdf", hue=by, hue_order=groups, palette=colours,
        estimator=None, sort=False, drawstyle="steps-post", ax=ax,
    )  # fmt: skip
    _reference_line(ax, reference, reference_label)
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=f"{value} (s)", ylabel=f"P({value} > x)", title="CCDF (tail)")
    _legend(ax, by)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def latency_distribution(
    jobs: pd.DataFrame,
    by: str | None = "router",
    order: Sequence[Any] | None = None,
    *,
    value: str = "latency",
    reference: float | None = None,
    palette: Any = None,
    figsize: tuple[float, float] = (11.0, 4.2),
):
    """ECDF (left, log x) and CCDF (right, log y) of latency per group, side by side: a Figure."""
    figure, (left, right) = new_figure(1, 2, figsize=figsize)
    groups = _order(*_groups(jobs, by), order)
    colours = _palette(groups, palette)
    latency_ecdf(jobs, by, groups, value=value, reference=reference, palette=colours, ax=left)
    latency_ccdf(jobs, by, groups, value=value, reference=reference, palette=colours, ax=right)
    if right.get_legend() is not None:
        right.get_legend().remove()
    return figure


def latency_over_time(
    jobs: pd.DataFrame,
    by: str | None = "router",
    order: Sequence[Any] | None = None,
    *,
    window: float = 5.0,
    q: float | None = 0.99,
    value: str = "latency",
    logy: bool = True,
    schedule: Sequence[Sequence[float]] | None = None,
    palette: Any = None,
    ax=None,
):
    """A quantile (``q``; ``None``: the mean) of ``value`` over windows of arrival time, per group.

    ``schedule`` (a ``simulation.rate_schedule``) is drawn as a step line on a
    right-hand axis: the load multiplier the latency responds to.
    """
    import seaborn as sns

    ax = new_axes(ax, figsize=(8.0, 4.2))
    jobs, by = _groups(jobs, by)
    groups = _order(jobs, by, order)
    binned = jobs.assign(t=(np.floor(jobs["t_arrival"] / window) + 0.5) * window)
    grouped = binned.groupby([by, "t"])[value]
    stat = grouped.mean() if q is None else grouped.quantile(q)
    frame = stat.rename("stat").reset_index()
    sns.lineplot(data=frame, x="t", y="stat", hue=by, hue_order=groups, palette=_palette(groups, palette), ax=ax)
    name = "mean" if q is None else f"p{100 * q:g}"
    ax.set(xlabel="arrival time (s)", ylabel=f"{name} {value} (s), {window:g} s windows")
    if logy:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    if schedule:
        twin = ax.twinx()
        times = [float(t) for t, _ in schedule] + [float(jobs["t_arrival"].max()) if len(jobs) else 0.0]
        levels = [float(m) for _, m in schedule]
        twin.step(times, levels + levels[-1:], where="post", color="0.5", linestyle=":", linewidth=1.2)
        twin.set_ylabel("load multiplier (dotted)")
        twin.set_ylim(0, max(levels) * 1.3)
    _legend(ax, by)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def _legend(ax, by: str) -> None:
    """Seaborn's hue legend, without its title, plus any labelled line drawn after it (a reference)."""
    legend = ax.get_legend()
    handles = list(legend.legend_handles) if legend is not None else []
    labels = [t.get_text() for t in legend.get_texts()] if legend is not None else []
    for line in ax.get_lines():
        label = line.get_label()
        if not label.startswith("_") and label not in labels and line.get_linestyle() == "--":
            handles.append(line)
            labels.append(label)
    if by == "_group" and len(labels) == 1 and legend is not None:
        handles, labels = [], []
    if legend is not None:
        legend.remove()
    if handles:
        ax.legend(handles, labels, fontsize="small")


# -- comparison tables -----------------------------------------------------------------------
def percentile_bars(
    table: pd.DataFrame,
    statistics: Sequence[str] = STATISTICS,
    *,
    by: str = "router",
    order: Sequence[Any] | None = None,
    log: bool = True,
    reference: float | None = None,
    reference_label: str = "optimum mean",
    palette: Any = None,
    ax=None,
):
    """Grouped bars: for each statistic (mean, p50, ..., p99.9) one bar per router, with its CI.

    ``table`` has a row per ``by`` value and the columns ``<stat>``,
    ``<stat>_low``, ``<stat>_high`` (``Comparison.table``,
    ``lbsim.stats.summarize``); NaN bounds draw no error bar. Log y by
    default: a p99.9 is often ten times a median.
    """
    ax = new_axes(ax, figsize=(max(6.4, 1.3 * len(statistics) + 0.25 * len(table)), 4.2))
    groups = _order(table, by, order)
    colours = _palette(groups, palette)
    rows = table.set_index(by)
    width = 0.8 / max(len(groups), 1)
    centres = np.arange(len(statistics))
    for k, group in enumerate(groups):
        row = rows.loc[group]
        estimate = np.array([row[s] for s in statistics], dtype=float)
        low = np.array([row.get(f"{s}_low", np.nan) for s in statistics], dtype=float)
        high = np.array([row.get(f"{s}_high", np.nan) for s in statistics], dtype=float)
        error = np.vstack(
            [np.where(np.isfinite(low), estimate - low, 0), np.where(np.isfinite(high), high - estimate, 0)]
        )
        x = centres - 0.4 + width * (k + 0.5)
        ax.bar(x, estimate, width=width, color=colours[group], label=str(group), yerr=np.maximum(error, 0),
               error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.2"})  # fmt: skip
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, color="0.35", linestyle="--", linewidth=1, label=reference_label)
    ax.set_xticks(centres, [_STAT_TITLES.get(s, s) for s in statistics])
    ax.set(ylabel="latency (s)", xlabel="")
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: labels[k] == reference_label)  # the reference last
    ax.legend([handles[k] for k in order], [labels[k] for k in order], fontsize="small",
              ncols=2 if len(groups) > 6 else 1)  # fmt: skip
    ax.grid(True, axis="y", which="major", alpha=0.3)
    return ax


# -- trajectories ----------------------------------------------------------------------------
def load_trajectories(
    timeseries: pd.DataFrame,
    fluid: pd.DataFrame | None = None,
    *,
    backends: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    optimum: Sequence[float] | None = None,
    value: str = "load",
    palette: Any = None,
    ax=None,
):
    """Every backend's load over time: simulated (solid) against the fluid model (dashed, same colour).

    ``timeseries`` and ``fluid`` are ``timeseries.parquet`` tables (``t``,
    ``backend``, ``load``); ``fluid`` is ``lbsim.fluid.fluid(...).timeseries``.
    ``optimum`` (the centralized optimum's loads, one per backend) adds dotted
    horizontal lines; ``names`` labels backends by index.
    """
    ax = new_axes(ax, figsize=(8.0, 4.2))
    chosen = list(backends) if backends is not None else sorted(pd.unique(timeseries["backend"]))
    colours = _palette(chosen, palette)

    def label(j):
        return names[j] if names is not None else f"backend {j}"

    for j in chosen:
        sim = timeseries[timeseries["backend"] == j]
        ax.plot(sim["t"], sim[value], color=colours[j], linewidth=1.0, label=label(j))
        if fluid is not None:
            fl = fluid[fluid["backend"] == j]
            ax.plot(fl["t"], fl[value], color=colours[j], linestyle="--", linewidth=1.6, alpha=0.9)
        if optimum is not None:
            ax.axhline(float(optimum[j]), color=colours[j], linestyle=":", linewidth=1.0)
    handles, labels = ax.get_legend_handles_labels()
    styles = [("-", "simulated")] + ([("--", "fluid")] if fluid is not None else [])
    styles += [(":", "optimum")] if optimum is not None else []
    for style, text in styles:
        (line,) = ax.plot([], [], color="0.3", linestyle=style)
        handles.append(line)
        labels.append(text)
    ax.legend(handles, labels, fontsize="small", ncols=2 if len(chosen) > 5 else 1)
    ax.set(xlabel="time (s)", ylabel=f"{value} (work units)" if value == "load" else value)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def routing_splits(
    routing: pd.DataFrame,
    fluid: pd.DataFrame | None = None,
    *,
    frontend: int | None = None,
    names: Sequence[str] | None = None,
    frontend_names: Sequence[str] | None = None,
    optimum: np.ndarray | None = None,
    palette: Any = None,
    ax=None,
):
    """Routing probabilities ``p_ij(t)`` over time (``routing.parquet``): one line per edge.

    ``frontend`` picks one frontend (lines are its backends); by default all
    edges are drawn, labelled ``frontend -> backend``. ``fluid`` (the fluid
    model's routing table) is dashed in the same colour, ``optimum`` (an
    F x B split) dotted.
    """
    ax = new_axes(ax, figsize=(8.0, 4.2))
    table = routing if frontend is None else routing[routing["frontend"] == frontend]
    edges = list(dict.fromkeys(zip(table["frontend"], table["backend"])))
    colours = _palette(edges, palette)

    def label(i, j):
        backend = names[j] if names is not None else f"backend {j}"
        if frontend is not None:
            return backend
        return f"{frontend_names[i] if frontend_names is not None else f'frontend {i}'} -> {backend}"

    for i, j in edges:
        edge = table[(table["frontend"] == i) & (table["backend"] == j)]
        ax.plot(edge["t"], edge["prob"], color=colours[(i, j)], linewidth=1.0, label=label(i, j))
        if fluid is not None:
            fl = fluid[(fluid["frontend"] == i) & (fluid["backend"] == j)]
            ax.plot(fl["t"], fl["prob"], color=colours[(i, j)], linestyle="--", linewidth=1.6)
        if optimum is not None:
            ax.axhline(float(np.asarray(optimum)[i, j]), color=colours[(i, j)], linestyle=":", linewidth=1.0)
    handles, labels = ax.get_legend_handles_labels()
    for style, text, present in (("--", "fluid", fluid is not None), (":", "optimum", optimum is not None)):
        if present:
            (line,) = ax.plot([], [], color="0.3", linestyle=style)
            handles.append(line)
            labels.append(text)
    ax.legend(handles, labels, fontsize="small", ncols=2 if len(edges) > 6 else 1)
    if frontend is None:
        title = "routing split"
    else:
        title = f"routing split of {frontend_names[frontend] if frontend_names else f'frontend {frontend}'}"
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(-0.02, 1.02), title=title)
    ax.grid(True, which="major", alpha=0.3)
    return ax


# -- sweeps ----------------------------------------------------------------------------------
def _select(results: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    for column, wanted in (where or {}).items():
        results = results[results[column] == wanted]
    return results


def sweep_heatmap(
    results: pd.DataFrame,
    x: str,
    y: str,
    metric: str = "mean_latency",
    *,
    where: Mapping[str, Any] | None = None,
    agg: str = "mean",
    x_order: Sequence[Any] | None = None,
    y_order: Sequence[Any] | None = None,
    annot: bool = True,
    fmt: str = ".3g",
    log: bool = False,
    cmap: str = "viridis",
    ax=None,
):
    """A heatmap of ``metric`` over two columns of a sweep's ``results.parquet`` (seeds aggregated by ``agg``).

    ``x`` and ``y`` are grid keys (``"router.step"``) or any other column
    (``"router"``, ``"job_scale"``); ``where`` keeps the rows whose columns
    equal the given values (``{"router": "dgdlb"}``). Values keep their
    order of appearance (the grid's) unless ``x_order``/``y_order`` say
    otherwise. ``log`` colours by a log scale.
    """
    import seaborn as sns
    from matplotlib.colors import LogNorm

    results = _select(results, where)
    aggfunc: Any = agg  # any pandas aggregation name
    table = results.pivot_table(index=y, columns=x, values=metric, aggfunc=aggfunc, sort=False)
    table = table.reindex(index=list(y_order) if y_order is not None else _order(results, y, None))
    table = table.reindex(columns=list(x_order) if x_order is not None else _order(results, x, None))
    ax = new_axes(ax, figsize=(max(5.0, 1.0 + 0.9 * table.shape[1]), max(3.0, 0.9 + 0.45 * table.shape[0])))
    finite = table.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    norm = LogNorm(finite.min(), finite.max()) if log and finite.size else None
    sns.heatmap(table, annot=annot, fmt=fmt, cmap=cmap, norm=norm, ax=ax, cbar_kws={"label": metric})
    if norm is not None:  # plain numbers on the log colour bar, not powers of ten
        from matplotlib.ticker import FuncFormatter

        colourbar = ax.collections[0].colorbar
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")
        colourbar.ax.yaxis.set_major_formatter(plain)
        colourbar.ax.yaxis.set_minor_formatter(plain)
    ax.set(xlabel=x, ylabel=y)
    return ax


def sweep_lines(
    results: pd.DataFrame,
    x: str,
    metric: str = "mean_latency",
    *,
    hue: str = "router",
    where: Mapping[str, Any] | None = None,
    hue_order: Sequence[Any] | None = None,
    logx: bool = False,
    logy: bool = False,
    errorbar: Any = ("ci", 95),
    palette: Any = None,
    ax=None,
):
    """``metric`` against one numeric column of a sweep, a line per ``hue`` (mean over seeds with a CI band)."""
    import seaborn as sns

    results = _select(results, where)
    ax = new_axes(ax)
    groups = _order(results, hue, hue_order)
    sns.lineplot(
        data=results, x=x, y=metric, hue=hue, hue_order=groups, palette=_palette(groups, palette),
        errorbar=errorbar, marker="o", ax=ax,
    )  # fmt: skip
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    _legend(ax, hue)
    ax.grid(True, which="both" if logy else "major", alpha=0.3)
    return ax


# -- job-size scaling ------------------------------------------------------------------------
def scaling_fit(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Least-squares line through ``(log x, log y)``: ``(slope, prefactor)`` of ``y = prefactor * x**slope``."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)
    return float(slope), float(math.exp(intercept))


def scaling_fits(
    runs: pd.DataFrame, metrics: Sequence[str] = ("sup_distance", "rms_distance"), x: str = "scale"
) -> dict[str, dict[str, float]]:
    """Power laws ``metric = exp(intercept) * x**slope`` fitted to runs (one row per scale and seed), per metric.

    ``slope`` and ``intercept`` (natural log) are the least-squares line
    through the log of the per-scale means (:func:`scaling_fit`'s line);
    ``slope_low``/``slope_high`` are a 95% interval from the regression of
    every run's log distance on log scale, Student t with ``runs - 2``
    degrees of freedom (the spread across seeds, not across scales only).
    Runs with a distance of 0 (no log) are left out; fewer than two scales
    give NaN. This is ``lbsim.scaling``'s ``ScalingResult.fits``.
    """
    import scipy.stats

    fits = {}
    for metric in metrics:
        positive = runs[runs[metric] > 0]
        means = positive.groupby(x)[metric].mean()
        if len(means) < 2:
            fits[metric] = dict.fromkeys(("slope", "intercept", "slope_low", "slope_high"), math.nan)
            continue
        slope, intercept = np.polyfit(np.log(means.index.to_numpy()), np.log(means.to_numpy()), 1)
        regression = scipy.stats.linregress(np.log(positive[x]), np.log(positive[metric]))
        dof = len(positive) - 2
        half = scipy.stats.t.ppf(0.975, dof) * regression.stderr if dof > 0 else math.nan
        fits[metric] = {
            "slope": float(slope),
            "intercept": float(intercept),
            "slope_low": float(regression.slope - half),
            "slope_high": float(regression.slope + half),
        }
    return fits


def scaling_distances(
    runs: pd.DataFrame,
    fits: Mapping[str, Mapping[str, float]] | None = None,
    metrics: Sequence[str] = ("sup_distance", "rms_distance"),
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
):
    """Every metric of a scaling study against the job scale, log-log, on one Axes: a Figure.

    For each metric (``sup_distance``, ``rms_distance``) :func:`scaling_plot`
    draws every run, the per-scale means with their 95% CI and the fitted
    power law ``fits[metric]`` (:func:`scaling_fits` of ``runs`` by default).
    This is ``scaling.png`` of ``lbsim scaling``.
    """
    import seaborn as sns

    fits = scaling_fits(runs, metrics) if fits is None else fits
    figure, ax = new_figure(figsize=figsize)
    for colour, metric in zip(sns.color_palette(n_colors=len(metrics)), metrics):
        scaling_plot(runs, metric, fit=fits[metric], reference_slope=None, label=metric.split("_")[0],
                     color=colour, ylabel="distance to the fluid loads", ax=ax)  # fmt: skip
    # Frame the data, as a log axis does by itself: a t interval reaching below 0 would
    # otherwise stretch the axis down by decades to the clipped end of its bar.
    values = runs[list(metrics)].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size:
        ax.set_ylim(bottom=0.8 * values.min())
    if title is not None:
        ax.set_title(title)
    return figure


def scaling_trajectories(
    trajectories: pd.DataFrame,
    scales: Sequence[float] | None = None,
    *,
    backends: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
):
    """Simulated against fluid loads over time, one panel per job scale (shared axes): a Figure.

    ``trajectories`` is ``ScalingResult.trajectories``: ``t``, ``backend``,
    ``load`` and ``scale`` (NaN for the fluid model's rows). Each panel is a
    :func:`load_trajectories` of one scale's run against the fluid rows
    (dashed); the legend is the top panel's. This is ``trajectories.png``
    of ``lbsim scaling``.
    """
    fluid_rows = trajectories[trajectories["scale"].isna()]
    if scales is None:
        scales = list(dict.fromkeys(trajectories["scale"].dropna()))
    figure, axes = new_figure(len(scales), 1, figsize=figsize or (8.0, 1.9 * len(scales) + 0.8),
                              sharex=True, sharey=True)  # fmt: skip
    axes = np.atleast_1d(axes)
    for ax, scale in zip(axes, scales):
        load_trajectories(trajectories[trajectories["scale"] == scale], fluid_rows, backends=backends, names=names,
                          ax=ax)  # fmt: skip
        ax.set_ylabel(f"load, scale {scale:g}")
        if ax is not axes[0]:
            ax.get_legend().remove()
        ax.set_xlabel("")
    if title is not None:
        axes[0].set_title(title)
    axes[-1].set_xlabel("time (s)")
    return figure


def _bound_columns(table: pd.DataFrame, y: str) -> tuple[str, str] | None:
    """``<y>_low``/``<y>_high``, or ``<m>_low``/``<m>_high`` for ``y = "<m>_mean"`` (lbsim.scaling's table)."""
    names = [(f"{y}_low", f"{y}_high")]
    if y.endswith("_mean"):
        names.append((f"{y[:-5]}_low", f"{y[:-5]}_high"))
    for low, high in names:
        if low in table and high in table:
            return low, high
    return None


def scaling_plot(
    table: pd.DataFrame,
    y: str = "rms_distance",
    x: str = "scale",
    *,
    fit: Mapping[str, float] | tuple[float, float] | str | None = "auto",
    reference_slope: float | None = 0.5,
    hue: str | None = None,
    label: str | None = None,
    color: Any = None,
    ylabel: str | None = None,
    ax=None,
):
    """``y`` against ``x`` (the job scale) on log-log axes, with a fitted power law ``y = c * x**slope``.

    ``table`` is ``lbsim.scaling``'s: its ``runs`` (one row per scale and
    seed, ``y = "rms_distance"`` or ``"sup_distance"``) or its ``table`` (one
    row per scale, ``y = "rms_mean"`` with ``rms_low``/``rms_high``), or any
    table of the same shape. Several rows per ``x`` (seeds) are drawn as
    faint points and summarised by their mean with a 95% t interval; one row
    per ``x`` with bound columns (``<y>_low``/``<y>_high``) uses those.
    ``fit``: ``"auto"`` fits the means by least squares in log-log
    (:func:`scaling_fit`); a ``(slope, prefactor)`` pair, or one of
    ``ScalingResult.fits`` (``slope``, natural-log ``intercept``, optional
    ``slope_low``/``slope_high`` shown in the legend), is drawn as given;
    ``None`` draws none. ``reference_slope`` adds a grey dotted line of that
    slope through the middle of the fit (1/2: the central-limit scale of the
    fluid limit). ``hue`` draws one series (and fit) per value of a column;
    without it, ``label`` names the series and ``color`` colours it (to put
    several metrics on one Axes).
    """
    from .stats import mean_ci

    ax = new_axes(ax)
    table = table[np.isfinite(table[y].to_numpy(dtype=float))]
    series = [(None, table)] if hue is None else list(table.groupby(hue, sort=False))
    colours = _palette([name for name, _ in series])
    if hue is None and color is not None:
        colours[None] = color
    bounds = _bound_columns(table, y)
    for name, part in series:
        colour = colours[name]
        rows = []
        for xv, group in part.groupby(x, sort=True):
            values = group[y].to_numpy(dtype=float)
            if len(values) == 1 and bounds is not None:
                rows.append((xv, values[0], float(group[bounds[0]].iloc[0]), float(group[bounds[1]].iloc[0])))
            else:
                ci = mean_ci(values)
                rows.append((xv, ci.estimate, ci.low, ci.high))
        summary = pd.DataFrame(rows, columns=["x", "y", "low", "high"])
        if len(part) > len(summary):
            ax.scatter(part[x], part[y], s=10, color=colour, alpha=0.35, linewidths=0)
        error = np.vstack([summary["y"] - summary["low"], summary["high"] - summary["y"]])
        # a t interval can reach below 0, which a log axis cannot show: stop the bar just above 0
        error[0] = np.minimum(error[0], 0.999 * summary["y"].to_numpy())
        error = np.where(np.isfinite(error), np.maximum(error, 0), 0)
        series_label = (label or "mean") if name is None else str(name)
        fit_name = "fit" if name is None and label is None else f"{series_label} fit"
        ax.errorbar(summary["x"], summary["y"], yerr=error, fmt="o", color=colour, capsize=3,
                    label=f"{series_label}, 95% CI")  # fmt: skip
        if fit is None:
            continue
        interval = ""
        if fit == "auto":
            slope, prefactor = scaling_fit(summary["x"].to_numpy(), summary["y"].to_numpy())
        elif isinstance(fit, Mapping):
            slope, prefactor = float(fit["slope"]), math.exp(float(fit["intercept"]))
            if math.isfinite(fit.get("slope_low", math.nan)) and math.isfinite(fit.get("slope_high", math.nan)):
                interval = f" [{fit['slope_low']:.2f}, {fit['slope_high']:.2f}]"
        elif isinstance(fit, (tuple, list)):
            slope, prefactor = fit
        else:
            raise ValueError(f"fit must be 'auto', None, a mapping or (slope, prefactor), got {fit!r}")
        if math.isfinite(slope):
            xs = np.geomspace(summary["x"].min(), summary["x"].max(), 50)
            ax.plot(xs, prefactor * xs**slope, color=colour, linewidth=1.2, linestyle="--",
                    label=f"{fit_name}: slope {slope:.2f}{interval}")  # fmt: skip
            if reference_slope is not None and name == series[0][0]:
                mid = math.sqrt(xs[0] * xs[-1])
                ref = prefactor * mid**slope * (xs / mid) ** reference_slope
                ax.plot(xs, ref, color="0.5", linestyle=":", linewidth=1.2, label=f"slope {reference_slope:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="job scale" if x in ("scale", "job_scale") else x, ylabel=ylabel or y)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return ax
