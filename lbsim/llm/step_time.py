"""Step-time models: how long one step of a data-parallel engine takes (``step_time``).

An engine of G ranks steps behind a barrier: every rank runs its batch, then
waits for the slowest (docs/llm.md, "The step"). A model gives each rank's
*own* compute time, the step time of that rank run alone, from the state at
the start of the step, and the step lasts as long as the slowest rank::

    duration = max_g own_g

The difference ``duration - own_g`` is rank g's wait at the barrier (used by
the ``time_split`` power model and the barrier-idle statistic). Everything is
vectorised over ranks.

A new model is one class plus one registry line (``@register_step_time``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lbsim.errors import unknown
from lbsim.registry import Registry


class StepTimeModel(BaseModel):
    """A step's duration from the ranks' loads, batch sizes and admitted prompt tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    kind: ClassVar[str]

    @abstractmethod
    def own_times(self, loads: np.ndarray, active: np.ndarray, admitted: np.ndarray) -> np.ndarray:
        """Each rank's own compute time (s) for the step, the model evaluated on that rank alone.

        ``loads``: resident tokens ``L_g``; ``active``: requests ``n_g``;
        ``admitted``: prompt tokens admitted on g for this step (all int64, length G).
        """

    def duration(self, loads: np.ndarray, active: np.ndarray, admitted: np.ndarray) -> float:
        """The step time: the slowest rank's own time."""
        return float(np.max(self.own_times(loads, active, admitted)))

    @abstractmethod
    def per_request(self, mean_length: float, mean_prompt: float, mean_output: float) -> tuple[float, float]:
        """``(a, b)`` of a rank's step time ``a + b * n`` with n requests of these mean lengths.

        Used for the engine's equivalent rate function (:mod:`lbsim.llm.equivalent`).
        """

    def spec(self) -> dict[str, Any]:
        """The TOML table this model is built from."""
        return {"kind": self.kind, **self.model_dump(exclude_none=True)}


STEP_TIMES = Registry("step-time model", "kind")
#: class decorator: make a model available as ``step_time = { kind = cls.kind, ... }``
register_step_time = STEP_TIMES.register


def make_step_time(spec: Mapping[str, Any] | StepTimeModel, key: str = "step_time") -> StepTimeModel:
    """The model described by ``{ kind = "barrier", base = ..., per_token = ... }``; errors name the key."""
    if isinstance(spec, StepTimeModel):
        return spec
    model: StepTimeModel = STEP_TIMES.make(spec, key, '{ kind = "barrier", base = 0.005, per_token = 1e-7 }')
    return model


@register_step_time
class Barrier(StepTimeModel):
    """``step = base + per_token * max_g L_g``: decode is memory-bound, the longest KV cache sets the pace.

    A rank's own time is ``base + per_token * L_g``. The defaults are the
    BF-IO paper's example (Chen et al., arXiv:2601.17855).
    """

    kind = "barrier"
    base: float = Field(0.0048875, ge=0, description="fixed time of a step (s): weight reads, launch overheads")
    per_token: float = Field(1.0052490234375e-07, ge=0, description="time per resident token of the largest rank (s)")

    @model_validator(mode="after")
    def _positive(self) -> Barrier:
        if self.base <= 0 and self.per_token <= 0:
            raise ValueError("base or per_token must be > 0 (a step must take time)")
        return self

    def own_times(self, loads: np.ndarray, active: np.ndarray, admitted: np.ndarray) -> np.ndarray:
        return self.base + self.per_token * loads

    def duration(self, loads: np.ndarray, active: np.ndarray, admitted: np.ndarray) -> float:
        return self.base + self.per_token * float(loads.max())

    def per_request(self, mean_length: float, mean_prompt: float, mean_output: float) -> tuple[float, float]:
        return self.base, self.per_token * mean_length


#: (a, b, c) of the affine presets, in seconds, seconds per request, seconds per token
AFFINE_PRESETS: dict[str, tuple[float, float, float]] = {
    "h100_llama8b": (7.7e-3, 4.4e-6, 76e-9),
    "h200_llama8b": (5.7e-3, 4.4e-6, 53e-9),
}


@register_step_time
class Affine(StepTimeModel):
    """``step = sync + max_g (a + b n_g + c L_g + p * prompt tokens admitted on g for this step)``.

    The roofline form used by LLM serving simulators (e.g. Vidur: Agrawal et
    al., "Vidur: A Large-Scale Simulation Framework for LLM Inference", MLSys
    2024): a decode step reads the weights once (``a``), pays a per-sequence
    cost (``b``: sampling, scheduling, small kernels) and reads every resident
    token's KV cache (``c``); prefill of the prompts admitted for the step
    costs ``p`` per token (compute-bound).

    Presets (``preset = "h100_llama8b"``; any coefficient given beside it overrides it):

    * ``h100_llama8b``: a 7.7 ms, b 4.4 us, c 76 ns per token. Llama-3-8B in
      bf16 is 16 GB of weights; at the H100 SXM's 3.35 TB/s datasheet HBM3
      bandwidth a weight read takes 4.8 ms; the rest of ``a`` (~3 ms) is
      launch, sampling and scheduling overhead. A token's KV cache is 128 KB
      (32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes): 39 ns at
      3.35 TB/s, about doubled for the attention kernels' achieved
      bandwidth: 76 ns.
    * ``h200_llama8b``: a 5.7 ms, b 4.4 us, c 53 ns. The same at the H200's
      4.8 TB/s HBM3e: 3.3 ms of weight reads plus overheads, 27 ns x 2 per token.

    The presets set ``p = 0`` (decode only). Prefill costs about
    2 x 8e9 FLOPs per prompt token, ~33 us at half of an H100's 989 dense bf16
    TFLOP/s: set ``p = 3.3e-5`` to model it.
    """

    kind = "affine"
    preset: str | None = Field(None, description="h100_llama8b or h200_llama8b: defaults for a, b, c")
    sync: float = Field(0.0, ge=0, description="time of the barrier itself (s)")
    a: float = Field(ge=0, description="fixed time of a rank's step (s)")
    b: float = Field(0.0, ge=0, description="time per request in the rank's batch (s)")
    c: float = Field(0.0, ge=0, description="time per resident token on the rank (s)")
    p: float = Field(0.0, ge=0, description="time per prompt token admitted on the rank for this step (s)")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("preset") is not None:
            name = data["preset"]
            if name not in AFFINE_PRESETS:
                raise ValueError(unknown("preset", str(name), AFFINE_PRESETS))
            a, b, c = AFFINE_PRESETS[name]
            data = {"a": a, "b": b, "c": c, **data}
        return data

    @model_validator(mode="after")
    def _positive(self) -> Affine:
        if self.sync + self.a <= 0 and self.b <= 0 and self.c <= 0:
            raise ValueError("sync, a, b or c must be > 0 (a step must take time)")
        return self

    def own_times(self, loads: np.ndarray, active: np.ndarray, admitted: np.ndarray) -> np.ndarray:
        return self.sync + (self.a + self.b * active + self.c * loads + self.p * admitted)

    def per_request(self, mean_length: float, mean_prompt: float, mean_output: float) -> tuple[float, float]:
        # Prefill is amortised: a request's prompt is admitted once in its mean_output steps.
        return self.sync + self.a, self.b + self.c * mean_length + self.p * mean_prompt / mean_output
