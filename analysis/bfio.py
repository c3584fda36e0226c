"""BF-IO admission in data-parallel LLM engines: the paper's setting, its scaling, its price, noise, open mode, energy.

Chen, Bu, Song, Lu, Ye, Zhou, "A Universal Load Balancing Principle and Its
Application to Large Language Model Serving", arXiv:2601.17855. The engine
and the policies are in ``docs/llm.md``; BF-IO in ``docs/routers.md``.
Every figure has 95% CIs across seeds (``lbsim.stats.mean_ci``); policies
compared on one seed see the same requests (common random numbers), and
ratios between policies are taken per seed before the interval.

* (a) ``scenarios/bfio_saturated.toml`` at G = 16 and 32, B = 72: mean
  imbalance, idle rate, token throughput, TPOT and energy of every policy
  (``bfio_saturated.png``, ``bfio_saturated.md``);
* (b) the theorem's scaling: FCFS / BF-IO(H = 0) imbalance against B at
  G = 16 and against G at B = 72, plotted against ``sqrt(B log G)``
  (``bfio_scaling.png``, ``bfio_scaling.md``);
* (c) the price: pool wait and TTFT p99, overall and for the largest prompts
  (``bfio_price.png``: each request's pool wait against its prompt);
* (d) the H > 0 gain with output lengths estimated with 10% and 50% noise
  (``bfio_noise.png``);
* (e) open mode, ``scenarios/bfio_open.toml``: Poisson arrivals at 50-110%
  of three engines' capacity behind round_robin, jsq and least_tokens
  (``bfio_open.png``);
* (f) energy under ``scenarios/bfio_energy.toml`` (time-split power, H200
  constants) next to the utilisation model (``bfio_energy.png``).
"""

from __future__ import annotations

import math

import common
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from common import SCENARIOS, Section, Settings

import lbsim
from lbsim.scenario import Scenario
from lbsim.stats import mean_ci

#: the policies of the paper's comparison, as admission tables
POLICIES: dict[str, dict] = {
    "fcfs": {"name": "fcfs"},
    "jsq": {"name": "jsq"},
    "round_robin": {"name": "round_robin"},
    "bestfit": {"name": "bestfit"},
    "bfio H=0": {"name": "bfio", "horizon": 0},
    "bfio H=20": {"name": "bfio", "horizon": 20},
    "bfio H=72": {"name": "bfio", "horizon": 72},
}
#: the protocol figures of study (a): summary key, column title, scale
FIGURES = (
    ("mean_imbalance", "imbalance (k tokens)", 1e-3),
    ("mean_idle_rate", "idle rate (%)", 100.0),
    ("throughput_tokens", "throughput (k tokens/s)", 1e-3),
    ("mean_tpot", "TPOT (ms)", 1e3),
    ("energy", "energy (MJ)", 1e-6),
)
#: the largest prompts, whose admission best fit postpones: this top fraction
LARGEST = 0.1


# -- one run (an executor's task: module-level, picklable) ----------------------------------
def saturated_run(job: tuple) -> dict:
    """One saturated run of a scenario dict: its summary, plus pool waits of the largest prompts."""
    config, seed = job
    result = lbsim.simulate(Scenario.from_dict(config), seed=seed)
    out = dict(result.summary())
    jobs = result.jobs
    largest = jobs["prompt"] >= jobs["prompt"].quantile(1 - LARGEST)
    out["pool_wait_largest_p99"] = float(jobs.loc[largest, "pool_wait"].quantile(0.99))
    out["pool_wait_mean"] = float(jobs["pool_wait"].mean())
    return out


def open_run(job: tuple) -> dict:
    """One open-mode run of a scenario dict behind ``router``: its summary."""
    config, router, seed = job
    return dict(lbsim.simulate(Scenario.from_dict(config), router=router, seed=seed).summary())


def engine(scenario: Scenario, admission: dict, workers: int = 16, slots: int = 72, per_slot: float = 2.5) -> dict:
    """The saturated scenario with one admission policy, G x B ranks and slots, ``per_slot * G * B`` requests."""
    changed = scenario.replace(
        **{
            "backends.0.admission": admission,
            "backends.0.workers": workers,
            "backends.0.slots": slots,
            "jobs.count": int(per_slot * workers * slots),
        }
    )
    return changed.to_dict()


def runs(settings: Settings, cases: list[dict], seeds: list[int]) -> pd.DataFrame:
    """Every case (keys: ``config`` and labels) on every seed, in parallel: one row per run, labels and summary."""
    jobs = [(case["config"], seed) for case in cases for seed in seeds]
    results = common.parallel_map(saturated_run, jobs, settings.workers)
    rows = []
    for k, summary in enumerate(results):
        case = cases[k // len(seeds)]
        labels = {key: value for key, value in case.items() if key != "config"}
        rows.append({**labels, "seed": jobs[k][1], **summary})
    return pd.DataFrame(rows)


def ci_cell(values, scale: float = 1.0, digits: int = 3) -> str:
    ci = mean_ci(np.asarray(values, dtype=float) * scale)
    return common.with_ci(ci.estimate, ci.low, ci.high, digits)


def paired(frame: pd.DataFrame, key: str, keys: list[str], numerator: str, denominator: str, by: str) -> pd.Series:
    """Per seed (and ``keys``): ``key`` under ``numerator`` over ``key`` under ``denominator`` (``by`` names them)."""
    table = frame.pivot_table(index=[*keys, "seed"], columns=by, values=key)
    return table[numerator] / table[denominator]


# -- (a) the paper's setting ----------------------------------------------------------------
def paper_setting(settings: Settings, base: Scenario, seeds: list[int]) -> tuple[pd.DataFrame, str, object]:
    sizes = settings.pick([16], [16, 32])
    per_slot = settings.pick(1.5, 2.5)
    cases = [
        {"config": engine(base, admission, g, 72, per_slot), "G": g, "policy": name}
        for g in sizes
        for name, admission in POLICIES.items()
    ]
    frame = runs(settings, cases, seeds)
    rows = []
    for (g, policy), group in frame.groupby(["G", "policy"], sort=False):
        row = {"G": g, "policy": policy}
        for key, title, scale in FIGURES:
            row[title] = ci_cell(group[key], scale)
        rows.append(row)
    table = common.markdown(pd.DataFrame(rows))
    frame.to_csv(settings.out / "bfio_saturated.csv", index=False)
    (settings.out / "bfio_saturated.md").write_text(table + "\n")

    shown = FIGURES[:3]
    figure, axes = plt.subplots(1, len(shown), figsize=(13, 3.8))
    width = 0.8 / len(sizes)
    names = list(POLICIES)
    for a, (key, title, scale) in zip(axes, shown):
        for k, g in enumerate(sizes):
            cis = [mean_ci(frame[(frame["G"] == g) & (frame["policy"] == p)][key] * scale) for p in names]
            x = np.arange(len(names)) + (k - (len(sizes) - 1) / 2) * width
            err = [(c.high - c.low) / 2 if math.isfinite(c.low) else 0.0 for c in cis]
            a.bar(x, [c.estimate for c in cis], width, yerr=err, capsize=2, label=f"G = {g}")
        a.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
        a.set_title(title)
    axes[0].legend()
    figure.suptitle("saturated engine, B = 72, paper's workload (95% CIs across seeds)")
    figure.tight_layout()
    path = common.save(figure, settings, "bfio_saturated")
    plt.close(figure)
    return frame, table, path


# -- (b) the theorem's scaling --------------------------------------------------------------
def scaling(settings: Settings, base: Scenario, seeds: list[int]) -> tuple[pd.DataFrame, str, object, str]:
    batches = settings.pick([18, 72], [18, 36, 72, 144, 288])
    ranks = settings.pick([4, 16], [4, 8, 16, 32, 64])
    per_slot = settings.pick(1.5, 2.5)
    grid = [("B", 16, b) for b in batches] + [("G", g, 72) for g in ranks]
    cases = [
        {"config": engine(base, POLICIES[p], g, b, per_slot), "varied": varied, "G": g, "B": b, "policy": p}
        for varied, g, b in grid
        for p in ("fcfs", "bfio H=0")
    ]
    frame = runs(settings, cases, seeds)
    ratio = paired(frame, "mean_imbalance", ["varied", "G", "B"], "fcfs", "bfio H=0", "policy")

    def imbalance(varied: str, g: int, b: int, policy: str) -> pd.Series:
        mine = (frame["varied"] == varied) & (frame["G"] == g) & (frame["B"] == b) & (frame["policy"] == policy)
        return frame.loc[mine, "mean_imbalance"]

    rows = []
    for (varied, g, b), values in ratio.groupby(level=["varied", "G", "B"], sort=False):
        ci = mean_ci(values.to_numpy())
        rows.append(
            {
                "varied": varied,
                "G": g,
                "B": b,
                "sqrt(B log G)": math.sqrt(b * math.log(g)),
                "ratio": ci.estimate,
                "low": ci.low,
                "high": ci.high,
                "fcfs imbalance (k tokens)": ci_cell(imbalance(varied, g, b, "fcfs"), 1e-3),
                "bfio H=0 imbalance (k tokens)": ci_cell(imbalance(varied, g, b, "bfio H=0"), 1e-3),
            }
        )
    data = pd.DataFrame(rows).sort_values(["varied", "sqrt(B log G)"], kind="stable")
    data.to_csv(settings.out / "bfio_scaling.csv", index=False)
    shown = data.assign(
        **{
            "FCFS / BF-IO(H=0)": [
                common.with_ci(r, lo, hi) for r, lo, hi in zip(data["ratio"], data["low"], data["high"])
            ]
        }
    )
    table = common.markdown(shown.drop(columns=["ratio", "low", "high"]))
    (settings.out / "bfio_scaling.md").write_text(table + "\n")

    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    for varied, marker, label in (("B", "o", "B = 18..288 at G = 16"), ("G", "s", "G = 4..64 at B = 72")):
        part = data[data["varied"] == varied]
        err = np.nan_to_num((part["high"] - part["low"]).to_numpy() / 2)
        ax.errorbar(part["sqrt(B log G)"], part["ratio"], yerr=err, marker=marker, capsize=3, label=label)
        for x, y, g, b in zip(part["sqrt(B log G)"], part["ratio"], part["G"], part["B"]):
            ax.annotate(
                f"{varied}={b if varied == 'B' else g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
    ax.set_xlabel("sqrt(B log G)")
    ax.set_ylabel("FCFS / BF-IO(H=0) mean imbalance")
    ax.set_title("imbalance reduction against the theorem's sqrt(B log G)")
    ax.legend()
    figure.tight_layout()
    path = common.save(figure, settings, "bfio_scaling")
    plt.close(figure)

    def growth(varied: str) -> tuple[float, float]:
        part = data[data["varied"] == varied]
        first, last = part.iloc[0], part.iloc[-1]
        return last["ratio"] / first["ratio"], last["sqrt(B log G)"] / first["sqrt(B log G)"]

    (b_ratio, b_theory), (g_ratio, g_theory) = growth("B"), growth("G")
    statement = (
        f"From the smallest to the largest B the measured ratio grows {b_ratio:.2f}x where sqrt(B log G) grows "
        f"{b_theory:.2f}x; from the smallest to the largest G it grows {g_ratio:.2f}x where sqrt(B log G) grows "
        f"{g_theory:.2f}x."
    )
    return data, table, path, statement


# -- (c) the price ----------------------------------------------------------------------------
def price(settings: Settings, base: Scenario, frame: pd.DataFrame, seed: int) -> tuple[str, object]:
    rows = []
    part = frame[frame["G"] == 16]
    for policy in ("fcfs", "jsq", "bestfit", "bfio H=0", "bfio H=20", "bfio H=72"):
        group = part[part["policy"] == policy]
        rows.append(
            {
                "policy": policy,
                "makespan (s)": ci_cell(group["makespan"]),
                "pool wait, mean (s)": ci_cell(group["pool_wait_mean"]),
                "pool wait p99 (s)": ci_cell(group["pool_wait_p99"]),
                "TTFT p99 (s)": ci_cell(group["ttft_p99"]),
                f"pool wait p99, largest {LARGEST:.0%} of prompts (s)": ci_cell(group["pool_wait_largest_p99"]),
            }
        )
    table = common.markdown(pd.DataFrame(rows))
    (settings.out / "bfio_price.md").write_text(table + "\n")

    # each request's pool wait against its prompt, one seed: FIFO order is a band, best fit's is not
    count = settings.pick(1728, 2880)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for a, policy in zip(axes, ("fcfs", "bfio H=20")):
        scenario = base.replace(**{"backends.0.admission": POLICIES[policy], "jobs.count": count})
        jobs = lbsim.simulate(scenario, seed=seed).jobs
        a.scatter(jobs["prompt"], jobs["pool_wait"], s=3, alpha=0.4, c=jobs["job_id"], cmap="viridis")
        a.set_title(f"{policy}: colour = position in the pool")
        a.set_xlabel("prompt (tokens)")
    axes[0].set_ylabel("pool wait (s)")
    figure.suptitle(f"saturated G = 16, B = 72, {count} requests, seed {seed}")
    figure.tight_layout()
    path = common.save(figure, settings, "bfio_price")
    plt.close(figure)
    return table, path


# -- (d) noisy output estimates ---------------------------------------------------------------
def noise(settings: Settings, base: Scenario, frame: pd.DataFrame, seeds: list[int]) -> tuple[str, object]:
    per_slot = settings.pick(1.5, 2.5)
    levels = (0.1, 0.5)
    cases = [
        {"config": engine(base, {"name": "bfio", "horizon": h, "noise_low": n, "noise_high": n}, 16, 72, per_slot),
         "horizon": h, "noise": n}
        for h in (20, 72)
        for n in levels
    ]  # fmt: skip
    noisy = runs(settings, cases, seeds)
    exact = frame[(frame["G"] == 16) & frame["policy"].isin(["bfio H=20", "bfio H=72"])].copy()
    exact["horizon"] = exact["policy"].str.slice(7).astype(int)
    exact["noise"] = 0.0
    reference = frame[(frame["G"] == 16) & (frame["policy"] == "bfio H=0")].set_index("seed")["mean_imbalance"]
    fcfs = frame[(frame["G"] == 16) & (frame["policy"] == "fcfs")].set_index("seed")["mean_imbalance"]
    both = pd.concat([exact, noisy], ignore_index=True)
    rows, points = [], []
    for (h, n), group in both.groupby(["horizon", "noise"]):
        imbalance = group.set_index("seed")["mean_imbalance"]
        # the gain of looking ahead: the share of H = 0's imbalance that H removes, per seed
        gain = 1 - imbalance / reference.loc[imbalance.index]
        ci = mean_ci(gain.to_numpy() * 100)
        points.append((h, n, ci))
        rows.append(
            {
                "H": h,
                "noise": f"±{n:.0%}",
                "imbalance (k tokens)": ci_cell(group["mean_imbalance"], 1e-3),
                "throughput (k tokens/s)": ci_cell(group["throughput_tokens"], 1e-3),
                "imbalance below H=0 (%)": common.with_ci(ci.estimate, ci.low, ci.high),
            }
        )
    table = common.markdown(pd.DataFrame(rows))
    (settings.out / "bfio_noise.md").write_text(table + "\n")

    figure, ax = plt.subplots(figsize=(6.5, 4))
    for h in (20, 72):
        mine = [(n, c) for hh, n, c in points if hh == h]
        err = [np.nan_to_num((c.high - c.low) / 2) for _, c in mine]
        ax.errorbar(
            [100 * n for n, _ in mine],
            [c.estimate for _, c in mine],
            yerr=err,
            marker="o",
            capsize=3,
            label=f"bfio H={h}",
        )
    ax.axhline(0, color="grey", lw=1, label="bfio H=0")
    ax.axhline(float((1 - fcfs / reference).mean() * 100), color="red", ls="--", lw=1, label="fcfs")
    ax.set_xlabel("output-length estimate noise (± %)")
    ax.set_ylabel("mean imbalance below bfio H=0 (%)")
    ax.set_title("the lookahead's gain under noisy output estimates")
    ax.legend()
    figure.tight_layout()
    path = common.save(figure, settings, "bfio_noise")
    plt.close(figure)
    return table, path


# -- (e) open mode ----------------------------------------------------------------------------
OPEN_ADMISSIONS = {"fcfs": {"name": "fcfs"}, "jsq": {"name": "jsq"}, "bfio H=0": {"name": "bfio", "horizon": 0},
                   "bfio H=20": {"name": "bfio", "horizon": 20}}  # fmt: skip


def open_mode(settings: Settings, seeds: list[int]) -> tuple[pd.DataFrame, str, object]:
    base = lbsim.load_scenario(SCENARIOS / "bfio_open.toml", warn=False)
    if settings.quick:
        base = base.replace(**{"simulation.horizon": 50.0, "simulation.warmup": 15.0})
    loads = settings.pick([0.7, 1.0], [0.5, 0.7, 0.9, 1.0, 1.1])
    routers = settings.pick(["least_tokens"], ["round_robin", "jsq", "least_tokens"])
    rates = [f.rate for f in base.frontends]
    cases = []
    for load in loads:
        for name, admission in OPEN_ADMISSIONS.items():
            changes = {f"frontends.{i}.rate": rate * load for i, rate in enumerate(rates)}
            changes.update({f"backends.{j}.admission": admission for j in range(base.num_backends)})
            config = base.replace(**changes).to_dict()
            cases += [(config, router, load, name) for router in routers]
    jobs = [(config, router, seed) for config, router, _, _ in cases for seed in seeds]
    results = common.parallel_map(open_run, jobs, settings.workers)
    rows = []
    for k, summary in enumerate(results):
        _, router, load, name = cases[k // len(seeds)]
        rows.append({"load": load, "router": router, "admission": name, "seed": jobs[k][2], **summary})
    frame = pd.DataFrame(rows)
    frame.to_csv(settings.out / "bfio_open.csv", index=False)

    table_rows = []
    for (router, name), group in frame.groupby(["router", "admission"], sort=False):
        row = {"router": router, "admission": name}
        for load, part in group.groupby("load"):
            row[f"{load:.0%}"] = ci_cell(part["tpot_mean"], 1e3)
        table_rows.append(row)
    table = common.markdown(pd.DataFrame(table_rows))
    (settings.out / "bfio_open.md").write_text(table + "\n")

    shown = (
        ("tpot_mean", "mean TPOT (ms)", 1e3),
        ("ttft_p99", "TTFT p99 (s)", 1.0),
        ("barrier_idle", "barrier idle (%)", 100.0),
    )
    figure, axes = plt.subplots(
        len(shown), len(routers), figsize=(4.2 * len(routers), 9), sharex=True, sharey="row", squeeze=False
    )
    for c, router in enumerate(routers):
        for r, (key, title, scale) in enumerate(shown):
            a = axes[r, c]
            for name in OPEN_ADMISSIONS:
                part = frame[(frame["router"] == router) & (frame["admission"] == name)]
                cis = [mean_ci(part[part["load"] == load][key] * scale) for load in loads]
                err = [np.nan_to_num((ci.high - ci.low) / 2) for ci in cis]
                a.errorbar(
                    [100 * x for x in loads], [ci.estimate for ci in cis], yerr=err, marker="o", capsize=2, label=name
                )
            if r == 0:
                a.set_title(f"global router: {router}")
            if c == 0:
                a.set_ylabel(title)
            if r == len(shown) - 1:
                a.set_xlabel("offered load (% of capacity)")
        axes[1, c].set_yscale("log")
    axes[0, 0].legend()
    figure.tight_layout()
    path = common.save(figure, settings, "bfio_open")
    plt.close(figure)
    return frame, table, path


# -- (f) energy -------------------------------------------------------------------------------
def energy(
    settings: Settings, base: Scenario, frame: pd.DataFrame, seeds: list[int]
) -> tuple[str, object, pd.DataFrame]:
    per_slot = settings.pick(1.5, 2.5)
    h200 = lbsim.load_scenario(SCENARIOS / "bfio_energy.toml", warn=False)
    cases = [
        {"config": engine(h200, admission, 16, 72, per_slot), "policy": name} for name, admission in POLICIES.items()
    ]
    split = runs(settings, cases, seeds)
    utilisation = frame[frame["G"] == 16]
    rows, bars = [], []
    for model, part in (("utilisation (100-400 W)", utilisation), ("time_split, H200 (700/250 W)", split)):
        window = part.pivot_table(index="seed", columns="policy", values="energy")
        per_token = part.pivot_table(index="seed", columns="policy", values="energy_per_token")
        for policy in POLICIES:
            saving = (1 - window[policy] / window["fcfs"]).to_numpy() * 100
            ci = mean_ci(saving)
            bars.append((model, policy, ci))
            rows.append(
                {
                    "power model": model,
                    "policy": policy,
                    "energy in the window (MJ)": ci_cell(window[policy], 1e-6),
                    "J per token": ci_cell(per_token[policy]),
                    "saving vs fcfs (%)": common.with_ci(ci.estimate, ci.low, ci.high, 2),
                }
            )
    data = pd.DataFrame(rows)
    table = common.markdown(data)
    (settings.out / "bfio_energy.md").write_text(table + "\n")

    figure, ax = plt.subplots(figsize=(8, 4))
    names = list(POLICIES)
    for k, model in enumerate(dict.fromkeys(m for m, _, _ in bars)):
        cis = [c for m, _, c in bars if m == model]
        err = [np.nan_to_num((c.high - c.low) / 2) for c in cis]
        ax.bar(
            np.arange(len(names)) + (k - 0.5) * 0.4, [c.estimate for c in cis], 0.4, yerr=err, capsize=2, label=model
        )
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("energy saved against fcfs (%)")
    ax.axhline(0, color="grey", lw=1)
    ax.set_title("energy over the protocol window, G = 16, B = 72")
    ax.legend()
    figure.tight_layout()
    path = common.save(figure, settings, "bfio_energy")
    plt.close(figure)
    savings = pd.DataFrame([{"model": m, "policy": p, "saving": c.estimate} for m, p, c in bars])
    return table, path, savings


def run(settings: Settings) -> Section:
    base = lbsim.load_scenario(SCENARIOS / "bfio_saturated.toml", warn=False)
    seeds = list(range(1, settings.pick(3, 9)))
    open_seeds = list(range(1, settings.pick(2, 4)))

    frame, paper_md, paper_png = paper_setting(settings, base, seeds)
    _, scale_md, scale_png, scale_text = scaling(settings, base, seeds)
    price_md, price_png = price(settings, base, frame, seeds[0])
    noise_md, noise_png = noise(settings, base, frame, seeds)
    open_frame, open_md, open_png = open_mode(settings, open_seeds)
    energy_md, energy_png, savings = energy(settings, base, frame, seeds)

    g16 = frame[frame["G"] == 16].groupby("policy")["mean_imbalance"].mean()
    ratio = paired(frame[frame["G"] == 16].assign(k=0), "mean_imbalance", ["k"], "fcfs", "bfio H=72", "policy")
    saving = savings.set_index(["model", "policy"])["saving"]
    headline = (
        f"G = 16: mean imbalance fcfs {g16['fcfs'] / 1e3:.0f}k, bfio H=0 {g16['bfio H=0'] / 1e3:.0f}k, "
        f"H=72 {g16['bfio H=72'] / 1e3:.0f}k tokens (fcfs / H=72 = {ratio.mean():.1f}x); "
        f"energy saved by bfio H=72: {saving[('utilisation (100-400 W)', 'bfio H=72')]:.1f}% (utilisation), "
        f"{saving[('time_split, H200 (700/250 W)', 'bfio H=72')]:.1f}% (time_split, H200). {scale_text}"
    )
    text = (
        "BF-IO admission (Chen et al., arXiv:2601.17855) against fcfs, jsq, round_robin and bestfit in one "
        f"saturated engine (`scenarios/bfio_saturated.toml`: B = 72, 2.5 requests per slot, {len(seeds)} seeds), "
        "the theorem's scaling, the price in pool wait, noisy output estimates, open mode behind global routers "
        f"(`scenarios/bfio_open.toml`, {len(open_seeds)} seeds of {open_frame['load'].nunique()} loads) and energy "
        "under two power models (`scenarios/bfio_energy.toml`)."
    )
    return Section(
        title="BF-IO admission in data-parallel LLM engines",
        command=common.command("bfio.py"),
        text=text,
        tables=[paper_md, scale_md, price_md, noise_md, open_md, energy_md],
        figures=[paper_png, scale_png, price_png, noise_png, open_png, energy_png],
        headline=headline,
    )


if __name__ == "__main__":
    common.script_main(run, __doc__.splitlines()[0])
