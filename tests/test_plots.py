"""lbsim.plots: each figure has the axes, lines, labels and scales it promises.

Most tests draw small synthetic tables, whose content is known exactly; one
module-level fixture runs a tiny real simulation (and its fluid model) so
the functions are also checked on the tables lbsim actually writes.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import lbsim
from lbsim import plots


# -- synthetic tables ------------------------------------------------------------------------
def synthetic_jobs(routers=("a", "b"), n=500, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k, router in enumerate(routers):
        latency = rng.exponential(1.0 + k, n)
        frames.append(
            pd.DataFrame({"router": router, "seed": 1, "t_arrival": np.sort(rng.uniform(0, 100, n)), "latency": latency})
        )
    return pd.concat(frames, ignore_index=True)


def comparison_table(routers=("a", "b", "c")) -> pd.DataFrame:
    rows = []
    for k, router in enumerate(routers):
        row = {"router": router}
        for s, base in zip(plots.STATISTICS, (1.0, 0.7, 2.3, 4.6, 6.9)):
            row[s] = base * (1 + k)
            row[f"{s}_low"], row[f"{s}_high"] = 0.9 * row[s], 1.1 * row[s]
        rows.append(row)
    table = pd.DataFrame(rows)
    table.loc[0, "p999_high"] = math.nan  # a missing bound draws no error bar, never fails
    return table


def line_labels(ax: Axes) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


# -- latency distributions -------------------------------------------------------------------
def test_ecdf_has_one_curve_per_router_from_zero_to_one():
    ax = plots.latency_ecdf(synthetic_jobs())
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    assert ax.get_xscale() == "log"
    assert legend_texts(ax) == ["a", "b"]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert len(curves) == 2
    for line in curves:
        y = np.asarray(line.get_ydata())
        assert np.all(np.diff(y) >= 0) and y[-1] == pytest.approx(1.0) and y[0] > 0
    assert "latency" in ax.get_xlabel() and "P(" in ax.get_ylabel()


def test_ccdf_is_on_a_log_scale_and_reaches_one_over_n():
    n = 500
    ax = plots.latency_ccdf(synthetic_jobs(n=n), reference=1.5)
    assert ax.get_yscale() == "log"
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert len(curves) == 2
    for line in curves:
        y = np.asarray(line.get_ydata())
        assert y.min() == pytest.approx(1.0 / n)  # the last positive point of the CCDF
    # the reference is a vertical line at x = 1.5
    assert any(np.allclose(line.get_xdata(), 1.5) for line in ax.get_lines())
    assert "optimum mean" in legend_texts(ax)


def test_latency_distribution_draws_both_panels_on_an_agg_figure():
    fig = plots.latency_distribution(synthetic_jobs(("x", "y", "z")))
    assert isinstance(fig, Figure)
    left, right = fig.axes
    assert left.get_xscale() == "log" and right.get_yscale() == "log"
    assert legend_texts(left) == ["x", "y", "z"] and right.get_legend() is None
    # same colour for a router in both panels
    lc = [line.get_color() for line in left.get_lines() if len(line.get_xdata()) > 2]
    rc = [line.get_color() for line in right.get_lines() if len(line.get_xdata()) > 2]
    assert lc == rc
    fig.canvas.draw()  # renders without a display


def test_ungrouped_jobs_draw_one_curve_without_a_legend():
    jobs = synthetic_jobs(("only",)).drop(columns="router")
    ax = plots.latency_ecdf(jobs, by=None)
    assert len([line for line in ax.get_lines() if len(line.get_xdata()) > 2]) == 1
    assert ax.get_legend() is None


def test_latency_over_time_bins_by_arrival_and_shows_the_schedule():
    jobs = synthetic_jobs()
    ax = plots.latency_over_time(jobs, window=10.0, q=0.9, schedule=[[0.0, 0.5], [50.0, 1.0]])
    assert ax.get_yscale() == "log"
    assert legend_texts(ax) == ["a", "b"]
    line = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]  # hue order: "a" first
    x = np.asarray(line[0].get_xdata())
    assert np.allclose(x, np.arange(5.0, 100.0, 10.0))  # window centres
    y = np.asarray(line[0].get_ydata())
    a = jobs[jobs["router"] == "a"]
    first = a.loc[a["t_arrival"] < 10, "latency"].quantile(0.9)
    assert y[0] == pytest.approx(first)
    twin = [other for other in ax.figure.axes if other is not ax]
    assert twin and "multiplier" in twin[0].get_ylabel()


# -- comparison tables -----------------------------------------------------------------------
def test_percentile_bars_one_bar_per_router_and_statistic_with_intervals():
    table = comparison_table()
    ax = plots.percentile_bars(table, reference=0.8)
    assert ax.get_yscale() == "log"
    bars = ax.patches
    assert len(bars) == 3 * len(plots.STATISTICS)
    heights = sorted(round(b.get_height(), 9) for b in bars)
    expected = sorted(round(float(table.loc[k, s]), 9) for k in range(3) for s in plots.STATISTICS)
    assert heights == expected
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mean", "p50", "p90", "p99", "p99.9"]
    assert legend_texts(ax)[:3] == ["a", "b", "c"] and "optimum mean" in legend_texts(ax)
    from matplotlib.container import ErrorbarContainer

    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 3  # one per router, spanning each interval
    segments = errorbars[1].lines[2][0].get_segments()
    spans = [(seg[0][1], seg[1][1]) for seg in segments]
    row = table.iloc[1]
    np.testing.assert_allclose(spans, [(row[f"{s}_low"], row[f"{s}_high"]) for s in plots.STATISTICS])
    # router "a" has no upper bound on its p99.9: the bar reaches the estimate only
    top = errorbars[0].lines[2][0].get_segments()[-1]
    assert top[1][1] == pytest.approx(table.loc[0, "p999"])


def test_percentile_bars_on_a_given_axes():
    fig, ax = plots.new_figure()
    out = plots.percentile_bars(comparison_table(("r",)), statistics=("mean", "p99"), log=False, ax=ax)
    assert out is ax and ax.get_yscale() == "linear" and len(ax.patches) == 2


# -- trajectories ----------------------------------------------------------------------------
def synthetic_timeseries(backends=3, T=50, offset=0.0) -> pd.DataFrame:
    t = np.arange(T, dtype=float)
    return pd.DataFrame(
        {
            "t": np.repeat(t, backends),
            "backend": np.tile(np.arange(backends), T),
            "load": np.concatenate([np.arange(backends) + offset + 0.01 * k for k in range(T)]),
        }
    )


def synthetic_routing(frontends=2, backends=2, T=20) -> pd.DataFrame:
    rows = []
    for t in range(T):
        for i in range(frontends):
            for j in range(backends):
                rows.append({"t": float(t), "frontend": i, "backend": j, "prob": 1.0 / backends})
    return pd.DataFrame(rows)


def test_load_trajectories_pairs_each_backend_with_its_fluid_line():
    ax = plots.load_trajectories(
        synthetic_timeseries(), synthetic_timeseries(offset=0.5), names=["x", "y", "z"], optimum=[1, 2, 3]
    )
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata())]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert len(solid) == 3 and len(dashed) == 3
    assert [line.get_color() for line in solid] == [line.get_color() for line in dashed]
    assert legend_texts(ax) == ["x", "y", "z", "simulated", "fluid", "optimum"]
    assert ax.get_xlabel() == "time (s)" and "load" in ax.get_ylabel()


def test_routing_splits_all_edges_or_one_frontend():
    routing = synthetic_routing()
    ax = plots.routing_splits(routing, routing, optimum=np.full((2, 2), 0.5))
    assert legend_texts(ax)[:4] == ["frontend 0 -> backend 0", "frontend 0 -> backend 1",
                                    "frontend 1 -> backend 0", "frontend 1 -> backend 1"]  # fmt: skip
    assert {"fluid", "optimum"} <= set(legend_texts(ax))
    one = plots.routing_splits(routing, frontend=1, names=["p", "q"])
    assert legend_texts(one) == ["p", "q"]
    assert one.get_ylim() == (-0.02, 1.02)


# -- sweeps ----------------------------------------------------------------------------------
def synthetic_results() -> pd.DataFrame:
    rows = []
    for a in (0.1, 0.2, 0.4):
        for b in ("[[0.1]]", "[[0.2]]"):
            for seed in (1, 2):
                rows.append({"router.step": a, "network.delay": b, "router": "dgdlb", "seed": seed,
                             "mean_latency": a * 10 + float(b[2:5]) + seed})  # fmt: skip
    return pd.DataFrame(rows)


def test_sweep_heatmap_is_the_seed_mean_over_two_grid_keys():
    results = synthetic_results()
    ax = plots.sweep_heatmap(results, x="router.step", y="network.delay", where={"router": "dgdlb"})
    assert ax.get_xlabel() == "router.step" and ax.get_ylabel() == "network.delay"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.2", "0.4"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["[[0.1]]", "[[0.2]]"]
    mesh = ax.collections[0]
    values = np.asarray(mesh.get_array()).reshape(2, 3)
    expected = [[a * 10 + b + 1.5 for a in (0.1, 0.2, 0.4)] for b in (0.1, 0.2)]
    np.testing.assert_allclose(values, expected)
    assert len(ax.texts) == 6  # annotated cells
    assert ax.figure.axes[-1].get_ylabel() == "mean_latency"  # the colour bar


def test_sweep_heatmap_log_colours():
    ax = plots.sweep_heatmap(synthetic_results(), x="router.step", y="network.delay", log=True, annot=False)
    from matplotlib.colors import LogNorm

    assert isinstance(ax.collections[0].norm, LogNorm) and not ax.texts


def test_sweep_lines_one_line_per_router():
    results = pd.concat([synthetic_results(), synthetic_results().assign(router="jsq")], ignore_index=True)
    ax = plots.sweep_lines(results, x="router.step", logy=True)
    assert legend_texts(ax) == ["dgdlb", "jsq"] and ax.get_yscale() == "log"


# -- job-size scaling ------------------------------------------------------------------------
def test_scaling_fit_recovers_a_power_law():
    x = np.array([0.001, 0.01, 0.1, 1.0])
    slope, prefactor = plots.scaling_fit(x, 3.0 * x**0.5)
    assert slope == pytest.approx(0.5) and prefactor == pytest.approx(3.0)
    assert math.isnan(plots.scaling_fit([1.0], [1.0])[0])


def test_scaling_plot_is_log_log_with_the_fitted_slope():
    rng = np.random.default_rng(1)
    scales = np.repeat([0.01, 0.03, 0.1, 0.3, 1.0], 3)
    runs = pd.DataFrame({"scale": scales, "seed": np.tile([1, 2, 3], 5),
                         "rms_distance": 2.0 * scales**0.5 * rng.uniform(0.95, 1.05, len(scales))})  # fmt: skip
    ax = plots.scaling_plot(runs)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "job scale"
    labels = legend_texts(ax)
    fit = [t for t in labels if t.startswith("fit: slope")]
    assert fit and abs(float(fit[0].split()[-1]) - 0.5) < 0.05
    assert "slope 0.5" in labels
    assert len(ax.collections) >= 1  # the faint per-seed points


def test_scaling_plot_of_a_per_scale_table_with_a_given_fit():
    # lbsim.scaling's per-scale table: <metric>_mean with <metric>_low / _high, and its fits dict
    table = pd.DataFrame({"scale": [0.01, 0.1, 1.0], "rms_mean": [0.1, 0.3, 1.0],
                          "rms_low": [-0.05, 0.2, 0.8], "rms_high": [0.2, 0.4, 1.2]})  # fmt: skip
    fit = {"slope": 0.5, "intercept": 0.0, "slope_low": 0.4, "slope_high": 0.6}
    ax = plots.scaling_plot(table, "rms_mean", fit=fit, reference_slope=None)
    assert "fit: slope 0.50 [0.40, 0.60]" in legend_texts(ax)
    fitted = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    np.testing.assert_allclose(fitted.get_ydata(), np.asarray(fitted.get_xdata()) ** 0.5)
    # a (slope, prefactor) pair is drawn as given
    ax2 = plots.scaling_plot(table, "rms_mean", fit=(1.0, 2.0))
    assert "fit: slope 1.00" in legend_texts(ax2)


# -- a tiny real run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run():
    scenario = lbsim.load_scenario(lbsim_root() / "scenarios" / "two_regions.toml").replace(
        **{"simulation.horizon": 40.0, "simulation.warmup": 5.0, "simulation.job_scale": 0.2}
    )
    from lbsim.fluid import fluid

    return scenario, lbsim.simulate(scenario, router="dgdlb"), fluid(scenario, router="dgdlb")


def lbsim_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def test_plots_of_a_real_run(real_run):
    scenario, result, model = real_run
    names = [scenario.backend_label(j) for j in range(scenario.num_backends)]
    jobs = result.measured().assign(router=result.router)
    fig = plots.latency_distribution(jobs, reference=lbsim.optimum(scenario).mean_latency)
    assert legend_texts(fig.axes[0]) == ["dgdlb", "optimum mean"]

    ax = plots.load_trajectories(result.timeseries, model.timeseries, names=names)
    assert legend_texts(ax) == names + ["simulated", "fluid"]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata())]
    assert len(solid) == scenario.num_backends
    assert len(solid[0].get_xdata()) == result.timeseries["t"].nunique()

    ax = plots.routing_splits(result.routing, model.routing, frontend=0, names=names)
    assert legend_texts(ax) == names + ["fluid"]
    fig.canvas.draw()
    ax.figure.canvas.draw()


def test_percentile_bars_from_a_real_comparison(tmp_path):
    scenario = lbsim.load_scenario(lbsim_root() / "scenarios" / "two_regions.toml").replace(
        **{"simulation.horizon": 20.0, "simulation.warmup": 2.0, "simulation.job_scale": 0.5}
    )
    from lbsim.experiments import compare

    comparison = compare(scenario, ["jsq", "nearest"], seeds=2, progress=False)
    ax = plots.percentile_bars(comparison.table, reference=comparison.optimum)
    assert len(ax.patches) == 2 * len(plots.STATISTICS)
    assert set(legend_texts(ax)) == {"jsq", "nearest", "optimum mean"}
    ax.figure.savefig(tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 1000


def test_scaling_plot_of_a_real_scaling_run():
    from lbsim.scaling import scaling

    scenario = lbsim.load_scenario(lbsim_root() / "scenarios" / "two_regions.toml").replace(
        **{"simulation.horizon": 20.0, "simulation.warmup": 2.0, "router.name": "dgdlb"}
    )
    result = scaling(scenario, router="dgdlb", scales=(1.0, 0.3), seeds=2, progress=False)
    ax = plots.scaling_plot(result.runs, "rms_distance", fit=result.fits["rms_distance"], label="RMS")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert any(t.startswith("RMS fit: slope") for t in legend_texts(ax))
    per_scale = plots.scaling_plot(result.table, "rms_mean")
    assert len([t for t in legend_texts(per_scale) if t.startswith("fit: slope")]) == 1
