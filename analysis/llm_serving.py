"""Global routers times engine admission on data-parallel LLM engines (scenarios/llm_dp_global.toml).

Six global routers (dgdlb, gmsr, jsq, power_of_d, least_tokens, prequal)
times three admission policies inside every engine (fcfs, jsq, vllm_dp), all
on the same seeds (common random numbers): TTFT and TPOT p99, token
throughput, energy per token and mean latency with 95% CIs across seeds
(docs/llm.md, "Statistics"). Then DGD-LB's distance from the centralized
optimum, which sees each engine through its equivalent rate function
(docs/llm.md, "Equivalent rate function"): the optimum's split and loads
against DGD-LB's time-averaged ones after the warm-up, and the mean latency
of both, with the optimum's static split played in the simulator to tell
the routing's share of the gap from the approximation's. Writes
``llm_serving.png`` (four of the figures by router, one bar per admission),
``llm_serving_split.png`` (DGD-LB's split of the us frontend over time, the optimum's dotted),
``llm_serving.md``/``.csv`` (the grid), ``llm_serving_optimum.md``/``.csv``
(flows, requests per engine and routing) and ``llm_serving_latency.md``/``.csv``.
"""

from __future__ import annotations

from typing import Any

import common
import numpy as np
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.stats import mean_ci

ROUTERS = ["dgdlb", "gmsr", "jsq", "power_of_d", "least_tokens", "prequal"]
ADMISSIONS = ["fcfs", "jsq", "vllm_dp"]
#: the optimum's static split played in the simulator: the simulated latency of the optimum's routing
OPTIMAL_SPLIT = "weighted:split=optimal"
#: summary key, column title, scale (the table's unit over the summary's)
METRICS = [
    ("ttft_p99", "TTFT p99 (s)", 1.0),
    ("tpot_p99", "TPOT p99 (ms)", 1e3),
    ("throughput", "throughput (tokens/s)", 1.0),
    ("energy_per_token", "energy per token (J)", 1.0),
    ("mean_latency", "mean latency (s)", 1.0),
]


def with_admission(scenario: lbsim.Scenario, name: str) -> lbsim.Scenario:
    """The scenario with admission policy ``name`` on every engine (vllm_dp binds requests to ranks on arrival)."""
    dispatch = "on_arrival" if name == "vllm_dp" else "pool"
    changes: dict[str, Any] = {}
    for j in range(scenario.num_backends):
        changes[f"backends.{j}.admission"] = {"name": name}
        changes[f"backends.{j}.dispatch"] = dispatch
    return scenario.replace(**changes)


def as_call(router: str, seed: int) -> tuple[str, dict[str, Any]]:
    """``name:param=value`` as ``lbsim.simulate``'s router name and keyword arguments, with the seed."""
    name, _, params = router.partition(":")
    return name, {"seed": seed} | dict(p.split("=", 1) for p in params.split(",") if p)


def run(settings: Settings) -> Section:
    scenario = lbsim.load_scenario(SCENARIOS / "llm_dp_global.toml", warn=False)
    horizon, warmup = settings.pick((8.0, 2.0), (150.0, 30.0))
    scenario = scenario.replace(**{"simulation.horizon": horizon, "simulation.warmup": warmup})
    seeds = [scenario.simulation.seed + k for k in range(settings.pick(2, 4))]

    # every cell on the same seeds; DGD-LB and the optimal split keep their routing and loads
    cells = [(admission, router) for admission in ADMISSIONS for router in ROUTERS]
    cells.append(("fcfs", OPTIMAL_SPLIT))
    configs = {admission: with_admission(scenario, admission).to_dict() for admission in ADMISSIONS}
    keep = {"dgdlb": ("routing", "timeseries"), OPTIMAL_SPLIT: ("timeseries",)}
    tasks = [(admission, router, seed) for admission, router in cells for seed in seeds]
    jobs = [(configs[a], *as_call(router, seed), keep.get(router, ())) for a, router, seed in tasks]
    outputs = dict(zip(tasks, common.parallel_map(common.simulate_tables, jobs, settings.workers), strict=True))
    runs = pd.DataFrame(
        [out["summary"] | {"admission": a, "router": r, "seed": seed} for (a, r, seed), out in outputs.items()]
    )
    runs.to_csv(settings.data / "llm_serving_runs.csv", index=False)

    table = cell_table(runs[runs["router"].isin(ROUTERS)])
    table_md = write_grid(table, settings)
    grid_png = common.save(grid_figure(table, len(seeds)), settings, "llm_serving")

    opt = lbsim.optimum(scenario)
    dgdlb = [outputs[("fcfs", "dgdlb", seed)] for seed in seeds]
    optimal_split = [outputs[("fcfs", OPTIMAL_SPLIT, seed)] for seed in seeds]
    split_md, distance = optimum_tables(scenario, opt, dgdlb, optimal_split, settings)
    names = [scenario.backend_label(j) for j in range(scenario.num_backends)]
    frontends = [scenario.frontend_label(i) for i in range(scenario.num_frontends)]
    ax = plots.routing_splits(dgdlb[0]["routing"], frontend=0, names=names, frontend_names=frontends,
                              optimum=opt.routing)  # fmt: skip
    ax.axvline(warmup, color="0.5", linewidth=0.8)
    ax.set_title(f"llm_dp_global: dgdlb's split of {frontends[0]} (seed {seeds[0]}, fcfs; dotted: the optimum)")
    split_png = common.save(ax.figure, settings, "llm_serving_split")
    latency = latency_against_optimum(runs, opt.mean_latency)

    c = table.set_index(["router", "admission"])
    best_ttft = table.loc[table["ttft_p99"].idxmin()]
    worst_ttft = table.loc[table["ttft_p99"].idxmax()]
    headline = (
        f"TTFT p99 {best_ttft['ttft_p99']:.3f} s ({best_ttft['router']}, {best_ttft['admission']}) to "
        f"{worst_ttft['ttft_p99']:.3f} s ({worst_ttft['router']}, {worst_ttft['admission']}); TPOT p99 "
        f"{table['tpot_p99'].min() * 1e3:.1f}-{table['tpot_p99'].max() * 1e3:.1f} ms; energy per token "
        f"{table['energy_per_token'].min():.3f}-{table['energy_per_token'].max():.3f} J; dgdlb (fcfs) mean latency "
        f"{c.loc[('dgdlb', 'fcfs'), 'mean_latency']:.2f} s, the optimum's split in the simulator "
        f"{latency['optimal split']:.2f} s, the equivalent-rate optimum {opt.mean_latency:.2f} s; dgdlb's flows "
        f"{distance:.1%} (total variation) from the optimum's"
    )
    text = (
        "`scenarios/llm_dp_global.toml`: us, eu and asia, one H100 and one H200 engine each (8 data-parallel "
        "Llama-8B ranks x 64 slots, affine step time), Azure-conversation requests, 137k output tokens/s "
        f"offered (about 60% of the engines' full-slot rate), 5-80 ms one way; {horizon:g} s ({warmup:g} s "
        f"warm-up), {len(seeds)} seeds per cell, the same seeds in every cell. ± is the half-width of a 95% "
        "interval across seeds. TTFT is from a request's arrival at its frontend to its first token back "
        "there; TPOT p99 in milliseconds; energy per token over the whole run."
    )
    return Section(
        title="Global routers times engine admission on data-parallel LLM engines",
        command=common.command("llm_serving.py"),
        text=text,
        tables=[table_md, split_md, latency_markdown(latency, opt.mean_latency, settings)],
        figures=[grid_png, split_png],
        headline=headline,
    )


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (router, admission): each metric's mean across seeds and its 95% interval."""
    rows = []
    for router in ROUTERS:
        for admission in ADMISSIONS:
            cell = runs[(runs["router"] == router) & (runs["admission"] == admission)]
            row: dict[str, Any] = {"router": router, "admission": admission, "seeds": len(cell)}
            for key, _, _ in METRICS:
                ci = mean_ci(cell[key].to_numpy(dtype=float))
                row |= {key: ci.estimate, f"{key}_low": ci.low, f"{key}_high": ci.high}
            rows.append(row)
    return pd.DataFrame(rows)


def write_grid(table: pd.DataFrame, settings: Settings) -> str:
    table.to_csv(settings.out / "llm_serving.csv", index=False)
    shown = pd.DataFrame(
        [
            {"router": r["router"], "admission": r["admission"]}
            | {
                title: common.with_ci(r[key] * scale, r[f"{key}_low"] * scale, r[f"{key}_high"] * scale)
                for key, title, scale in METRICS
            }
            for r in table.to_dict("records")
        ]
    )
    text = common.markdown(shown)
    (settings.out / "llm_serving.md").write_text(text + "\n")
    return text


def grid_figure(table: pd.DataFrame, seeds: int):
    """Four panels (TTFT p99, TPOT p99, throughput, energy per token): bars by router, one per admission, CIs."""
    figure, axes = plots.new_figure(2, 2, figsize=(11.0, 7.0))
    colours = dict(zip(ADMISSIONS, ["#4c72b0", "#dd8452", "#55a868"], strict=True))
    width = 0.8 / len(ADMISSIONS)
    centres = np.arange(len(ROUTERS))
    for ax, (key, title, scale) in zip(axes.flat, METRICS[:4], strict=True):
        for k, admission in enumerate(ADMISSIONS):
            rows = table[table["admission"] == admission].set_index("router").loc[ROUTERS]
            estimate = rows[key].to_numpy(dtype=float) * scale
            low = rows[f"{key}_low"].to_numpy(dtype=float) * scale
            high = rows[f"{key}_high"].to_numpy(dtype=float) * scale
            error = np.vstack([np.nan_to_num(estimate - low), np.nan_to_num(high - estimate)])
            x = centres - 0.4 + width * (k + 0.5)
            ax.bar(x, estimate, width=width, color=colours[admission], label=admission,
                   yerr=np.maximum(error, 0), error_kw={"elinewidth": 0.8, "capsize": 1.5})  # fmt: skip
        ax.set_xticks(centres, ROUTERS, fontsize="small", rotation=15)
        ax.set_ylabel(title)
        ax.grid(True, axis="y", alpha=0.3)
        # the bars differ by a few percent: a zero-based axis would hide every difference
        finite = table[[f"{key}_low", key, f"{key}_high"]].to_numpy(dtype=float) * scale
        finite = finite[np.isfinite(finite)]
        if finite.size:
            margin = 0.15 * max(finite.max() - finite.min(), 1e-3 * abs(finite.max()))
            ax.set_ylim(finite.min() - margin, finite.max() + margin)
    axes.flat[0].legend(title="admission", fontsize="small")
    figure.suptitle(f"llm_dp_global: router x engine admission (95% CIs across {seeds} seeds)")
    return figure


def time_averaged_split(routing: pd.DataFrame, warmup: float, frontends: int, backends: int) -> np.ndarray:
    """The F x B routing probabilities averaged over the samples after the warm-up."""
    after = routing[routing["t"] >= warmup]
    mean = after.groupby(["frontend", "backend"])["prob"].mean()
    split = np.zeros((frontends, backends))
    for (i, j), p in mean.items():
        split[int(i), int(j)] = p
    return split


def time_averaged_jobs(timeseries: pd.DataFrame, warmup: float, backends: int) -> np.ndarray:
    """Each backend's job count (pool + active requests) averaged over the samples after the warm-up."""
    mean = timeseries[timeseries["t"] >= warmup].groupby("backend")["jobs"].mean()
    return np.array([float(mean.get(j, 0.0)) for j in range(backends)])


def optimum_tables(scenario: lbsim.Scenario, opt, dgdlb: list[dict], optimal_split: list[dict], settings: Settings):
    """Per engine: the optimum's flow and requests in the engine against DGD-LB's and the optimal split's.

    Returns the markdown and DGD-LB's distance from the optimum: the total
    variation ``sum_j |f_j - f*_j| / (2 sum_j f*_j)`` between the flows.
    """
    F, B = scenario.num_frontends, scenario.num_backends
    warmup = scenario.simulation.warmup
    rates = np.array([f.rate for f in scenario.frontends], dtype=float)
    sbar = scenario.mean_size
    splits = np.array([time_averaged_split(out["routing"], warmup, F, B) for out in dgdlb])
    flows = np.einsum("i,sij->sj", rates, splits)
    dgdlb_jobs = np.array([time_averaged_jobs(out["timeseries"], warmup, B) for out in dgdlb])
    split_jobs = np.array([time_averaged_jobs(out["timeseries"], warmup, B) for out in optimal_split])
    rows = []
    for j in range(B):
        flow, jobs, static = mean_ci(flows[:, j]), mean_ci(dgdlb_jobs[:, j]), mean_ci(split_jobs[:, j])
        rows.append({
            "engine": scenario.backend_label(j),
            "optimum flow (tokens/s)": f"{opt.flow[j]:.4g}",
            "dgdlb flow (tokens/s)": common.with_ci(flow.estimate, flow.low, flow.high),
            "optimum requests": f"{opt.load[j] / sbar:.3g}",
            "optimal split, simulated requests": common.with_ci(static.estimate, static.low, static.high),
            "dgdlb requests": common.with_ci(jobs.estimate, jobs.low, jobs.high),
        })  # fmt: skip
    shown = pd.DataFrame(rows)
    shown.to_csv(settings.out / "llm_serving_optimum.csv", index=False)
    text = common.markdown(shown)
    mean_split = splits.mean(axis=0)
    routing = pd.DataFrame(
        [
            {"frontend": scenario.frontend_label(i)}
            | {scenario.backend_label(j): f"{opt.routing[i, j]:.2f} / {mean_split[i, j]:.2f}" for j in range(B)}
            for i in range(F)
        ]
    )
    title = "Routing, optimum / dgdlb (time-averaged after the warm-up, mean over seeds):"
    text += f"\n\n{title}\n\n" + common.markdown(routing)
    (settings.out / "llm_serving_optimum.md").write_text(text + "\n")
    distance = float(np.abs(flows.mean(axis=0) - opt.flow).sum() / (2 * opt.flow.sum()))
    return text, distance


def latency_against_optimum(runs: pd.DataFrame, optimum: float) -> dict[str, float]:
    """Mean latency (fcfs admission, mean over seeds) of dgdlb and of the optimum's split played in the simulator."""
    fcfs = runs[runs["admission"] == "fcfs"]
    return {
        "dgdlb": float(fcfs.loc[fcfs["router"] == "dgdlb", "mean_latency"].mean()),
        "optimal split": float(fcfs.loc[fcfs["router"] == OPTIMAL_SPLIT, "mean_latency"].mean()),
        "optimum": optimum,
    }


def latency_markdown(latency: dict[str, float], optimum: float, settings: Settings) -> str:
    rows = [
        {"mean latency": "equivalent-rate optimum (`lbsim optimum`)", "s": optimum, "/ optimum": 1.0},
        {"mean latency": "the optimum's split in the simulator (`weighted:split=optimal`)",
         "s": latency["optimal split"], "/ optimum": latency["optimal split"] / optimum},
        {"mean latency": "dgdlb in the simulator", "s": latency["dgdlb"], "/ optimum": latency["dgdlb"] / optimum},
    ]  # fmt: skip
    return common.write_table(pd.DataFrame(rows), settings, "llm_serving_latency")


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
