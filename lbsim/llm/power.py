"""Power models: each rank's power draw during a step (``power``), for the energy figures.

A model returns the mean power of every rank over a step (W, vectorised over
ranks); the engine adds ``sum_g P_g * duration`` to the energy (J)
(docs/llm.md, "Statistics").

A new model is one class plus one registry line (``@register_power``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lbsim.registry import Registry


class PowerModel(BaseModel):
    """Per-rank power during a step."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    kind: ClassVar[str]

    @abstractmethod
    def power(self, loads: np.ndarray, own_times: np.ndarray, duration: float) -> np.ndarray:
        """Mean power of each rank over the step (W).

        ``loads``: resident tokens ``L_g`` when the step's statistics are taken
        (after its completions); ``own_times``: each rank's own compute time
        and ``duration`` the step time (:mod:`lbsim.llm.step_time`).
        """

    def spec(self) -> dict[str, Any]:
        """The TOML table this model is built from."""
        return {"kind": self.kind, **self.model_dump()}


POWER_MODELS = Registry("power model", "kind")
#: class decorator: make a model available as ``power = { kind = cls.kind, ... }``
register_power = POWER_MODELS.register


def make_power(spec: Mapping[str, Any] | PowerModel, key: str = "power") -> PowerModel:
    """The model described by ``{ idle = 100, max = 400, exponent = 0.7 }`` (kind defaults to ``utilisation``)."""
    if isinstance(spec, PowerModel):
        return spec
    model: PowerModel = POWER_MODELS.make(spec, key, "{ idle = 100.0, max = 400.0, exponent = 0.7 }", "utilisation")
    return model


@register_power
class Utilisation(PowerModel):
    """``P_g = idle + (max - idle) * (L_g / max_h L_h) ** exponent`` (the BF-IO paper's energy model).

    Chen et al., arXiv:2601.17855: a rank's power grows concavely with its
    share of the largest rank's work. Every rank draws ``idle`` when all loads are 0.
    """

    kind = "utilisation"
    idle: float = Field(100.0, ge=0, description="power of a rank with no load (W)")
    max: float = Field(400.0, ge=0, description="power of the most loaded rank (W)")
    exponent: float = Field(0.7, gt=0, description="concavity of power in utilisation")

    @model_validator(mode="after")
    def _ordered(self) -> Utilisation:
        if self.max < self.idle:
            raise ValueError(f"max must be >= idle ({self.idle:g})")
        return self

    def power(self, loads: np.ndarray, own_times: np.ndarray, duration: float) -> np.ndarray:
        top = loads.max()
        if top <= 0:
            return np.full(loads.shape, self.idle)
        return self.idle + (self.max - self.idle) * (loads / top) ** self.exponent


@register_power
class TimeSplit(PowerModel):
    """``busy`` watts while a rank computes its own part of the step, ``idle`` while it waits at the barrier.

    ``P_g = (busy * own_g + idle * (duration - own_g)) / duration``.
    """

    kind = "time_split"
    busy: float = Field(400.0, ge=0, description="power while computing (W)")
    idle: float = Field(100.0, ge=0, description="power while waiting at the barrier (W)")

    def power(self, loads: np.ndarray, own_times: np.ndarray, duration: float) -> np.ndarray:
        if duration <= 0:
            return np.full(loads.shape, self.idle)
        share = own_times / duration
        return self.idle + (self.busy - self.idle) * share
