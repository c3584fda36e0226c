"""Prequal against antagonist load, at a fixed load and on a ramp past capacity.

* ``prequal_antagonist.toml`` (85% load): Prequal against weighted round robin
  (its incumbent in the paper), least_request, power_of_d, jsq, round_robin
  and random, on common seeds: ``prequal_antagonist.png`` (percentiles with
  95% CIs across seeds), ``prequal_antagonist_ccdf.png`` (the tails) and
  ``prequal_antagonist.md``.
* ``prequal_ramp.toml`` (50% -> 110% of capacity and back): Prequal, wrr,
  least_request, power_of_d and random; ``prequal_ramp.png`` (p99 latency by
  arrival time, 5 s windows, with the load multiplier) and
  ``prequal_ramp.md`` (p99 per load phase, seeds pooled). Jobs still in
  the system at the horizon have no latency yet, so the last phases
  understate the tails of routers that built long queues; the table gives
  those counts.
"""

from __future__ import annotations

import common
import numpy as np
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.experiments import compare


def run(settings: Settings) -> Section:
    seeds = settings.pick(1, 3)

    antagonist = lbsim.load_scenario(SCENARIOS / "prequal_antagonist.toml", warn=False)
    if settings.quick:
        antagonist = antagonist.replace(**{"simulation.horizon": 30.0, "simulation.warmup": 10.0})
    routers = settings.pick(
        ["prequal", "wrr", "least_request", "random"],
        ["prequal", "wrr", "least_request", "power_of_d", "jsq", "round_robin", "random"],
    )
    fixed = compare(antagonist, routers, seeds, workers=settings.workers, progress=False)
    fixed_md = common.comparison_markdown(fixed.table, settings, "prequal_antagonist")
    ax = plots.percentile_bars(fixed.table, order=routers)
    ax.set_title("prequal_antagonist (85% load): latency by router, 95% CIs across seeds")
    bars = common.save(ax.figure, settings, "prequal_antagonist")
    ax = plots.latency_ccdf(fixed.jobs, order=routers, logx=True)
    ax.set_title("prequal_antagonist: latency tails (seeds pooled)")
    ccdf = common.save(ax.figure, settings, "prequal_antagonist_ccdf")

    ramp = lbsim.load_scenario(SCENARIOS / "prequal_ramp.toml", warn=False)
    if settings.quick:  # the same ramp, three times faster
        schedule = [[t / 3.0, m] for t, m in ramp.simulation.rate_schedule]
        ramp = ramp.replace(**{"simulation.horizon": 60.0, "simulation.warmup": 2.0,
                               "simulation.rate_schedule": schedule})  # fmt: skip
    schedule = [[float(t), float(m)] for t, m in ramp.simulation.rate_schedule]
    ramp_routers = ["prequal", "wrr", "least_request", "power_of_d", "random"]
    ramped = compare(ramp, ramp_routers, seeds, workers=settings.workers, progress=False)
    jobs = ramped.jobs
    window = settings.pick(2.0, 5.0)
    # Jobs arriving near the horizon are in the table only if they finished: their tail is cut off.
    cut = ramp.simulation.horizon - 2 * window
    ax = plots.latency_over_time(jobs[jobs["t_arrival"] < cut], order=ramp_routers, window=window, q=0.99,
                                 schedule=schedule)  # fmt: skip
    ax.set_title(f"prequal_ramp: p99 latency as the load ramps past capacity (arrivals before {cut:g} s)")
    ramp_png = common.save(ax.figure, settings, "prequal_ramp")

    edges = [t for t, _ in schedule] + [ramp.simulation.horizon]
    labels = [f"{100 * m:.0f}%" for _, m in schedule]
    # Phases by position: two may share a level (70% on the way up and on the way down).
    phase_index = np.searchsorted(edges, jobs["t_arrival"].to_numpy(), side="right") - 1
    p99 = jobs.groupby(["router", phase_index])["latency"].quantile(0.99).unstack()
    rows = []
    for router in ramp_routers:
        row = {"router": router}
        for k, label in enumerate(labels):
            name = f"{label} ({edges[k]:g}-{edges[k + 1]:g} s)"
            row[name] = float(p99.loc[router, k]) if k in p99.columns else float("nan")
        runs = ramped.runs[ramped.runs["router"] == router]
        row["in system at end"] = int(round(float(runs["jobs_in_system_end"].mean())))
        rows.append(row)
    ramp_md = common.write_table(pd.DataFrame(rows), settings, "prequal_ramp", digits=3)

    t = fixed.table.set_index("router")
    by_phase = pd.DataFrame(rows).set_index("router")
    full_load = [c for c in by_phase.columns if c.startswith("100%")][0]
    headline = (
        f"prequal_antagonist p99: prequal {t.loc['prequal', 'p99']:.2f} s, wrr {t.loc['wrr', 'p99']:.2f}, "
        f"least_request {t.loc['least_request', 'p99']:.2f}, random {t.loc['random', 'p99']:.1f}; "
        f"prequal_ramp p99 at 100% load: "
        + ", ".join(f"{r} {by_phase.loc[r, full_load]:.3g}" for r in ramp_routers)
    )
    text = (
        f"`scenarios/prequal_antagonist.toml` ({antagonist.simulation.horizon:g} s, {seeds} seed(s), common "
        "random numbers) and `scenarios/prequal_ramp.toml` (p99 latency in seconds of the jobs arriving in each "
        "load phase, as a share of the mean usable capacity; seeds pooled; 'in system at end' is the mean "
        "number of jobs left at the horizon)."
    )
    return Section(
        title="Prequal under antagonist load and a load ramp",
        command=common.command("prequal.py"),
        text=text,
        tables=["`prequal_antagonist.toml`:\n\n" + fixed_md, "`prequal_ramp.toml`, p99 latency (s) by load phase:\n\n" + ramp_md],
        figures=[bars, ccdf, ramp_png],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
