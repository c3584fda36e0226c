"""Summary figures and the jobs table of llm engines (docs/llm.md, "Statistics").

:func:`engine_figures` holds the figures of both modes (barrier idle by
time, energy per token, TTFT and TPOT, pool wait, preemptions);
:func:`protocol_figures` the BF-IO paper's protocol figures of the saturated
mode (Chen et al., arXiv:2601.17855), averaged over the window: steps 1 to
the last step after which anything was admitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from lbsim.llm.request import LLMRequest
from lbsim.llm.steps import StepLog, Sums

if TYPE_CHECKING:
    import pandas as pd


JOB_COLUMNS = (
    "request_id", "prompt", "output", "rank", "t_arrival", "t_admit", "t_first_token", "t_done",
    "ttft", "tpot", "pool_wait", "preemptions",
)  # fmt: skip


def jobs_frame(requests: Sequence[LLMRequest]) -> pd.DataFrame:
    """One row per request: tokens, rank, times, ``ttft``, ``tpot``, ``pool_wait = t_admit - t_arrival``."""
    import pandas as pd  # (lazy: the CLI starts without pandas)

    nan = float("nan")

    def time(value: float | None) -> float:
        return nan if value is None else value

    frame = pd.DataFrame(
        {
            "request_id": np.array([r.request_id for r in requests], dtype=np.int64),
            "prompt": np.array([r.prompt for r in requests], dtype=np.int64),
            "output": np.array([r.output for r in requests], dtype=np.int64),
            "rank": np.array([r.rank for r in requests], dtype=np.int64),
            "t_arrival": np.array([r.t_arrival for r in requests], dtype=np.float64),
            "t_admit": np.array([time(r.t_admit) for r in requests], dtype=np.float64),
            "t_first_token": np.array([time(r.t_first_token) for r in requests], dtype=np.float64),
            "t_done": np.array([time(r.t_done) for r in requests], dtype=np.float64),
            "preemptions": np.array([r.preemptions for r in requests], dtype=np.int64),
        }
    )
    frame["ttft"] = frame["t_first_token"] - frame["t_arrival"]
    # (finish - first token) / (output - 1): undefined for a single output token.
    frame["tpot"] = (frame["t_done"] - frame["t_first_token"]) / (frame["output"] - 1).where(frame["output"] > 1)
    frame["pool_wait"] = frame["t_admit"] - frame["t_arrival"]
    return frame[list(JOB_COLUMNS)]


def _quantiles(name: str, values: pd.Series) -> dict[str, float]:
    sample = values.dropna().to_numpy()
    if not len(sample):
        return {f"{name}_{s}": float("nan") for s in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.quantile(sample, [0.5, 0.9, 0.99])
    figures = {"mean": float(sample.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}
    return {f"{name}_{key}": value for key, value in figures.items()}


def merge_sums(sums: Sequence[Sums]) -> Sums:
    """The running sums of several engines as one fleet's (times: the latest; the rest added)."""
    total = Sums()
    for one in sums:
        for f in fields(Sums):
            value = getattr(one, f.name)
            setattr(total, f.name, max(total.time, value) if f.name == "time" else getattr(total, f.name) + value)
    return total


def engine_figures(sums: Sums, jobs: pd.DataFrame, preemptions: int) -> dict[str, Any]:
    """Figures of both modes from an engine's running sums and its finished jobs."""
    done = jobs[jobs["t_done"].notna()]
    out: dict[str, Any] = {
        "steps": sums.steps,
        "barrier_idle": sums.barrier_idle / sums.rank_time if sums.rank_time > 0 else 0.0,
        "tokens_emitted": sums.tokens,
        "energy_total": sums.energy,
        "energy_per_token": sums.energy / sums.tokens if sums.tokens else float("nan"),
    }
    out.update(_quantiles("ttft", done["ttft"]))
    out.update(_quantiles("tpot", done["tpot"]))
    waits = done["pool_wait"].dropna()
    out["pool_wait_p99"] = float(np.quantile(waits, 0.99)) if len(waits) else float("nan")
    out["preemptions"] = int(preemptions)
    return out


def protocol_figures(log: StepLog, jobs: pd.DataFrame) -> dict[str, Any]:
    """The saturated mode's window figures.

    ``steps_window`` K: the last step after which anything was admitted (all
    steps when everything was admitted at t = 0); ``mean_imbalance`` and
    ``mean_idle_rate``: means over steps 1..K; ``throughput_tokens``: tokens
    emitted in steps 1..K over their duration; ``energy``: J over steps 1..K;
    ``mean_tpot``: mean over all requests of ``(t_done - t_admit) / output``;
    ``makespan``: the last finish.
    """
    window = log.window if log.window is not None and log.window.steps > 0 else log.sums
    steps = window.steps
    return {
        "steps_window": steps,
        "mean_imbalance": window.imbalance / steps if steps else float("nan"),
        "mean_idle_rate": window.idle_rate / steps if steps else float("nan"),
        "throughput_tokens": window.tokens / window.time if window.time > 0 else float("nan"),
        "energy": window.energy,
        "mean_tpot": float(((jobs["t_done"] - jobs["t_admit"]) / jobs["output"]).mean()),
        "makespan": float(jobs["t_done"].max()) if len(jobs) else 0.0,
    }
