"""The fluid model's arrays: a scenario validated once, with every backend's rate as one vectorised function.

The fluid model of a scenario (docs/model.md section 2):

State: every backend's load ``x_j(t)`` (work units). Dynamics::

    dx_j/dt = sum_i lambda_i(t - d_ij) p_ij(t - d_ij) - m_j(t) mu_j(min(x_j, L_j)),   x_j >= 0

with ``lambda_i(t)`` the frontend's volume rate (times the rate schedule),
``p_ij(t)`` its routing split, ``d_ij`` the one-way delay (plus the mean of
any jitter: requests are in transit), ``m_j(t)`` an antagonist's capacity
multiplier and ``L_j`` the ``max_load`` of a ``ps`` backend (``+inf``
otherwise). The split is what the router makes of the *observed* loads
``xhat_ij(t) = x_j(t - d_ij)`` (``delayed`` telemetry; ``instant``:
``x_j(t)``; ``periodic``: the last report ``x_j(k P)`` with ``k P <= t -
d_ij``). This is the limit of the stochastic system as ``job_scale -> 0``
(the fluid limits of GMSR in Zhang, Balseiro, Kleinberg, Mirrokni, Sivan,
Wydrowski, arXiv:2411.17103, and the delay-differential model of DGD-LB in
Balseiro, Mirrokni, Wydrowski, arXiv:2504.10693).


:class:`FluidModel` holds what the integrator and the fluid twins read
(:class:`~lbsim.routers.fluid_base.FluidContext`); rate and antagonist
schedules enter the integrator as exact step averages (:func:`schedule_average`).

Initial condition: ``x0 = None`` is the simulator's: empty backends, nothing
in transit, and ``x(t < 0) = 0``. A given ``x0`` (an array, or
``"optimum"``) is a constant history: the system is taken to have been at
``x0`` with the router's initial split for ``t < 0``, so requests sent before
0 are in transit at 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property, partial
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import ScenarioError
from ..rates import RateFamily

__all__ = ["FluidModel", "RateVector", "changing_steps", "schedule_average"]


class RateVector:
    """``mu_j`` of all backends as one vectorised function of the last axis (backends).

    Backends are grouped by family and each family's own ``_value`` /
    ``_derivative`` is called once per group with its parameters as arrays
    (the families' formulas are elementwise numpy), so there is no Python loop
    over backends. A family whose formula does not vectorise this way (a
    user-registered one, say) is detected at construction and evaluated
    backend by backend instead.
    """

    def __init__(self, rates: Sequence[RateFamily]):
        self.rates = list(rates)
        self.num_backends = len(self.rates)
        by_family: dict[type[RateFamily], list[int]] = {}
        for j, r in enumerate(self.rates):
            by_family.setdefault(type(r), []).append(j)
        self._groups = []
        for cls, members in by_family.items():
            idx = np.array(members)
            params = SimpleNamespace(
                **{name: np.array([getattr(self.rates[j], name) for j in members], float) for name in cls.model_fields}
            )
            vectorised = _vectorises(cls, params, [self.rates[j] for j in members])
            self._groups.append((cls, idx, params, vectorised))
        whole = len(self._groups) == 1 and np.array_equal(self._groups[0][1], np.arange(self.num_backends))
        if whole and self._groups[0][3]:  # one family, formulas vectorise: call it directly
            cls, _, params, _ = self._groups[0]
            # the family's formulas read their parameters by name: a namespace of arrays stands in for one member
            self.value = partial(cls._value, params)  # type: ignore[method-assign, arg-type]
            self.derivative = partial(cls._derivative, params)  # type: ignore[method-assign, arg-type]
        # Per group: its backends and the bound formulas (or None: member by member).
        self._methods = {
            method: [
                (idx, partial(getattr(cls, method), params) if vectorised else None)
                for cls, idx, params, vectorised in self._groups
            ]
            for method in ("_value", "_derivative")
        }

    def _call(self, method: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        out = np.empty_like(x)
        for idx, formula in self._methods[method]:
            xs = x[..., idx]
            if formula is not None:
                out[..., idx] = formula(xs)
            else:
                for k, j in enumerate(idx):
                    out[..., j] = getattr(self.rates[j], method)(xs[..., k])
        return out

    def value(self, x: np.ndarray) -> np.ndarray:
        """``mu_j(x[..., j])``."""
        return self._call("_value", x)

    def derivative(self, x: np.ndarray) -> np.ndarray:
        """``mu_j'(x[..., j])``."""
        return self._call("_derivative", x)

    @cached_property
    def supremum(self) -> np.ndarray:
        return np.array([r.supremum for r in self.rates], dtype=float)


def _vectorises(cls: type[RateFamily], params: SimpleNamespace, members: list[RateFamily]) -> bool:
    """Whether ``cls``'s formulas give, on parameter arrays, what each member gives alone."""
    probe = np.array([0.0, 1e-3, 0.3, 1.0, 2.5, 10.0, 1e3])
    x = np.repeat(probe[:, None], len(members), axis=1)
    try:
        with np.errstate(all="ignore"):
            for method in ("_value", "_derivative"):
                got = getattr(cls, method)(params, x)
                if np.shape(got) != x.shape:
                    return False
                want = np.stack([getattr(r, method)(probe) for r in members], axis=1)
                if not np.allclose(got, want, rtol=1e-12, atol=0.0, equal_nan=True):
                    return False
    except Exception:
        return False
    return True


class FluidModel:
    """Everything the integrator and the routers read: arrays of the scenario, validated once."""

    def __init__(self, scenario: Any, band: float, x0: Any):
        self.scenario = scenario
        self.num_frontends, self.num_backends = scenario.num_frontends, scenario.num_backends
        self.demand = scenario.demand
        self.connect = scenario.connect
        #: the connect mask, or None when every frontend may use every backend (no masking needed)
        self.allowed = None if self.connect.all() else self.connect
        self.delay = scenario.delay
        self.round_trip = 2.0 * self.delay
        self.rates = RateVector(scenario.rate_functions("the fluid model"))
        self.band = band
        net = scenario.network
        jitter = net.jitter_distribution
        #: transit delay of a request: d_ij plus the mean jitter (the fluid sees delays through their mean)
        self.transit = self.delay + (jitter[1] if jitter is not None else 0.0)
        self.telemetry = net.telemetry
        self.period = net.period
        self.observation = np.zeros_like(self.delay) if net.telemetry == "instant" else self.delay
        limits = scenario.load_limits.tolist()  # max_load; an llm engine's G * B requests
        self.max_load = np.array(limits) if any(math.isfinite(v) for v in limits) else None
        self.x0 = self._initial_state(x0)
        self.prehistory = x0 is not None
        self.reference_load = self._reference_load()

    def _initial_state(self, x0) -> np.ndarray:
        B = self.num_backends
        if x0 is None:
            return np.zeros(B)
        if isinstance(x0, str):
            if x0 != "optimum":
                raise ScenarioError("x0", f"must be loads (one per backend), a number or 'optimum', got {x0!r}")
            from ..optimum import optimum

            return np.array(optimum(self.scenario).load, dtype=float)
        x = np.broadcast_to(np.asarray(x0, dtype=float), (B,)).copy() if np.ndim(x0) == 0 else np.asarray(x0, float)
        if x.shape != (B,) or not np.all(np.isfinite(x)) or (x < 0).any():
            raise ScenarioError("x0", f"must be {B} finite loads >= 0, got {x0!r}")
        return x

    def _reference_load(self) -> np.ndarray:
        """Each backend's load under a capacity-proportional split (capped at 95% of capacity)."""
        cap = self.rates.supremum
        weights = np.where(self.connect, np.where(np.isfinite(cap), cap, 1.0), 0.0)
        flow = (self.demand[:, None] * weights / weights.sum(axis=1, keepdims=True)).sum(axis=0)
        flow = np.minimum(flow, 0.95 * cap)
        load = np.array([float(r.inverse(f)) for r, f in zip(self.rates.rates, flow)])
        return np.where(np.isfinite(load), load, 0.0)

    @cached_property
    def cost_at_zero(self) -> np.ndarray:
        """``1/mu_j'(0)``: the limit of ``x/mu_j(x)`` at 0 (0 where ``mu_j'(0)`` is infinite)."""
        return 1.0 / self.rates.derivative(np.zeros(self.num_backends))

    def rate_scale(self) -> float:
        """The fastest backend's relaxation rate (1/s): ``mu_j'(0)``, or twice a secant where that is infinite."""
        zero = self.rates.derivative(np.zeros(self.num_backends))
        x = np.maximum(self.reference_load, 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = 2.0 * self.rates.value(x) / x
        scale = np.where(np.isfinite(zero), zero, np.where(self.reference_load > 0, secant, 0.0))
        scale = scale[np.isfinite(scale)]
        return float(scale.max()) if len(scale) else 0.0

    def departure(self, x: np.ndarray, multiplier: np.ndarray | None) -> np.ndarray:
        """``m_j mu_j(min(x_j, L_j))``: the service rate of each backend."""
        rate = self.rates.value(x if self.max_load is None else np.minimum(x, self.max_load))
        return rate if multiplier is None else multiplier * rate


def schedule_average(steps: Sequence[tuple[float, float]], initial: float, dt: float, n_steps: int, step_idx):
    """Step averages ``(1/dt) int_{t_n}^{t_{n+1}} m(s) ds`` of a piecewise-constant ``m`` at the steps ``step_idx``."""
    starts = np.array([0.0] + [t for t, _ in steps if t > 0.0])
    values = np.array([initial] + [m for t, m in steps if t > 0.0])
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(starts) * values[:-1])])

    def integral(t):
        k = np.searchsorted(starts, t, side="right") - 1
        return cumulative[k] + (t - starts[k]) * values[k]

    n = np.asarray(step_idx, dtype=float)
    return (integral((n + 1) * dt) - integral(n * dt)) / dt


def changing_steps(times: Sequence[float], dt: float, n_steps: int) -> np.ndarray:
    """The steps whose average a breakpoint at one of ``times`` changes: its own step and the next."""
    steps: set[int] = set()
    for t in times:
        if t <= 0.0:
            continue
        u = t / dt
        k = math.floor(u + 1e-9)
        steps.update((k - 1, k) if abs(u - round(u)) <= 1e-9 else (k, k + 1))
    return np.array(sorted(s for s in steps if 0 <= s < n_steps), dtype=np.int64)
