"""DGD-LB against greedy routers as the network latency grows: the sweep scenarios/dgdlb_latency_sweep.toml.

Runs the sweep (a latency multiplier m on the whole delay matrix x six
routers x seeds), divides every run's mean latency by the centralized
optimum of its own latency matrix, and writes:

* ``dgdlb_latency.png``: mean latency / optimum against m, a line per router
  (95% CIs across seeds), log scale;
* ``dgdlb_latency_heatmap.png``: the same numbers as a router x m heatmap;
* ``dgdlb_latency_loads.png``: the loads at the largest m under dgdlb and
  under gmsr's latency variant (simulated, and the fluid model dashed):
  DGD-LB holds them steady, the greedy rule herds;
* ``dgdlb_latency.md``/``.csv``: the table.
"""

from __future__ import annotations

import json

import common
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.experiments import sweep
from lbsim.fluid import fluid
from lbsim.scenario import read_toml
from lbsim.stats import mean_ci

SWEEP = SCENARIOS / "dgdlb_latency_sweep.toml"
#: the sweep's delay matrices are m times this one (the header of the sweep file)
BASE_DELAY = 0.1  # [0][0]: west to west-a at m = 1


def multiplier(latency) -> float:
    matrix = json.loads(latency) if isinstance(latency, str) else latency
    return round(float(matrix[0][0]) / BASE_DELAY, 6)


def spec(settings: Settings) -> dict:
    data = read_toml(SWEEP)
    data["scenario"] = str((SWEEP.parent / data["scenario"]).resolve())
    if settings.quick:
        data["seeds"] = 1
        data["routers"] = ["dgdlb", "gmsr:variant=latency", "jsq"]
        data["set"] = {**data["set"], "simulation.horizon": 60.0, "simulation.warmup": 20.0}
        data["grid"] = {"network.delay": [data["grid"]["network.delay"][k] for k in (1, 4)]}
    return data


def run(settings: Settings) -> Section:
    data = spec(settings)
    results = sweep(data, settings.data / "dgdlb_latency", workers=settings.workers, progress=False)
    results["m"] = results["network.delay"].map(multiplier)

    base = lbsim.load_scenario(data["scenario"], warn=False)
    fixed = data["set"]
    scenarios = {}
    for latency in data["grid"]["network.delay"]:
        scenarios[multiplier(latency)] = base.replace(**fixed, **{"network.delay": latency})
    optimum = {m: lbsim.optimum(s).mean_latency for m, s in scenarios.items()}
    results["optimum"] = results["m"].map(optimum)
    results["ratio"] = results["mean_latency"] / results["optimum"]
    results.to_parquet(settings.data / "dgdlb_latency.parquet", index=False)

    routers = list(dict.fromkeys(results["router"]))
    rows = []
    for m, group in results.groupby("m", sort=True):
        row = {"m": m, "optimum (s)": optimum[m]}
        for router in routers:
            ci = mean_ci(group.loc[group["router"] == router, "ratio"].to_numpy())
            row[router] = common.with_ci(ci.estimate, ci.low, ci.high)
        rows.append(row)
    table_md = common.write_table(pd.DataFrame(rows), settings, "dgdlb_latency")

    # nearest's queue grows without bound (ratios in the tens, in the table): it would flatten the rest
    stable = [r for r in routers if r != "nearest"]
    ax = plots.sweep_lines(results[results["router"].isin(stable)], x="m", metric="ratio", hue_order=stable)
    ax.axhline(1.0, color="0.35", linestyle="--", linewidth=1)
    ax.set(xlabel="latency multiplier m (one-way delays 0.1-0.5 s at m = 1)", ylabel="mean latency / optimum",
           title="dgdlb_latency_sweep (95% CIs across seeds; nearest: see the table)")  # fmt: skip
    lines = common.save(ax.figure, settings, "dgdlb_latency")

    ax = plots.sweep_heatmap(results, x="m", y="router", metric="ratio", y_order=routers,
                             x_order=sorted(optimum), log=True, fmt=".3g")  # fmt: skip
    ax.set(xlabel="latency multiplier m", ylabel="", title="mean latency / optimum")
    heat = common.save(ax.figure, settings, "dgdlb_latency_heatmap")

    # The herd, seen in the loads at the largest multiplier.
    m_max = max(scenarios)
    shown = scenarios[m_max].replace(
        **{"simulation.horizon": settings.pick(30.0, 60.0), "simulation.warmup": 0.0, "simulation.sample_interval": 0.2}
    )
    names = [shown.backend_label(j) for j in range(shown.num_backends)]
    figure, axes = plots.new_figure(1, 2, figsize=(12.0, 4.2), sharey=True)
    last = shown.simulation.horizon - 20.0  # the last 20 s: a herd's swings are a few seconds long
    for ax, (router, params) in zip(axes, [("dgdlb", {"step": fixed["router.step"]}), ("gmsr", {"variant": "latency"})]):
        result = lbsim.simulate(shown, router=router, **params)
        model = fluid(shown, router=router, **params)
        sim, fl = result.timeseries, model.timeseries
        plots.load_trajectories(sim[sim["t"] >= last], fl[fl["t"] >= last], names=names, ax=ax)
        label = router if router == "dgdlb" else "gmsr:variant=latency"
        ax.set_title(f"{label} at m = {m_max:g}: loads (dashed: fluid model)")
    loads = common.save(figure, settings, "dgdlb_latency_loads")

    last = results[results["m"] == m_max].groupby("router")["ratio"].mean()
    first = results[results["m"] == min(scenarios)].groupby("router")["ratio"].mean()
    others = [r for r in routers if r != "dgdlb" and not r.startswith("weighted")]
    headline = f"mean latency / optimum at m = {min(scenarios):g} -> {m_max:g}: " + ", ".join(
        f"{r} {first[r]:.3g} -> {last[r]:.3g}" for r in ["dgdlb", *others]
    )
    text = (
        f"`scenarios/dgdlb_latency_sweep.toml`: the delay matrix of a two-region system times m, "
        f"{len(routers)} routers, {results['seed'].nunique()} seed(s) per point, "
        f"{fixed['simulation.horizon'] if not settings.quick else 60:g} s per run. Each entry is mean "
        "latency over the centralized optimum at that m, with a 95% interval across seeds. "
        "`nearest` overloads west-a (its queue grows all run), hence ratios in the tens."
    )
    return Section(
        title="DGD-LB under growing network latency",
        command=common.command("dgdlb_latency.py")
        + "  (the sweep alone: lbsim sweep scenarios/dgdlb_latency_sweep.toml --out out/dgdlb_latency --workers 2)",
        text=text,
        tables=[table_md],
        figures=[lines, heat, loads],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
