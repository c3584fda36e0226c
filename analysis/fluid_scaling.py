"""The fluid limit: stochastic loads converge to the fluid model like sqrt(job_scale).

``lbsim.scaling.scaling`` on ``fluid_burst.toml`` (two regions, four pools, a
35% demand burst from 40 s to 60 s, DGD-LB): the simulator at several job
scales on common seeds, each run's sup and RMS distance to the fluid loads,
and log-log fits of distance against scale (slope 1/2 expected: Kurtz's
law of large numbers with its central-limit correction). Writes
``fluid_scaling.png`` (the log-log plot with fits), ``fluid_trajectories.png``
(simulated loads of two backends against the fluid model, one panel per
scale) and ``fluid_scaling.md``/``.csv``.
"""

from __future__ import annotations

import common
import pandas as pd
import seaborn as sns
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.scaling import scaling

SCENARIO = "fluid_burst.toml"
ROUTER = "dgdlb"


def run(settings: Settings) -> Section:
    scenario = lbsim.load_scenario(SCENARIOS / SCENARIO, warn=False)
    scales = settings.pick((1.0, 0.1, 0.03), (1.0, 0.1, 0.01, 0.001))
    seeds = settings.pick(2, 4)
    result = scaling(scenario, router=ROUTER, scales=scales, seeds=seeds, progress=False, workers=settings.workers)
    result.runs.to_csv(settings.out / "fluid_scaling_runs.csv", index=False)

    ax = plots.new_axes(figsize=(6.8, 4.6))
    colours = sns.color_palette(n_colors=2)
    for k, (metric, label) in enumerate((("rms_distance", "RMS distance"), ("sup_distance", "sup distance"))):
        plots.scaling_plot(result.runs, metric, fit=result.fits[metric], label=label, color=colours[k],
                           reference_slope=0.5 if k == 0 else None, ax=ax)  # fmt: skip
    ax.set(ylabel="distance to the fluid loads (work units)",
           title=f"{scenario.name}, {ROUTER}: stochastic vs fluid ({seeds} seeds per scale)")  # fmt: skip
    scaling_png = common.save(ax.figure, settings, "fluid_scaling")

    names = [scenario.backend_label(j) for j in range(scenario.num_backends)]
    figure = plots.scaling_trajectories(
        result.trajectories, scales, backends=result.backends_shown, names=names,
        title=f"{scenario.name}, {ROUTER}: simulated loads (seed 1) against the fluid model (dashed)",
    )  # fmt: skip
    trajectories_png = common.save(figure, settings, "fluid_trajectories")

    rows = []
    for r in result.table.to_dict("records"):
        rows.append({
            "job scale": r["scale"], "seeds": r["runs"], "jobs per run": int(round(r["jobs_per_run"])),
            "RMS distance": common.with_ci(r["rms_mean"], r["rms_low"], r["rms_high"]),
            "sup distance": common.with_ci(r["sup_mean"], r["sup_low"], r["sup_high"]),
            "wall s per run": round(r["wall_per_run"], 1),
        })  # fmt: skip
    table_md = common.write_table(pd.DataFrame(rows), settings, "fluid_scaling")
    fits = result.fits
    fit_text = "; ".join(
        f"{m.split('_')[0]} slope {f['slope']:.3f} (95% CI {f['slope_low']:.2f} .. {f['slope_high']:.2f})"
        for m, f in fits.items()
    )
    headline = f"log-log slope of distance vs job scale (1/2 expected): {fit_text}"
    text = (
        f"`scenarios/{SCENARIO}` under {ROUTER}, job scales {', '.join(f'{s:g}' for s in scales)}, seeds 1..{seeds} "
        "(mean and 95% t interval over seeds; distances in work units between each run's sampled loads and the "
        f"fluid model's). Fits: {fit_text}."
    )
    return Section(
        title="The fluid limit and job-size scaling",
        command=common.command("fluid_scaling.py"),
        text=text,
        tables=[table_md],
        figures=[scaling_png, trajectories_png],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
