"""DGD-LB's step size against its stability limit: the measured threshold next to the predicted one.

Scenario ``dgdlb_step.toml``: one frontend, two identical pools 500 ms away.
docs/routers.md (DGD-LB, "Stability limit") linearises the loop to ``D'' + a D' + K D(t - T) = 0`` and
predicts the largest stable step (``lbsim.routers.dgdlb.dgdlb_critical_step``:
0.1344 here). We measure it two ways, always as "does the split's
oscillation decay after a perturbation?": the ratio of the RMS of
``p - 1/2`` (p: the split's share for pool-a) in a late window to that in
an early one, 10-60 s and 160-210 s after the perturbation; below 1 it
decays.

* **Fluid model** (``lbsim.fluid``, deterministic): start the loads 0.1% off
  the rest point and bisect on the step for the ratio crossing 1: the
  threshold of the actual nonlinear delay loop with DGD-LB's discrete ticks
  for small perturbations, which the linearisation predicts. The same after
  a large kick (pool-a slowed to 30% for 4 s at t = 100 s, as in the
  simulations), scanned: below the linear threshold the loop is bistable
  (the projection clips the split at 0 and 1, and a large enough kick lands
  on a full-swing limit cycle that coexists with the stable rest point).
* **Simulator**, with the same kick, a scan of steps around the prediction at
  one or two job scales and seeds: the threshold is where the ratio
  (geometric mean over seeds) first reaches ``DECAY``, interpolated in log
  ratio between scanned steps; the scanned kick threshold of the fluid
  model uses the same rule.

Writes ``dgdlb_stability.png`` (ratio against step / predicted),
``dgdlb_stability_split.png`` (the split below and above the threshold,
simulated and fluid) and ``dgdlb_stability.md``/``.csv``.
"""

from __future__ import annotations

import math

import common
import numpy as np
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim import plots
from lbsim.fluid import fluid
from lbsim.routers.dgdlb import dgdlb_critical_step

KICK = 100.0  # the simulations' perturbation: pool-a at KICK_LEVEL of its rate for KICK_LENGTH seconds
KICK_LEVEL, KICK_LENGTH = 0.3, 4.0
EARLY, LATE = (10.0, 60.0), (160.0, 210.0)  # windows after the perturbation
HORIZON = KICK + LATE[1] + 10.0
#: a simulated oscillation "does not decay" once the late amplitude is this fraction of the early one
#: (noise keeps a decaying one's late RMS at 0.1-0.4 of its early RMS at job scale 0.01)
DECAY = 0.75


def amplitude_ratio(t: np.ndarray, p: np.ndarray, start: float) -> float:
    """RMS of ``p - 1/2`` in the late window over the early one, windows counted from ``start``."""

    def rms(window):
        inside = (t >= start + window[0]) & (t < start + window[1])
        return float(np.sqrt(np.mean((p[inside] - 0.5) ** 2)))

    return rms(LATE) / rms(EARLY)


def kicked(scenario: lbsim.Scenario) -> lbsim.Scenario:
    schedule = [[0.0, 1.0], [KICK, KICK_LEVEL], [KICK + KICK_LENGTH, 1.0]]
    return scenario.replace(**{"backends.0.antagonist": {"schedule": schedule}, "simulation.horizon": HORIZON})


def fluid_ratio(scenario: lbsim.Scenario, step: float, x_star: float, kick: bool) -> float:
    if kick:
        model = fluid(kicked(scenario), router="dgdlb", step=step)
        start = KICK
    else:  # a 0.1% imbalance at t = 0, then the loop alone
        model = fluid(scenario, router="dgdlb", step=step, x0=[x_star * 1.001, x_star * 0.999],
                      horizon=LATE[1] + 10.0)  # fmt: skip
        start = 0.0
    return amplitude_ratio(model.t, model.split[:, 0, 0], start)


def bisect(function, low: float, high: float, iterations: int) -> float:
    """The step where ``function(step) >= 1`` starts, given ``function(low) < 1 <= function(high)``."""
    for _ in range(iterations):
        mid = math.sqrt(low * high)
        if function(mid) >= 1.0:
            high = mid
        else:
            low = mid
    return math.sqrt(low * high)


def crossing(factors: np.ndarray, ratios: np.ndarray, level: float) -> float:
    """The first factor where ``ratios`` reaches ``level``, interpolated in log ratio (NaN if never)."""
    above = np.nonzero(ratios >= level)[0]
    if len(above) == 0:
        return math.nan
    k = above[0]
    if k == 0:
        return float(factors[0])
    r0, r1 = math.log(ratios[k - 1]), math.log(ratios[k])
    w = (math.log(level) - r0) / (r1 - r0)
    return float(factors[k - 1] + w * (factors[k] - factors[k - 1]))


def run(settings: Settings) -> Section:
    scenario = lbsim.load_scenario(SCENARIOS / "dgdlb_step.toml", warn=False)
    opt = lbsim.optimum(scenario)
    x_star = float(opt.load[0])
    delay = float(scenario.delay[0, 0])
    predicted = dgdlb_critical_step(scenario.service_rates[0], x_star, float(scenario.demand[0]), delay)

    # Fluid: bisection (small perturbation), and the ratio curves for the figure.
    iterations = settings.pick(6, 14)
    fluid_threshold = bisect(lambda s: fluid_ratio(scenario, s, x_star, False), 0.5 * predicted, 2.0 * predicted,
                             iterations)  # fmt: skip
    curve = np.array(settings.pick([0.5, 0.6, 0.7, 0.8, 1.0, 1.2], np.round(np.arange(0.4, 1.61, 0.05), 3)))
    fluid_small = np.array([fluid_ratio(scenario, f * predicted, x_star, False) for f in curve])
    fluid_kick = np.array([fluid_ratio(scenario, f * predicted, x_star, True) for f in curve])
    # After a large kick the fluid loop may settle on a limit cycle whose late RMS is a little
    # under its early one (the kick's own overshoot): the same DECAY level as the simulator's.
    kicked_threshold = crossing(curve, fluid_kick, DECAY) * predicted

    # Simulator: a scan of steps with the kick.
    factors = np.array(settings.pick([0.6, 1.0, 1.4], [0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.25, 1.5]))
    job_scales = settings.pick([0.01], [0.01, 0.002])
    seeds = settings.pick([1], [1, 2, 3])
    jobs = []
    for job_scale in job_scales:
        config = kicked(scenario).replace(**{"simulation.job_scale": job_scale}).to_dict()
        for f in factors:
            for seed in seeds:
                jobs.append(({**config, "simulation": {**config["simulation"], "seed": seed}}, "dgdlb",
                             {"step": float(f * predicted)}))  # fmt: skip
    outputs = common.parallel_map(common.simulate_tables, jobs, settings.workers)
    rows = []
    for (config, _, params), out in zip(jobs, outputs):
        routing = out["routing"]
        edge = routing[(routing["frontend"] == 0) & (routing["backend"] == 0)]
        ratio = amplitude_ratio(edge["t"].to_numpy(), edge["prob"].to_numpy(), KICK)
        rows.append({"job_scale": config["simulation"]["job_scale"], "seed": config["simulation"]["seed"],
                     "factor": params["step"] / predicted, "step": params["step"], "ratio": ratio,
                     "mean_latency": out["summary"]["mean_latency"]})  # fmt: skip
    scan = pd.DataFrame(rows)
    scan.to_csv(settings.out / "dgdlb_stability_scan.csv", index=False)
    by_scale = scan.groupby(["job_scale", "factor"], sort=True)["ratio"].apply(lambda r: float(np.exp(np.log(r).mean())))
    sim_threshold = {
        s: crossing(by_scale[s].index.to_numpy(), by_scale[s].to_numpy(), DECAY) * predicted for s in job_scales
    }

    # Figure 1: decay ratio against step / predicted.
    ax = plots.new_axes(figsize=(7.5, 4.5))
    ax.plot(curve, fluid_small, color="k", linewidth=1.5, label="fluid, 0.1% imbalance")
    ax.plot(curve, fluid_kick, color="0.45", linewidth=1.5, linestyle="-.", label="fluid, kick")
    markers = iter("osD^")
    for s in job_scales:
        part = scan[scan["job_scale"] == s]
        (line,) = ax.plot(by_scale[s].index, by_scale[s].to_numpy(), marker=next(markers), linestyle="--",
                          label=f"simulated, job scale {s:g} (kick)")  # fmt: skip
        ax.scatter(part["factor"], part["ratio"], s=10, color=line.get_color(), alpha=0.4)
    ax.axvline(1.0, color="tab:red", linewidth=1, label=f"predicted {predicted:.4f}")
    ax.axvline(fluid_threshold / predicted, color="k", linestyle=":", linewidth=1,
               label=f"fluid threshold {fluid_threshold:.4f}")  # fmt: skip
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.set_yscale("log")
    ax.set(xlabel="step / predicted critical step", ylabel="late / early RMS of the split's oscillation",
           title="dgdlb_step: does the oscillation decay?")  # fmt: skip
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    ratio_png = common.save(ax.figure, settings, "dgdlb_stability")

    # Figure 2: the split below and above the threshold, simulated and fluid.
    figure, axes = plots.new_figure(1, 2, figsize=(12.0, 4.0), sharey=True)
    window = settings.pick(60.0, 150.0)
    for ax, f in zip(axes, (0.7, 1.3)):
        shown = kicked(scenario).replace(**{"simulation.horizon": KICK + window, "simulation.sample_interval": 0.25})
        result = lbsim.simulate(shown, router="dgdlb", step=f * predicted)
        model = fluid(shown, router="dgdlb", step=f * predicted)
        sim = result.routing[result.routing["backend"] == 0]
        fl = model.routing[model.routing["backend"] == 0]
        plots.routing_splits(sim[sim["t"] >= KICK - 10], fl[fl["t"] >= KICK - 10], frontend=0,
                             names=["pool-a"], ax=ax)  # fmt: skip
        ax.axvspan(KICK, KICK + KICK_LENGTH, color="0.85", zorder=0)
        ax.set_title(f"step = {f:g} x predicted ({f * predicted:.3f}): split to pool-a (grey: kick)")
    split_png = common.save(figure, settings, "dgdlb_stability_split")

    table = pd.DataFrame(
        [
            {"method": "linearised prediction (docs/routers.md)", "critical step": predicted, "/ predicted": 1.0},
            {"method": "fluid model, 0.1% imbalance (bisection)", "critical step": fluid_threshold,
             "/ predicted": fluid_threshold / predicted},
            {"method": "fluid model, kick (scan)", "critical step": kicked_threshold,
             "/ predicted": kicked_threshold / predicted},
        ]
        + [
            {"method": f"simulator, job scale {s:g}, kick (scan, {len(seeds)} seed(s))", "critical step": v,
             "/ predicted": v / predicted}
            for s, v in sim_threshold.items()
        ]
    )  # fmt: skip
    table_md = common.write_table(table, settings, "dgdlb_stability")
    headline = (
        f"critical step: predicted {predicted:.4f}, fluid {fluid_threshold:.4f} "
        f"({fluid_threshold / predicted:.3f}x), fluid with a kick {kicked_threshold:.4f}, simulator "
        + ", ".join(f"{v / predicted:.2f}x at job scale {s:g}" for s, v in sim_threshold.items())
    )
    text = (
        "`scenarios/dgdlb_step.toml` (one frontend, two identical pools 500 ms away). A threshold is where "
        "the split's oscillation after a perturbation stops decaying (late/early RMS reaches 1 for the "
        f"fluid model, {DECAY} for the noisy simulator)."
    )
    return Section(
        title="DGD-LB stability: measured threshold against the linearised prediction",
        command=common.command("dgdlb_stability.py"),
        text=text,
        tables=[table_md],
        figures=[ratio_png, split_png],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
