"""GMSR reaches the centralized optimum where expected-latency routing does not.

Two scenarios (each file's header says what to expect):

* ``least_latency_trap.toml``: a Pigou example. ``least_latency`` fills the
  batched backend until its latency equals the elastic one's (a Wardrop
  equilibrium, about 4x the optimum); GMSR, DGD-LB and the optimal static
  split equalise marginal costs instead and sit at the optimum.
* ``gmsr_fluid_limit.toml``: four unlike backends, two frontends with
  overlapping reach, no delay: GMSR within a fraction of a percent of the
  optimum at job scale 0.01.

Writes ``trap_latency.png`` (bars with CIs against the optimum),
``trap_loads.png`` (simulated loads against the fluid model and the
optimum, least_latency and gmsr) and the tables ``trap.md`` and
``gmsr_fluid_limit.md``.
"""

from __future__ import annotations

import common
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.experiments import compare
from lbsim.fluid import fluid


def run(settings: Settings) -> Section:
    trap = lbsim.load_scenario(SCENARIOS / "least_latency_trap.toml", warn=False)
    horizon, warmup = settings.pick((40.0, 10.0), (300.0, 50.0))
    trap = trap.replace(**{"simulation.horizon": horizon, "simulation.warmup": warmup})
    routers = settings.pick(
        ["least_latency", "gmsr", "weighted:split=optimal"],
        ["least_latency", "gmsr", "dgdlb", "weighted:split=optimal", "jsq"],
    )
    seeds = settings.pick(1, 3)
    trap_cmp = compare(trap, routers, seeds, workers=settings.workers, progress=False)
    opt = lbsim.optimum(trap)
    trap_md = common.comparison_markdown(trap_cmp.table, settings, "trap", trap_cmp.optimum)

    ax = plots.percentile_bars(trap_cmp.table, reference=opt.mean_latency)
    ax.set_title("least_latency_trap: latency by router (95% CIs across seeds)")
    bars = common.save(ax.figure, settings, "trap_latency")

    # Loads over time: simulated (one seed) against the fluid model and the optimum.
    figure, axes = plots.new_figure(1, 2, figsize=(11.0, 4.0), sharey=True)
    names = [trap.backend_label(j) for j in range(trap.num_backends)]
    shown = trap.replace(**{"simulation.horizon": settings.pick(12.0, 80.0), "simulation.warmup": 0.0})
    for ax, router in zip(axes, ("least_latency", "gmsr")):
        result = lbsim.simulate(shown, router=router)
        # Without delay an argmin router's fluid model is stiff; a tie band of 1% of the
        # typical cost keeps its time step at the rates' own scale (lbsim.fluid docstring).
        model = fluid(shown, router=router, band=0.01)
        plots.load_trajectories(result.timeseries, model.timeseries, names=names, optimum=opt.load, ax=ax)
        ax.set_title(f"{router}: simulated vs fluid (dotted: optimum)")
    loads = common.save(figure, settings, "trap_loads")

    # GMSR's fluid limit on four unlike backends.
    limit = lbsim.load_scenario(SCENARIOS / "gmsr_fluid_limit.toml", warn=False)
    horizon, warmup = settings.pick((40.0, 10.0), (300.0, 60.0))
    limit = limit.replace(**{"simulation.horizon": horizon, "simulation.warmup": warmup})
    limit_cmp = compare(limit, settings.pick(["gmsr"], ["gmsr", "least_latency", "jsq"]), seeds,
                        workers=settings.workers, progress=False)  # fmt: skip
    limit_md = common.comparison_markdown(limit_cmp.table, settings, "gmsr_fluid_limit", limit_cmp.optimum)

    by_router = trap_cmp.table.set_index("router")["ratio_to_optimum"]
    gmsr_limit = float(limit_cmp.table.set_index("router").loc["gmsr", "ratio_to_optimum"])
    headline = (
        f"least_latency_trap: optimum {opt.mean_latency:.3f} s; least_latency {by_router['least_latency']:.2f}x "
        f"the optimum, gmsr {by_router['gmsr']:.3f}x; gmsr_fluid_limit: gmsr {gmsr_limit:.4f}x "
        f"(optimum {limit_cmp.optimum:.3f} s)"
    )
    text = (
        "Expected-latency routing (`least_latency`) against marginal-cost routing (GMSR) on a Pigou "
        "example (`scenarios/least_latency_trap.toml`, job scale 0.002, "
        f"{trap.simulation.horizon:g} s, {seeds} seed(s)), and GMSR alone on "
        "`scenarios/gmsr_fluid_limit.toml` (job scale 0.01). Ratios are mean latency over the "
        "centralized optimum's (`lbsim optimum`), with 95% intervals across seeds."
    )
    return Section(
        title="GMSR reaches the optimum where least-latency does not",
        command=common.command("least_latency_trap.py"),
        text=text,
        tables=[trap_md, "`gmsr_fluid_limit.toml`:\n\n" + limit_md],
        figures=[bars, loads],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
