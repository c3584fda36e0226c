"""Every router on a global LLM serving system: 3 regions, 12 GPU pools (scenarios/llm_global.toml).

Compares all routers on common seeds (mean and tail latency with 95% CIs
across seeds, and the ratio to the centralized optimum) and writes
``llm_global.png`` (percentiles), ``llm_global_ccdf.png`` (the tails),
``llm_global_loads.png`` (DGD-LB's loads of four pools over time, simulated
and fluid, against the optimum's) and ``llm_global.md``/``.csv``.
"""

from __future__ import annotations

import common
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.experiments import compare
from lbsim.fluid import fluid

ROUTERS = [
    "dgdlb", "gmsr", "gmsr:variant=latency", "weighted:split=optimal", "least_latency", "jsq", "power_of_d",
    "least_load", "least_request", "prequal", "wrr", "weighted:split=capacity", "nearest", "random", "round_robin",
]  # fmt: skip
#: routers whose queues grow without bound here (the scenario's header): left out of the CCDF, whose scale they flatten
UNSTABLE = ("nearest", "random", "round_robin")


def run(settings: Settings) -> Section:
    scenario = lbsim.load_scenario(SCENARIOS / "llm_global.toml", warn=False)
    if settings.quick:
        scenario = scenario.replace(**{"simulation.horizon": 60.0, "simulation.warmup": 20.0})
    seeds = settings.pick(1, 3)
    comparison = compare(scenario, ROUTERS, seeds, workers=settings.workers, progress=False)
    table_md = common.comparison_markdown(comparison.table, settings, "llm_global", comparison.optimum)

    order = list(comparison.table["router"])
    ax = plots.percentile_bars(comparison.table, order=order, reference=comparison.optimum)
    ax.set_title("llm_global: latency by router (95% CIs across seeds)")
    bars = common.save(ax.figure, settings, "llm_global")

    stable = [r for r in order if r not in UNSTABLE]
    jobs = comparison.jobs[comparison.jobs["router"].isin(stable)]
    ax = plots.latency_ccdf(jobs, order=stable, reference=comparison.optimum)
    ax.set_title("llm_global: latency tails (seeds pooled; unstable routers left out)")
    ccdf = common.save(ax.figure, settings, "llm_global_ccdf")

    # DGD-LB's loads against the fluid model and the optimum: the asian pools and the us pool
    # that takes most of the asian overflow.
    opt = lbsim.optimum(scenario)
    names = [scenario.backend_label(j) for j in range(scenario.num_backends)]
    shown = [names.index(n) for n in ("us-h100x4", "asia-h100x2", "asia-a100x2", "asia-l4x4")]
    result = lbsim.simulate(scenario, router="dgdlb")
    model = fluid(scenario, router="dgdlb")
    ax = plots.load_trajectories(result.timeseries, model.timeseries, backends=shown, names=names, optimum=opt.load)
    ax.set_title("llm_global: dgdlb's pool loads (tokens in the system; dotted: optimum)")
    loads = common.save(ax.figure, settings, "llm_global_loads")

    t = comparison.table.set_index("router")
    headline = (
        f"optimum {comparison.optimum:.2f} s; mean / optimum: "
        + ", ".join(f"{r} {t.loc[r, 'ratio_to_optimum']:.3f}" for r in order[:6])
        + f"; p99: dgdlb {t.loc['dgdlb', 'p99']:.1f} s, jsq {t.loc['jsq', 'p99']:.1f} s, "
        f"prequal {t.loc['prequal', 'p99']:.1f} s"
    )
    text = (
        "`scenarios/llm_global.toml`: 3 regions (us, eu, asia), 12 GPU pools of three generations and 2-4 "
        "replicas each (decode-step `batch` rates, one work unit = one output token, 100-token requests), "
        f"31000 tokens/s offered against 39000 of capacity; {scenario.simulation.horizon:g} s, {seeds} seed(s) "
        "per router. nearest, random and round_robin overload small pools, so their queues (and numbers) grow "
        "with the horizon."
    )
    return Section(
        title="Every router on a global LLM serving system",
        command=common.command("llm_global.py")
        + "  (the comparison alone: lbsim compare scenarios/llm_global.toml --seeds 3 --workers 2 --routers ...)",
        text=text,
        tables=[table_md],
        figures=[bars, ccdf, loads],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
