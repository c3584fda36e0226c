"""GMSR under overload: the most throughput, the most stable backends, the least workload on them.

The GMSR paper's overload theorem (Zhang et al., arXiv:2411.17103): when no
routing keeps every backend stable, GMSR maximises the throughput, keeps the
largest set of backends stable among throughput-optimal routings, and
minimises the total load on those. ``lbsim.optimum(scenario, overload=True)``
computes that optimum independently (a maximum flow, its minimum cut and the
convex optimum on the stable part: docs/model.md section 2); this script
measures every router against it on ``scenarios/gmsr_overload.toml`` (no
delay) and ``scenarios/gmsr_overload_delayed.toml`` (50-300 ms), in the
simulator at shrinking job scales and in the fluid model.

Per run, over the late window (the second half of ``[warmup, horizon)``):

* **served**: work units per second the backends serve (jobs finished or
  not), from the cumulative ``served`` column of the timeseries, with a
  batch-means standard error;
* **growth** of each backend's load: its net change over the window divided
  by the window, with the standard error of the per-batch increments (an
  overloaded backend's load is a random walk with drift, whose increments
  are nearly independent; a stable one's increments are negatively
  correlated, so the error is conservative). A backend is **unstable** when
  its growth exceeds ``Z`` errors and ``GROWTH_FLOOR`` of the demand: it then
  loses that much throughput for ever;
* **workload**: the time-averaged total load on the optimum's stable
  backends, with a batch-means error, against the optimum's least total load.

The served figure of a finite run falls short of the optimum's throughput by
the part of its capacity an unstable backend has not reached yet: its load
grows at least as fast as ``g_j = Lambda_j - cap_j``, so over the window the
shortfall is at most the mean of ``cap_j - mu_j(g_j t)`` (:func:`shortfall`).

Writes ``gmsr_overload.png`` (served and workload per router, without and
with delays), ``gmsr_overload_scaling.png`` (GMSR's workload gap against the
job scale, the fluid model beside it) and the tables ``gmsr_overload.md``
(per router) and ``gmsr_overload_scaling.md`` (GMSR per job scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import common
import numpy as np
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.fluid import fluid

#: the scenarios: label -> file
SCENARIO_FILES = {"no delay": "gmsr_overload.toml", "delays 50-300 ms": "gmsr_overload_delayed.toml"}
#: routers as ``name[:param=value,...]``; ``fluid`` says whether the fluid model has a twin
ROUTERS = ("gmsr", "jsq", "least_load", "dgdlb", "prequal", "random", "weighted:split=capacity")
QUICK_ROUTERS = ("gmsr", "jsq", "random", "weighted:split=capacity")
FLUID_ROUTERS = ("gmsr", "least_load", "dgdlb", "random", "weighted:split=capacity")
QUICK_FLUID_ROUTERS = ("gmsr", "random")
#: how many standard errors an estimate may miss by (as the tests' helpers.Z)
Z = 4.5
#: batches of the late window (batch means and increments)
BATCHES = 20
#: a backend whose load grows by less than this fraction of the demand per second counts as stable
GROWTH_FLOOR = 0.01
#: a tie band for the argmin fluid routers without delay (lbsim.fluid: keeps the step at the rates' scale)
FLUID_BAND = 0.01


def parse_router(spec: str) -> tuple[str, dict[str, str]]:
    """``"weighted:split=capacity"`` -> ``("weighted", {"split": "capacity"})``."""
    name, _, rest = spec.partition(":")
    params = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, params


@dataclass(frozen=True)
class Window:
    """The late window ``[start, end)`` of a run, cut into ``BATCHES`` batches."""

    start: float
    end: float

    @classmethod
    def late(cls, scenario: lbsim.Scenario) -> Window:
        sim = scenario.simulation
        return cls(sim.warmup + 0.5 * (sim.horizon - sim.warmup), sim.horizon)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.start, self.end, BATCHES + 1)


def _at(t: np.ndarray, values: np.ndarray, when: np.ndarray) -> np.ndarray:
    """``values`` (T, ...) at the samples nearest ``when`` (samples every sample_interval)."""
    return values[np.clip(np.searchsorted(t, when - 1e-9), 0, len(t) - 1)]


def _batch_means(t: np.ndarray, values: np.ndarray, window: Window) -> tuple[float, float]:
    """Mean of ``values`` over the window's samples and its batch-means standard error."""
    edges = window.edges
    which = np.searchsorted(edges, t, side="right") - 1
    inside = (t >= window.start) & (t < window.end)
    means = np.array([values[inside & (which == b)].mean() for b in range(BATCHES)])
    return float(means.mean()), float(means.std(ddof=1) / math.sqrt(BATCHES))


def _increments(t: np.ndarray, cumulative: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Rate of change of ``cumulative`` (T, B) over the window, per column, and its batch-increment error."""
    at = _at(t, cumulative, window.edges)
    rates = np.diff(at, axis=0) / (window.end - window.start) * BATCHES
    return rates.mean(axis=0), rates.std(axis=0, ddof=1) / math.sqrt(BATCHES)


def measure_simulation(timeseries: pd.DataFrame, scenario: lbsim.Scenario, opt) -> dict:
    """served, per-backend growth and unstable set, workload on the optimum's stable backends (with errors)."""
    window = Window.late(scenario)
    load = timeseries.pivot(index="t", columns="backend", values="load").sort_index()
    served = timeseries.pivot(index="t", columns="backend", values="served").sort_index()
    t = load.index.to_numpy(dtype=float)
    served_rate, served_se = _batch_means_of_rate(t, served.to_numpy(dtype=float).sum(axis=1), window)
    growth, growth_se = _increments(t, load.to_numpy(dtype=float), window)
    floor = GROWTH_FLOOR * float(scenario.demand.sum())
    unstable = (growth > Z * growth_se) & (growth > floor)
    workload, workload_se = _batch_means(t, load.to_numpy(dtype=float)[:, opt.stable_backends].sum(axis=1), window)
    return {
        "served": served_rate,
        "served_se": served_se,
        "growth": growth.tolist(),
        "growth_se": growth_se.tolist(),
        "unstable": [int(j) for j in np.flatnonzero(unstable)],
        "workload": workload,
        "workload_se": workload_se,
    }


def _batch_means_of_rate(t: np.ndarray, cumulative: np.ndarray, window: Window) -> tuple[float, float]:
    """The mean rate of a cumulative count over the window, and the batch-means error of the per-batch rates."""
    rate, se = _increments(t, cumulative[:, None], window)
    return float(rate[0]), float(se[0])


def measure_fluid(model, scenario: lbsim.Scenario, opt) -> dict:
    """The same measures on a fluid trajectory: served ``sum_j mu_j(x_j)``, growth, workload (no noise)."""
    window = Window.late(scenario)
    t, x = np.asarray(model.t, dtype=float), np.asarray(model.load, dtype=float)
    inside = (t >= window.start) & (t < window.end)
    rates = scenario.service_rates
    mu = np.column_stack([np.asarray(rates[j].value(x[:, j]), dtype=float) for j in range(x.shape[1])])
    ends = _at(t, x, np.array([window.start, window.end]))
    growth = (ends[1] - ends[0]) / (window.end - window.start)
    unstable = growth > GROWTH_FLOOR * float(scenario.demand.sum())
    return {
        "served": float(mu[inside].sum(axis=1).mean()),
        "served_se": 0.0,
        "growth": growth.tolist(),
        "growth_se": [0.0] * x.shape[1],
        "unstable": [int(j) for j in np.flatnonzero(unstable)],
        "workload": float(x[inside][:, opt.stable_backends].sum(axis=1).mean()),
        "workload_se": 0.0,
    }


def shortfall(scenario: lbsim.Scenario, opt) -> float:
    """How far below ``opt.throughput`` a routing at the optimum serves over the late window, at most.

    An unstable backend ``j`` receives ``Lambda_j > cap_j``; its load grows
    at ``Lambda_j - mu_j(x_j) >= g_j = Lambda_j - cap_j``, so ``x_j(t) >=
    g_j t`` and it serves ``mu_j(x_j(t)) >= mu_j(g_j t)``. The bound is the
    window's mean of ``cap_j - mu_j(g_j t)`` summed over the unstable
    backends (a fluid bound: it ignores the noise, which the tests add).
    """
    window = Window.late(scenario)
    t = np.linspace(window.start, window.end, 2001)
    rates = scenario.service_rates
    total = 0.0
    for j in opt.unstable_backends:
        growth = float(opt.flow[j] - opt.served[j])
        cap = float(opt.served[j])
        total += float(np.mean(cap - np.asarray(rates[j].value(growth * t), dtype=float)))
    return total


def experiment(settings: Settings) -> tuple[pd.DataFrame, dict]:
    """Every run as a tidy table (a row per scenario, router, job scale and seed, or fluid model) and the optima."""
    horizon, warmup = settings.pick((150.0, 30.0), (300.0, 60.0))
    scales = settings.pick((0.03,), (0.1, 0.03, 0.01))
    seeds = settings.pick((1,), (1, 2, 3))
    routers = settings.pick(QUICK_ROUTERS, ROUTERS)
    scenarios, optima, jobs, keys = {}, {}, [], []
    for label, file in SCENARIO_FILES.items():
        scenario = lbsim.load_scenario(SCENARIOS / file, warn=False)
        scenario = scenario.replace(**{"simulation.horizon": horizon, "simulation.warmup": warmup})
        scenarios[label], optima[label] = scenario, lbsim.optimum(scenario, overload=True)
        for spec in routers:
            name, params = parse_router(spec)
            for scale in scales:
                for seed in seeds:
                    config = scenario.replace(**{"simulation.job_scale": scale, "simulation.seed": seed}).to_dict()
                    jobs.append((config, name, params, ("timeseries",)))
                    keys.append((label, spec, scale, seed))
    outputs = common.parallel_map(common.simulate_tables, jobs, settings.workers)
    rows = []
    for (label, spec, scale, seed), out in zip(keys, outputs):
        measured = measure_simulation(out["timeseries"], scenarios[label], optima[label])
        rows.append({"scenario": label, "router": spec, "model": "simulator", "job_scale": scale, "seed": seed}
                    | measured)  # fmt: skip
    for label, scenario in scenarios.items():
        for spec in settings.pick(QUICK_FLUID_ROUTERS, FLUID_ROUTERS):
            name, params = parse_router(spec)
            model = fluid(scenario, router=name, band=FLUID_BAND, record_split=False, **params)
            measured = measure_fluid(model, scenario, optima[label])
            rows.append({"scenario": label, "router": spec, "model": "fluid", "job_scale": 0.0, "seed": 0} | measured)
    table = pd.DataFrame(rows)
    for label, scenario in scenarios.items():
        table.loc[table["scenario"] == label, "shortfall"] = shortfall(scenario, optima[label])
    return table, {"optima": optima, "scenarios": scenarios}


# -- tables and figures ----------------------------------------------------------------------
def _names(scenario: lbsim.Scenario, backends) -> str:
    return ", ".join(scenario.backend_label(int(j)) for j in backends) or "none"


def _stable_set(group: pd.DataFrame, scenario: lbsim.Scenario) -> str:
    """The backends every run of the group kept stable; '(k/n seeds)' when the runs disagree."""
    everyone = set(range(scenario.num_backends))
    sets = [tuple(sorted(everyone - set(u))) for u in group["unstable"]]
    common_set = max(set(sets), key=sets.count)
    text = _names(scenario, common_set)
    if len(set(sets)) > 1:
        text += f" ({sets.count(common_set)}/{len(sets)} seeds)"
    return text


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean across seeds and the half-width of its 95% t-interval (0 for one value)."""
    from scipy import stats

    v = values.to_numpy(dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def _fmt(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}g} ± {half:.2g}" if half > 0 else f"{mean:.{digits}g}"


def router_table(table: pd.DataFrame, context: dict, scale: float) -> pd.DataFrame:
    """One row per scenario and router at ``scale`` (and the fluid model): served, stable set, workload / optimum."""
    rows = []
    for label, opt in context["optima"].items():
        scenario = context["scenarios"][label]
        rows.append({
            "scenario": label, "router": "overload optimum", "model": "lbsim optimum --overload",
            "served (work/s)": f"{opt.throughput:.3g}", "stable backends": _names(scenario, opt.stable_backends),
            "workload on them": f"{opt.total_load:.3g}", "workload / optimum": "1",
        })  # fmt: skip
        here = table[table["scenario"] == label]
        simulated, fluid_runs = here[here["job_scale"] == scale], here[here["model"] == "fluid"]
        for model, rows_of in (("simulator", simulated), ("fluid", fluid_runs)):
            for spec, group in rows_of.groupby("router", sort=False):
                served, served_ci = _mean_ci(group["served"])
                work, work_ci = _mean_ci(group["workload"])
                where = f"job scale {scale:g}" if model == "simulator" else "fluid"
                rows.append({
                    "scenario": label, "router": spec, "model": where,
                    "served (work/s)": _fmt(served, served_ci), "stable backends": _stable_set(group, scenario),
                    "workload on them": _fmt(work, work_ci), "workload / optimum": _fmt(work / opt.total_load,
                                                                                         work_ci / opt.total_load),
                })  # fmt: skip
    return pd.DataFrame(rows)


def scaling_table(table: pd.DataFrame, context: dict, router: str = "gmsr") -> pd.DataFrame:
    """``router``'s served, unstable growth and workload gap per scenario and job scale, the fluid model last."""
    rows = []
    for label, opt in context["optima"].items():
        here = table[(table["scenario"] == label) & (table["router"] == router)]
        unstable = opt.unstable_backends
        growth_opt = float((opt.flow - opt.served)[unstable].sum())
        for (model, scale), group in here.groupby(["model", "job_scale"], sort=False):
            served, served_ci = _mean_ci(group["served"])
            work, work_ci = _mean_ci(group["workload"])
            growth, growth_ci = _mean_ci(pd.Series([float(np.sum(np.asarray(g)[unstable])) for g in group["growth"]]))
            rows.append({
                "scenario": label, "job scale": "fluid" if model == "fluid" else f"{scale:g}",
                "served / optimum": _fmt(served / opt.throughput, served_ci / opt.throughput, 4),
                "growth of the unstable (work/s)": _fmt(growth, growth_ci),
                "predicted growth": f"{growth_opt:.3g}",
                "workload / optimum": _fmt(work / opt.total_load, work_ci / opt.total_load, 4),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _bars(table: pd.DataFrame, context: dict, scale: float):
    figure, axes = plots.new_figure(1, 2, figsize=(12.0, 4.2))
    labels = list(context["optima"])
    sim = table[(table["model"] == "simulator") & (table["job_scale"] == scale)]
    routers = list(dict.fromkeys(sim["router"]))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        opt = context["optima"][label]
        means = sim[sim["scenario"] == label].groupby("router", sort=False)[["served", "workload"]].mean()
        means = means.reindex(routers)
        x = np.arange(len(routers)) + (k - (len(labels) - 1) / 2) * width
        axes[0].bar(x, means["served"], width, label=label)
        axes[1].bar(x, means["workload"] / opt.total_load, width, label=label)
    opt = next(iter(context["optima"].values()))
    axes[0].axhline(opt.throughput, color="black", ls="--", lw=1, label="optimum's throughput")
    axes[0].set_ylim(0.6 * opt.throughput, 1.05 * opt.throughput)
    axes[0].set_ylabel("served (work/s)")
    axes[1].axhline(1.0, color="black", ls="--", lw=1, label="least workload")
    axes[1].set_ylabel("workload on the stable backends / optimum")
    for ax in axes:
        ax.set_xticks(np.arange(len(routers)), routers, rotation=25, ha="right")
        ax.legend(fontsize=8)
    axes[0].set_title(f"served throughput (job scale {scale:g})")
    axes[1].set_title("total load on the optimum's stable backends")
    return figure


def _scaling_figure(table: pd.DataFrame, context: dict, router: str = "gmsr"):
    figure, ax = plots.new_figure(1, 1, figsize=(6.4, 4.2))
    for label, opt in context["optima"].items():
        here = table[(table["scenario"] == label) & (table["router"] == router)]
        sim = here[here["model"] == "simulator"].groupby("job_scale")["workload"].mean()
        (line,) = ax.plot(sim.index, sim.to_numpy() / opt.total_load - 1.0, "o-", label=f"{router}, {label}")
        fl = here[here["model"] == "fluid"]["workload"]
        if len(fl):
            ax.axhline(float(fl.iloc[0]) / opt.total_load - 1.0, color=line.get_color(), ls=":",
                       label=f"fluid model, {label}")  # fmt: skip
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("job scale")
    ax.set_ylabel("workload / least workload - 1")
    ax.set_title(f"{router}: workload on the stable backends against the job scale")
    ax.legend(fontsize=8)
    return figure


def run(settings: Settings) -> Section:
    table, context = experiment(settings)
    stored = table.assign(**{c: table[c].map(lambda v: ";".join(f"{x:.6g}" for x in v) if isinstance(v, list)
                                               else v) for c in ("growth", "growth_se", "unstable")})  # fmt: skip
    stored.to_csv(settings.out / "gmsr_overload_runs.csv", index=False)
    scale = float(table.loc[table["model"] == "simulator", "job_scale"].min())
    routers_md = common.write_table(router_table(table, context, scale), settings, "gmsr_overload")
    scaling_md = common.write_table(scaling_table(table, context), settings, "gmsr_overload_scaling")
    bars = common.save(_bars(table, context, scale), settings, "gmsr_overload")
    curve = common.save(_scaling_figure(table, context), settings, "gmsr_overload_scaling")

    opt = context["optima"]["no delay"]
    horizon = context["scenarios"]["no delay"].simulation.horizon
    scales = sorted(set(table.loc[table["model"] == "simulator", "job_scale"]), reverse=True)
    sim = table[(table["model"] == "simulator") & (table["job_scale"] == scale)]
    mean = sim.groupby(["scenario", "router"])[["served", "workload"]].mean()
    gm, rnd = mean.loc[("no delay", "gmsr")], mean.loc[("no delay", "random")]
    headline = (
        f"optimum: throughput {opt.throughput:.3g} of {opt.demand:.3g}, least workload {opt.total_load:.3g}; "
        f"at job scale {scale:g} gmsr serves {gm['served']:.3f} with workload {gm['workload'] / opt.total_load:.3f}x "
        f"the least, random serves {rnd['served']:.3f}"
    )
    text = (
        "Two frontends, three backends: one frontend overloads its only backend alone, the other can use it or "
        "two backends with unlike rate functions (`scenarios/gmsr_overload.toml`, and "
        "`scenarios/gmsr_overload_delayed.toml` with 50-300 ms delays); the overload optimum is "
        "`lbsim optimum --overload`. Late-window served throughput, the backends kept stable and the total load "
        f"on the optimum's stable backends; {len(set(sim['seed']))} seed(s) of {horizon:g} s at job scales "
        f"{', '.join(f'{s:g}' for s in scales)}, the fluid model beside them (± is a 95% interval across seeds)."
    )
    return Section(
        title="GMSR under overload: the most throughput, the most stable backends, the least workload",
        command=common.command("gmsr_overload.py"),
        text=text,
        tables=[routers_md, scaling_md],
        figures=[bars, curve],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
