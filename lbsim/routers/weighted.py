"""Fixed splits: each frontend samples a backend from a static distribution."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ScenarioError
from .base import SplitRouter, register
from .fluid_base import FluidRouter, fluid_twin


class WeightedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    split: Literal["given", "capacity", "optimal"] = Field(
        "capacity",
        description="'given' (weights), 'capacity' (proportional to sup mu_j) or 'optimal' (the centralized optimum)",
    )
    weights: list[float] | list[list[float]] | None = Field(
        None, description="split='given': B weights for every frontend, or an F x B matrix"
    )

    @model_validator(mode="after")
    def _weights_for_given(self):
        if self.weights is not None and "split" not in self.model_fields_set:
            object.__setattr__(self, "split", "given")
        if self.split == "given" and self.weights is None:
            raise ValueError("split 'given' needs weights")
        return self


@register
class Weighted(SplitRouter):
    """A fixed split: given weights, proportional to capacity, or the centralized optimum's split.

    With ``split = "optimal"`` it is the best static policy (docs/model.md section 2).
    """

    name = "weighted"
    uses_rates = True
    Params = WeightedParams
    params: WeightedParams

    @classmethod
    def check_scenario(cls, params, scenario):
        if params.split == "given":
            cls._given(params, scenario.connect)

    @staticmethod
    def _given(params, connect: np.ndarray) -> np.ndarray:
        F, B = connect.shape
        w = np.array(params.weights, dtype=float)
        w = np.broadcast_to(w, (F, B)) if w.ndim == 1 and w.shape == (B,) else w
        if w.shape != (F, B):
            raise ScenarioError("router.weights", f"must have {B} entries or be {F} x {B}, got shape {w.shape}")
        if (w < 0).any() or not ((w * connect).sum(axis=1) > 0).all():
            raise ScenarioError("router.weights", "must be >= 0 with a positive weight on a usable backend")
        return w

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        F, B = ctx.num_frontends, ctx.num_backends
        if params.split == "given":
            w = self._given(params, ctx.connect)
        elif params.split == "capacity":
            w = np.broadcast_to([r.supremum for r in ctx.rates], (F, B)).astype(float)
            w = np.where(np.isfinite(w), w, 1.0)
        else:
            from ..optimum import optimum

            w = optimum(ctx.scenario).routing
        self.set_split(w)


@fluid_twin(Weighted)
class FluidWeighted(FluidRouter):
    """``weighted``: the discrete router's fixed split (given, capacity or optimal), computed by the router itself."""

    def initial_split(self) -> np.ndarray:
        return np.array(self.discrete_router().split(), dtype=float)
