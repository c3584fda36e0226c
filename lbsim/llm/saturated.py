"""``mode = "saturated"``: every request waits at t = 0 in one engine's pool, in order; run to the last finish.

The BF-IO paper's protocol (Chen et al., arXiv:2601.17855): the engine is
kept full while the pool lasts, so the figures measure admission alone
(docs/llm.md, "Saturated mode").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lbsim.llm.engine import LLMEngine
from lbsim.llm.figures import engine_figures, jobs_frame, protocol_figures
from lbsim.llm.params import LLMParams
from lbsim.llm.request import LLMRequest
from lbsim.llm.steps import StepLog

if TYPE_CHECKING:
    import pandas as pd



@dataclass
class SaturatedResult:
    """``summary``: the protocol figures then the figures of both modes; ``steps``, ``jobs``: tables."""

    summary: dict[str, Any]
    steps: pd.DataFrame
    jobs: pd.DataFrame
    engine: LLMEngine


def run_saturated(
    params: LLMParams,
    prompts: npt.ArrayLike,
    outputs: npt.ArrayLike,
    rng: np.random.Generator | int | None = None,
    *,
    name: str = "llm",
    sample_interval: float | None = None,
    output_estimates: npt.ArrayLike | None = None,
) -> SaturatedResult:
    """Run one engine on the whole workload, every request in the pool at t = 0 in the given order.

    ``rng`` (or a seed) is the admission policy's stream; ``output_estimates``
    are what policies see of the output lengths (default: the true ones).
    """
    prompt = np.asarray(prompts, dtype=np.int64)
    output = np.asarray(outputs, dtype=np.int64)
    if prompt.shape != output.shape or prompt.ndim != 1:
        raise ValueError("prompts and outputs must be 1-d arrays of the same length")
    estimate = output if output_estimates is None else np.asarray(output_estimates, dtype=np.int64)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    engine = LLMEngine(params, generator, name=name, steps=StepLog(name, sample_interval))
    requests = [
        LLMRequest(i, p, o, 0.0, e)
        for i, (p, o, e) in enumerate(zip(prompt.tolist(), output.tolist(), estimate.tolist()))
    ]
    engine.arrive_many(requests, 0.0)
    engine.run()
    if engine.completed != len(requests):
        raise RuntimeError(
            f"admission policy '{engine.policy.name}' left {len(requests) - engine.completed} requests waiting"
        )
    jobs = jobs_frame(requests)
    summary = protocol_figures(engine.log, jobs)
    summary.update(engine_figures(engine.log.sums, jobs, engine.preemptions))
    return SaturatedResult(summary, engine.log.frame(), jobs, engine)
