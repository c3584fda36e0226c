"""The result of a fluid integration: the trajectory, sampled as the simulator samples, and its tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files import write_json, write_parquet, write_toml
from ..outputs import lbsim_version, output_directory

if TYPE_CHECKING:  # pandas loads on first use: importing lbsim stays quick
    import pandas as pd

__all__ = ["FluidResult"]


@dataclass
class FluidResult:
    """A fluid trajectory sampled every ``sample_interval``.

    ``t`` (T,), ``load`` (T, B), ``split`` (T, F, B) (None if not recorded:
    the split in effect at each sample time), ``final_load`` (B,) and
    ``final_split`` (F, B) at the horizon; ``timeseries`` and ``routing`` are
    the simulator's table shapes (``jobs = load / sbar``, a real number here).
    ``served`` (T, B) is each backend's cumulative work served since 0 at the
    samples (the simulator's ``served`` column), ``final_served`` (B,) at the
    horizon and ``served_warmup`` (B,) at the warm-up; conservation makes
    ``served = x0 + arrived - load``.
    """

    scenario: Any
    router: str
    params: dict[str, Any]
    t: np.ndarray
    load: np.ndarray
    split: np.ndarray | None
    final_load: np.ndarray
    final_split: np.ndarray
    #: the time step (Heun's method), or the mean step (LSODA)
    dt: float
    band: float | None
    #: eps = band * typical cost: the argmin routers' tie band in cost units (None for other routers)
    tie_tolerance: float | None
    steps: int
    wall_seconds: float
    x0: np.ndarray | None = field(repr=False, default=None)
    #: "heun" (fixed steps, :mod:`lbsim.fluid.integrator`) or "lsoda" (undelayed stiff loops, :mod:`lbsim.fluid.stiff`)
    method: str = "heun"
    served: np.ndarray | None = field(repr=False, default=None)
    #: the longest loop delay left out (LSODA on short delays, :func:`lbsim.fluid.stiff.short_delays`), else 0
    neglected_delay: float = 0.0
    final_served: np.ndarray | None = field(repr=False, default=None)
    served_warmup: np.ndarray | None = field(repr=False, default=None)

    @property
    def served_rate(self) -> float:
        """Work per second served by all backends after the warm-up, as the simulator's summary ``served``.

        ``sum_j [S_j(T) - S_j(warmup)] / (T - warmup)``, ``S_j`` the cumulative
        work served; ``nan`` when it was not recorded.
        """
        if self.final_served is None or self.served_warmup is None:
            return math.nan
        window = self.steps * self.dt - self.scenario.simulation.warmup
        return float(np.sum(self.final_served) - np.sum(self.served_warmup)) / window if window > 0 else math.nan

    @cached_property
    def timeseries(self) -> pd.DataFrame:
        import pandas as pd

        T, B = self.load.shape
        load = self.load.reshape(-1)
        return pd.DataFrame(
            {
                "t": np.repeat(self.t, B),
                "backend": np.tile(np.arange(B, dtype=np.int32), T),
                "load": load,
                "jobs": load / self.scenario.mean_size,
                "served": self.served.reshape(-1) if self.served is not None else np.full(T * B, np.nan),
            }
        )

    @cached_property
    def routing(self) -> pd.DataFrame:
        import pandas as pd

        frontend, backend = np.nonzero(self.scenario.connect)
        split = self.split
        T = len(self.t) if split is not None else 0
        prob = split[:, frontend, backend].reshape(-1) if split is not None and T else np.empty(0)
        return pd.DataFrame(
            {
                "t": np.repeat(self.t[:T], len(frontend)),
                "frontend": np.tile(frontend.astype(np.int32), T),
                "backend": np.tile(backend.astype(np.int32), T),
                "prob": prob,
            }
        )

    def mean_latency(self, load: np.ndarray | None = None, split: np.ndarray | None = None) -> float:
        """Little's law on a fluid state: ``(sum_ij f_ij 2 d_ij + sum_j x_j) / sum_ij f_ij`` (final state by default).

        ``f_ij = lambda_i p_ij`` is the flow being sent. At a rest point
        ``x_j = mu_j^{-1}(Lambda_j)``, so this is the optimum's objective
        (docs/model.md section 2) evaluated at the router's split.
        """
        load = self.final_load if load is None else load
        split = self.final_split if split is None else split
        flow = self.scenario.demand[:, None] * split
        network = float((flow * 2.0 * self.scenario.delay).sum())
        return (network + float(np.sum(load))) / float(flow.sum())

    def steady_mean_latency(self, split: np.ndarray | None = None) -> float:
        """The optimum's objective at a split, loads at their steady state ``mu_j^{-1}(Lambda_j)`` (inf: overloaded)."""
        split = self.final_split if split is None else split
        flow = self.scenario.demand[:, None] * split
        arrivals = flow.sum(axis=0)
        rates = self.scenario.rate_functions("the fluid model")
        load = np.array([float(r.inverse(a)) for r, a in zip(rates, arrivals)])
        return self.mean_latency(load, split)

    def settling_time(self, load: np.ndarray, tolerance: float = 0.01) -> float:
        """The first sample time from which ``max_j |x_j - load_j| <= tolerance * max_j load_j`` (inf: never).

        "From which": the error stays within the tolerance at every later sample.
        """
        error = np.abs(self.load - np.asarray(load)).max(axis=1) / np.max(np.abs(load))
        outside = np.flatnonzero(error > tolerance)
        if not len(outside):
            return float(self.t[0]) if len(self.t) else math.inf
        return float(self.t[outside[-1] + 1]) if outside[-1] + 1 < len(self.t) else math.inf

    def summary(self) -> dict[str, Any]:
        def clean(v):
            return [clean(u) for u in v] if isinstance(v, list) else (v if math.isfinite(v) else None)

        return {
            "scenario": self.scenario.name,
            "router": self.router,
            "params": self.params,
            "model": "fluid",
            "horizon": float(self.steps * self.dt),
            "method": self.method,
            "neglected_delay": self.neglected_delay,
            "dt": self.dt,
            "steps": self.steps,
            "band": self.band,
            "tie_tolerance": self.tie_tolerance,
            "final_load": clean(self.final_load.tolist()),
            "final_split": clean(self.final_split.tolist()),
            "mean_latency": clean(self.mean_latency()),
            "steady_mean_latency": clean(self.steady_mean_latency()),
            "served": clean(self.served_rate),
            "wall_seconds": round(self.wall_seconds, 6),
        }

    def write(self, out: str | Path, *, overrides: Sequence[str] = (), force: bool = False) -> Path:
        """``timeseries.parquet``, ``routing.parquet`` (if the split was recorded), ``summary.json`` and
        ``scenario.toml``, into a directory that appears whole (:func:`lbsim.outputs.output_directory`:
        a non-empty ``out`` is refused unless ``force`` replaces it). ``summary.json`` also records the
        lbsim version and ``overrides`` (the ``--set`` strings of the command)."""
        with output_directory(out, force) as tmp:
            tables = {"timeseries": self.timeseries}
            if self.split is not None:
                tables["routing"] = self.routing
            for name, frame in tables.items():
                write_parquet(tmp / f"{name}.parquet", frame)
            scenario = self.scenario.to_dict()
            scenario["router"] = {"name": self.router, **self.params}
            write_toml(tmp / "scenario.toml", scenario)
            provenance = {"lbsim_version": lbsim_version(), "overrides": list(overrides)}
            write_json(tmp / "summary.json", {**self.summary(), **provenance})
        return Path(out)
