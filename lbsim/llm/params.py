"""The parameters of an ``llm`` backend, validated once, at load (docs/llm.md, "Parameters").

[[backends]]
model = "llm"
workers = 16
slots = 72
reveal = 64
admission = { name = "fcfs" }
step_time = { kind = "barrier", base = 0.0048875, per_token = 1.0052490234375e-07 }
power = { idle = 100.0, max = 400.0, exponent = 0.7 }
kv_capacity = 200000
kv_watermark = 0.99
dispatch = "pool"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lbsim.errors import ScenarioError
from lbsim.llm.admission import AdmissionChoice, make_admission
from lbsim.llm.power import PowerModel, make_power
from lbsim.llm.step_time import StepTimeModel, make_step_time
from lbsim.registry import from_params

#: the keys of an llm backend table this model validates (the backend's own keys,
#: ``name`` and ``model``, belong to the backend extension point)
LLM_KEYS = ("workers", "slots", "reveal", "admission", "step_time", "power", "kv_capacity", "kv_watermark", "dispatch")


class LLMParams(BaseModel):
    """One data-parallel engine: G ranks x B slots stepping behind a barrier."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, arbitrary_types_allowed=True
    )

    workers: int = Field(ge=1, description="G: data-parallel ranks that step together")
    slots: int = Field(ge=1, description="B: requests at most per rank")
    reveal: int | None = Field(
        None, ge=1, description="R: admission sees the first R pool entries (default 4 * workers)"
    )
    admission: AdmissionChoice = Field(
        default_factory=lambda: make_admission({"name": "fcfs"}), description="admission policy: { name = ..., ... }"
    )
    step_time: StepTimeModel = Field(
        default_factory=lambda: make_step_time({"kind": "barrier"}), description="step-time model: { kind = ..., ... }"
    )
    power: PowerModel = Field(default_factory=lambda: make_power({}), description="power model: { kind = ..., ... }")
    kv_capacity: int | None = Field(None, ge=1, description="KV-cache capacity per rank in tokens (default: unlimited)")
    kv_watermark: float = Field(
        0.99, gt=0, le=1, description="admit only if the rank's tokens stay <= kv_watermark * kv_capacity"
    )
    dispatch: Literal["pool", "on_arrival"] = Field(
        "pool", description="pool: one engine pool; on_arrival: bound to a rank on arrival"
    )

    @property
    def look_ahead(self) -> int:
        """R, with its default ``4 * workers``."""
        return self.reveal if self.reveal is not None else 4 * self.workers

    @property
    def kv_limit(self) -> int | None:
        """The most resident tokens a rank may hold after an admission: ``floor(kv_watermark * kv_capacity)``."""
        if self.kv_capacity is None:
            return None
        return max(1, math.floor(self.kv_watermark * self.kv_capacity + 1e-9))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], key: str = "backends[0]") -> LLMParams:
        """Validate a backend table (only the keys of :data:`LLM_KEYS`); errors name the key.

        ``backends[0].slots: must be >= 1, got 0``; ``backends[0].admission.name: policy
        'vllm_dp' dispatches on arrival: needs dispatch = "on_arrival"``.
        """
        params = dict(spec)
        if "admission" in params:
            params["admission"] = make_admission(params["admission"], f"{key}.admission")
        if "step_time" in params:
            params["step_time"] = make_step_time(params["step_time"], f"{key}.step_time")
        if "power" in params:
            params["power"] = make_power(params["power"], f"{key}.power")
        made = from_params(cls, params, key, "llm backend")
        try:
            made.admission.policy.check_engine(made.admission.params, made.workers, made.slots, made.look_ahead)
        except ScenarioError as err:
            raise ScenarioError(f"{key}.{err.key}", err.message) from None
        if made.admission.dispatch != made.dispatch:
            raise ScenarioError(
                f"{key}.admission.name",
                f"policy '{made.admission.name}' dispatches {_MODE[made.admission.dispatch]}: "
                f'needs dispatch = "{made.admission.dispatch}", got "{made.dispatch}"',
            )
        return made

    def spec(self) -> dict[str, Any]:
        """The TOML table these parameters are built from."""
        out: dict[str, Any] = {"workers": self.workers, "slots": self.slots, "reveal": self.look_ahead}
        out["admission"] = self.admission.spec()
        out["step_time"] = self.step_time.spec()
        out["power"] = self.power.spec()
        if self.kv_capacity is not None:
            out["kv_capacity"] = self.kv_capacity
            out["kv_watermark"] = self.kv_watermark
        out["dispatch"] = self.dispatch
        return out


_MODE = {"pool": "from the pool", "on_arrival": "on arrival"}
