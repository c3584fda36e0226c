"""DGD-LB's stability map: where the delay loop settles and where it keeps a full-swing oscillation.

Scenario ``dgdlb_stability_map.toml``: the loop of ``dgdlb_step.toml`` (one
frontend, two identical pools 500 ms away; linearised critical step
``lbsim.routers.dgdlb.dgdlb_critical_step`` = 0.1344, docs/routers.md
DGD-LB "Stability limit"). The linearisation says whether *small*
perturbations of the rest point decay; it says nothing about a start far
from it. Here the fluid model (``lbsim.fluid``, deterministic) is run from
a grid of starts, for steps from 0.2x to 1.5x the critical step:

* the initial split ``p_a(0)`` to pool-a, from uniform (0.5) to every job on
  pool-a (1.0, what ``init = "nearest"`` does when pool-a is the nearer
  pool), given to DGD-LB as ``init = [p_a, 1 - p_a]``. The uniform start is
  tilted by ``TILT`` (p_a = 0.501): in the fluid model an exactly symmetric
  start stays symmetric at any step, while in the simulator noise breaks
  the symmetry at once;
* the initial loads: empty with nothing in transit (``x0 = None``, the
  simulator's start), or both pools at a multiple of the rest-point load
  ``x*`` with the initial split in use before 0 (``x0``, a constant
  history: docs/model.md section 2).

Each cell's outcome is the *late swing* of the split: the 5th-to-95th
percentile range of ``p_a`` over the last ``LATE`` seconds. The loop has two
attractors below the limit: the rest point (swing 0) and a limit cycle that
the projection clips at 0 and 1 (swing 1). A cell **settles** below
``SETTLED`` (1% of a full swing: ten times the uniform start's tilt, so a
start that has not decayed is not called settled), **oscillates** at full
swing above ``FULL_SWING``, and anything between is still **in transit** at
the end of the run (a slowly growing or decaying oscillation near the limit).

The simulator (``lbsim.simulate``, job scale ``JOB_SCALE``, a few seeds,
empty start) confirms a few cells: 0.8x from uniform and from every job on
pool-a, 0.5x and 1.2x from both. Its noise keeps a settled split's swing at
0.04-0.15 at job scale 0.001, so a simulated cell oscillates when its swing
is above ``SIM_SWING`` = 0.5, halfway between the two attractors.

Writes ``dgdlb_stability_map.png`` (heat map of the late swing over step
multiple and initial split, one panel per initial load, simulated cells
marked), ``dgdlb_stability_map_split.png`` (the split at 0.8x from the two
starts, simulated and fluid) and ``dgdlb_stability_map.md``/``.csv`` plus
``dgdlb_stability_map_cells.md``/``.csv`` (the confirmed cells).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import common
import numpy as np
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.fluid import fluid
from lbsim.routers.dgdlb import dgdlb_critical_step

#: the uniform start's tilt toward pool-a in the fluid model (breaks the symmetry that noise breaks in the simulator)
TILT = 1e-3
#: late swing (5th-95th percentile range of p_a) below which the fluid loop has settled
SETTLED = 0.01
#: late swing above which the loop is on the full-swing limit cycle (the projection clips it at 0 and 1)
FULL_SWING = 0.9
#: a simulated cell oscillates above this swing (noise keeps a settled one at 0.04-0.15 at JOB_SCALE)
SIM_SWING = 0.5
#: the simulator's job scale for the confirmed cells: at 0.01 noise knocks the loop off the limit cycle at 0.8x
JOB_SCALE = 0.001
HORIZON = 600.0
LATE = 100.0  # seconds at the end of the run
#: the simulated cells: (step multiple, initial split p_a(0))
CELLS = ((0.5, 0.5), (0.5, 1.0), (0.8, 0.5), (0.8, 1.0), (1.2, 0.5), (1.2, 1.0))


def late_swing(t: np.ndarray, p: np.ndarray, horizon: float, late: float = LATE) -> float:
    """The 5th-to-95th percentile range of ``p`` over ``[horizon - late, horizon)``: 0 settled, 1 full swing."""
    inside = (t >= horizon - late) & (t < horizon)
    low, high = np.percentile(p[inside], [5.0, 95.0])
    return float(high - low)


def outcome(swing: float) -> str:
    """The fluid model's class of a late swing: ``settles``, ``oscillates`` (full swing) or ``in transit``."""
    if swing < SETTLED:
        return "settles"
    return "oscillates" if swing > FULL_SWING else "in transit"


def start_weights(split: float) -> list[float]:
    """DGD-LB's ``init`` for an initial share ``split`` on pool-a (the uniform one tilted by ``TILT``)."""
    share = split + TILT if split == 0.5 else split
    return [share, 1.0 - share]


def start_loads(load: float, x_star: float) -> list[float] | None:
    """The fluid model's ``x0``: None (empty, nothing in transit) for 0, else both pools at ``load * x*``."""
    return None if load == 0 else [load * x_star, load * x_star]


def fluid_swing(scenario: lbsim.Scenario, step: float, split: float, load: float, x_star: float,
                horizon: float = HORIZON, late: float = LATE) -> float:  # fmt: skip
    """The fluid model's late swing for one cell of the map."""
    model = fluid(scenario, router="dgdlb", step=step, init=start_weights(split), x0=start_loads(load, x_star),
                  horizon=horizon)  # fmt: skip
    return late_swing(model.t, model.split[:, 0, 0], horizon, late)


def _fluid_cell(job: tuple) -> float:
    """One cell (an executor's task): ``(scenario dict, step, split, load, x*, horizon)``."""
    config, step, split, load, x_star, horizon = job
    return fluid_swing(lbsim.Scenario.from_dict(config), step, split, load, x_star, horizon)


def stable_up_to(table: pd.DataFrame, splits: Sequence[float]) -> float:
    """The largest step multiple up to which every one of ``splits`` settles (NaN if the smallest does not)."""
    good = table[table["split"].isin(splits)].groupby("multiple")["outcome"].apply(lambda o: (o == "settles").all())
    bad = good.index[~good.to_numpy()]
    below = good.index[good.index < bad.min()] if len(bad) else good.index
    return float(below.max()) if len(below) else math.nan


def split_label(split: float) -> str:
    if split == 0.5:
        return "0.5 uniform"
    return "1 all on a" if split == 1.0 else f"{split:g}"


def load_label(load: float) -> str:
    return "empty, nothing in transit" if load == 0 else f"both pools at {load:g} x*"


def run(settings: Settings) -> Section:
    scenario = lbsim.load_scenario(SCENARIOS / "dgdlb_stability_map.toml", warn=False)
    x_star = float(lbsim.optimum(scenario).load[0])
    demand, delay = float(scenario.demand[0]), float(scenario.delay[0, 0])
    predicted = dgdlb_critical_step(scenario.service_rates[0], x_star, demand, delay)

    # The fluid map.
    multiples = np.array(settings.pick([0.4, 0.8, 1.2], np.round(np.arange(0.2, 1.501, 0.05), 2)))
    splits = settings.pick([0.5, 1.0], [0.5, 0.625, 0.75, 0.875, 1.0])
    loads = settings.pick([0.0], [0.0, 1.0, 2.0, 4.0])
    horizon = settings.pick(300.0, HORIZON)
    config = scenario.to_dict()
    grid = [(m, s, x) for x in loads for s in splits for m in multiples]
    swings = common.parallel_map(
        _fluid_cell, [(config, float(m * predicted), s, x, x_star, horizon) for m, s, x in grid], settings.workers
    )
    table = pd.DataFrame(
        [{"load": x, "split": s, "multiple": float(m), "step": float(m * predicted), "swing": w, "outcome": outcome(w)}
         for (m, s, x), w in zip(grid, swings)]
    )  # fmt: skip
    table.to_csv(settings.out / "dgdlb_stability_map_grid.csv", index=False)

    # The simulator on a few cells, from empty (its only start).
    seeds = settings.pick([1], [1, 2, 3])
    job_scale = settings.pick(0.005, JOB_SCALE)
    sim_horizon = settings.pick(200.0, HORIZON)
    cells = settings.pick(((0.8, 0.5), (0.8, 1.0)), CELLS)
    base = scenario.replace(**{"simulation.job_scale": job_scale, "simulation.horizon": sim_horizon,
                               "simulation.warmup": 50.0}).to_dict()  # fmt: skip
    jobs = []
    for multiple, split in cells:
        init: Any = "uniform" if split == 0.5 else [split, 1.0 - split]  # noise breaks the symmetry itself
        for seed in seeds:
            jobs.append(({**base, "simulation": {**base["simulation"], "seed": seed}}, "dgdlb",
                         {"step": float(multiple * predicted), "init": init}))  # fmt: skip
    outputs = common.parallel_map(common.simulate_tables, jobs, settings.workers)
    shown: dict[tuple[float, float], pd.DataFrame] = {}
    rows = []
    for (multiple, split), k in zip(cells, range(0, len(jobs), len(seeds))):
        sim = []
        for out in outputs[k : k + len(seeds)]:
            edge = out["routing"][out["routing"]["backend"] == 0]
            sim.append(late_swing(edge["t"].to_numpy(), edge["prob"].to_numpy(), sim_horizon, LATE))
        shown[(multiple, split)] = outputs[k]["routing"]
        oscillating = sum(w > SIM_SWING for w in sim)
        majority = "oscillates" if oscillating * 2 > len(sim) else "settles"
        swing = fluid_swing(scenario, multiple * predicted, split, 0.0, x_star, horizon)
        rows.append({
            "step / critical": multiple, "initial split p_a(0)": split_label(split),
            "fluid swing": swing, "fluid": outcome(swing),
            "simulated swing (median)": float(np.median(sim)),
            "simulated": f"{majority} ({oscillating}/{len(sim)} seeds oscillate)",
        })  # fmt: skip
    confirmed = pd.DataFrame(rows)
    cells_md = common.write_table(confirmed, settings, "dgdlb_stability_map_cells", digits=3)

    # Figure 1: the late swing over (step multiple, initial split), one panel per initial load.
    import seaborn as sns

    size = (max(7.0, 0.42 * len(multiples) + 2.5), 1.0 + 1.5 * len(loads))
    figure, axes = plots.new_figure(len(loads), 1, figsize=size, sharex=True)
    axes = np.atleast_1d(axes)
    for ax, load in zip(axes, loads):
        grid_swing = table[table["load"] == load].pivot(index="split", columns="multiple", values="swing")
        grid_swing = grid_swing.sort_index(ascending=False)
        sns.heatmap(grid_swing, ax=ax, vmin=0.0, vmax=1.0, cmap="rocket_r", cbar_kws={"label": "late swing of p_a"},
                    linewidths=0.3, linecolor="white",
                    yticklabels=[split_label(s) for s in grid_swing.index])  # fmt: skip
        centres = np.arange(len(grid_swing.columns)) + 0.5  # heat map cells are one unit wide
        ax.axvline(float(np.interp(1.0, grid_swing.columns, centres)), color="tab:blue", linewidth=1.5)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set(ylabel="initial split p_a(0)", xlabel="", title=f"initial loads: {load_label(load)}")
        if load == 0:  # the simulated cells: o oscillates, s settles (majority of seeds)
            for (multiple, split), row in zip(cells, rows):
                x = list(grid_swing.columns).index(min(grid_swing.columns, key=lambda m: abs(m - multiple))) + 0.5
                y = list(grid_swing.index).index(split) + 0.5
                mark = "o" if row["simulated"].startswith("oscillates") else "s"
                ax.text(x, y, mark, ha="center", va="center", color="tab:cyan", fontsize=11, fontweight="bold")
    axes[-1].set_xlabel("step / linearised critical step (blue: the limit; o/s: simulated cell oscillates/settles)")
    axes[-1].tick_params(axis="x", labelrotation=90)
    map_png = common.save(figure, settings, "dgdlb_stability_map")

    # Figure 2: the split at 0.8x from the two starts, simulated (seed 1) and fluid.
    figure, axes = plots.new_figure(1, 2, figsize=(12.0, 3.8), sharey=True)
    window = 60.0
    for ax, split in zip(axes, (0.5, 1.0)):
        sim = shown[(0.8, split)]
        model = fluid(scenario, router="dgdlb", step=0.8 * predicted, init=start_weights(split),
                      horizon=sim_horizon)  # fmt: skip
        fl = model.routing[(model.routing["backend"] == 0) & (model.routing["t"] >= sim_horizon - window)]
        sim = sim[(sim["backend"] == 0) & (sim["t"] >= sim_horizon - window)]
        plots.routing_splits(sim, fl, frontend=0, names=["pool-a"], ax=ax)
        ax.set_title(f"0.8 x critical step, from p_a(0) = {split_label(split)}: last {window:g} s")
    split_png = common.save(figure, settings, "dgdlb_stability_map_split")

    # The map as a table: per initial load, how far below the limit each start settles.
    summary = []
    for load in loads:
        part = table[table["load"] == load]
        summary.append({
            "initial loads": load_label(load),
            "uniform start settles up to": stable_up_to(part, [0.5]),
            "start on pool-a settles up to": stable_up_to(part, [1.0]),
            "every start settles up to": stable_up_to(part, splits),
        })  # fmt: skip
    summary_table = pd.DataFrame(summary)
    map_md = common.write_table(summary_table, settings, "dgdlb_stability_map", digits=3)
    worst = float(np.nanmin(summary_table["every start settles up to"]))
    uniform = float(np.nanmin(summary_table["uniform start settles up to"]))
    headline = (
        f"every start settles up to {worst:g}x the linearised critical step ({worst * predicted:.3f}); "
        f"the uniform start up to {uniform:g}x; simulated cells: "
        + "; ".join(
            f"{r['step / critical']:g}x from {r['initial split p_a(0)']} {r['simulated'].split(' ')[0]}" for r in rows
        )
    )
    text = (
        "`scenarios/dgdlb_stability_map.toml` (the loop of `dgdlb_step.toml`). Fluid model from a grid of "
        f"starts; a cell settles when the late swing of the split (5th-95th percentile range over the last {LATE:g} s) "
        f"is below {SETTLED}, oscillates above {FULL_SWING}. Entries: the largest step multiple (of the grid) up to "
        f"which the starts settle. Simulated cells: job scale {job_scale:g}, {len(seeds)} seed(s), empty start."
    )
    return Section(
        title="DGD-LB's stability map: settling or oscillating by step and start",
        command=common.command("dgdlb_stability_map.py"),
        text=text,
        tables=[map_md, cells_md],
        figures=[map_png, split_png],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
