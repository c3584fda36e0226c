"""The integrator of the fluid model: Heun's method on a fixed grid, delays from history rings.

**Integration.** A fixed step ``dt`` on a grid ``t_n = n dt``, method of
steps with the delayed terms read from history ring buffers:

* arrivals are integrated *exactly* for splits that are constant on each
  step (static, ``dgdlb``, which updates on the grid): the flow history is
  kept as step averages ``F_n`` and the work arriving at ``j`` during step
  ``n`` is ``dt * sum_i [phi F_{n-m-1} + (1-phi) F_{n-m}]_ij`` for
  ``d_ij = (m + phi) dt``. It is kept as a running rate updated by pushing
  each change of ``F`` into a window of future increments (one sparse
  matrix-vector product per change, nothing per step). For continuous
  splits (argmin routers) ``F_n`` is the trapezoid average of the split at
  ``t_n`` and ``t_{n+1}``;
* service is Heun's method (explicit trapezoid, RK2): predictor
  ``x~ = x_n + A_n - dt mu(x_n)``, corrector with ``(mu(x_n) + mu(x~))/2``;
  each clamped at 0 (a backend that empties within a step serves only the
  work it had: served work is ``min(dt * rate, x_n + arrivals)``); the work
  served in the step, ``x_n + arrivals - x_{n+1}``, is summed into the
  cumulative ``served`` (so work is conserved to rounding);
* observations ``h_j(x_j(t - d_ij))`` (``h`` the router's signal: the load,
  or a marginal cost) interpolate the signal of the stored states linearly
  (when ``d_ij < dt`` the predicted state at ``t_{n+1}`` is used, as in
  continuous Runge-Kutta methods for delay equations; Bellen and Zennaro,
  *Numerical Methods for Delay Differential Equations*, 2003, ch. 4);
* rate schedules and antagonist schedules enter as exact step averages.

The method is second order for smooth dynamics (``tests/test_fluid.py``
measures it against a ``dt/8`` reference). At a kink inside a step (an
arrival rate that jumps at ``t + d_ij``, ``servers`` or ``max_load`` knees,
the support of a split changing) the local error is ``O(dt^2)`` instead of
``O(dt^3)``: isolated kinks keep the global order 2, with a constant that
depends on where they fall in their steps. Jumps of the rate at 0
(``constant`` rates) are first order.


The default ``dt`` (:func:`lbsim.fluid.default_time_step`, :func:`time_step`) is the smallest of: ``0.1 / r``
with ``r`` the fastest backend's relaxation rate (``mu_j'(0)``, or a secant
where that is infinite); ``sample_interval / 10``; ``horizon / 100``; and, for
the continuous (argmin) routers, half the smallest positive observation delay
(the loop delay ``2 d`` spans 4 steps: the herding oscillations live on that
scale) or, if some loop has no delay, ``1/R`` (above). Static splits and DGD-LB
need no delay resolution: their arrivals are integrated exactly and their
observations interpolated at any ``dt``. Last, ``dt`` is shortened so that a
router's ``interval`` is a whole number of steps.

"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ScenarioError
from ..routers.fluid_base import FluidRouter
from .model import FluidModel, changing_steps, schedule_average

__all__ = ["Integrator", "time_step"]


@dataclass
class _Lags:
    """Fixed lags ``(m + phi) * dt`` (F, B): integer steps and the fraction for linear interpolation."""

    whole: np.ndarray  # m, int
    fraction: np.ndarray  # phi in [0, 1)

    @classmethod
    def of(cls, lag: np.ndarray, dt: float) -> _Lags:
        u = np.asarray(lag, dtype=float) / dt
        near = np.round(u)
        u = np.where(np.abs(u - near) <= 1e-9 * np.maximum(1.0, u), near, u)  # on the grid: no interpolation
        m = np.floor(u)
        return cls(m.astype(np.int64), u - m)

    @property
    def steps(self) -> int:
        return int(self.whole.max()) if self.whole.size else 0


class Integrator:
    """Heun's method with exact arrival integrals and history rings (module docstring)."""

    def __init__(
        self,
        model: FluidModel,
        router: FluidRouter,
        dt: float,
        horizon: float,
        record_split: bool,
        progress: Callable[[float], None] | None = None,
    ):
        self.model, self.router, self.dt = model, router, dt
        self.progress = progress
        F, B = model.num_frontends, model.num_backends
        self.n_steps = n_steps = max(1, math.ceil(horizon / dt - 1e-9))
        # A lag beyond the horizon only ever reads the history before 0 (or lands after the end): capping
        # it there keeps memory and work tied to the horizon, whatever the delays.
        beyond = (n_steps + 2) * dt
        sim = model.scenario.simulation

        # Samples at k * sample_interval < horizon, as the simulator takes them.
        self.sample_t = np.arange(0.0, horizon, sim.sample_interval)
        self.sample_t = self.sample_t[self.sample_t < horizon]
        u = self.sample_t / dt
        self._sample_step = np.floor(u + 1e-9).astype(np.int64)
        self._sample_frac = np.where(np.abs(u - np.round(u)) <= 1e-9, 0.0, u - self._sample_step)
        self.sample_load = np.empty((len(self.sample_t), B))
        self.sample_split = np.empty((len(self.sample_t), F, B)) if record_split else None
        # Cumulative work served since 0, at the samples, at the warm-up (nan: none before the end) and the end.
        self.sample_served = np.empty((len(self.sample_t), B))
        self.served_warmup = np.full(B, np.nan)
        u = sim.warmup / dt
        self._warmup_step = math.floor(u + 1e-9) if sim.warmup < n_steps * dt else -1
        self._warmup_frac = 0.0 if abs(u - round(u)) <= 1e-9 else u - self._warmup_step

        # Observations: x_j at t - lag_ij, from a doubled ring (rows s and s + L hold x at the same step,
        # so the rows k, k-1, ..., k-L+1 are a contiguous range and an index is a constant plus a base).
        self.periodic = model.telemetry == "periodic"
        if router.observes:
            span = min(model.observation.max() + (model.period if self.periodic else 0.0), beyond)
            self.obs = _Lags.of(np.minimum(model.observation, beyond), dt)
            self.ring_len = math.ceil(span / dt) + 3
            cols = np.arange(B)[None, :]
            self._obs_a = cols - self.obs.whole * B
            self._obs_b = self._obs_a - B
            self._obs_interp = bool((self.obs.fraction > 0).any())
            # The indices for each ring position, precomputed when that is not too much memory.
            if self.ring_len * F * B <= 4_000_000 and not self.periodic:
                offsets = (np.arange(self.ring_len) + self.ring_len) * B
                self._obs_a_at: list[np.ndarray] | None = [self._obs_a + o for o in offsets]
                self._obs_b_at: list[np.ndarray] | None = (
                    [self._obs_b + o for o in offsets] if self._obs_interp else None
                )
            else:
                self._obs_a_at = None
        else:
            self.ring_len = 1
        # The ring holds the router's signal h(x) of each stored state (what frontends observe).
        self.ring = np.empty((2 * self.ring_len, B))
        self.ring[:] = router.signal(model.x0) if router.observes else model.x0
        self._signal = router.signal if router.observes else None

        # Arrivals: a running rate (B,) plus increments scheduled for future steps. A change of the
        # sent flow at step k adds (1 - phi) of it at step k + m and phi at k + m + 1 (d = (m + phi) dt):
        # one sparse (or, when small, dense) matrix maps a flow change (F*B,) to its increments.
        import scipy.sparse

        self.transit = _Lags.of(np.minimum(model.transit, beyond), dt)
        # Changes on an edge whose transit is the whole horizon or more land after the end: left out,
        # so the window is as deep as the longest transit that matters.
        lands = self.transit.whole < n_steps
        depth = int(self.transit.whole[lands].max(initial=0)) + 2
        rows = (self.transit.whole * B + np.arange(B)[None, :]).reshape(-1)
        cols = np.arange(F * B)
        frac = self.transit.fraction.reshape(-1)
        data = np.concatenate([1.0 - frac, frac])
        keep = (data > 0) & np.tile(lands.reshape(-1), 2)
        matrix = scipy.sparse.csr_matrix(
            (data[keep], (np.concatenate([rows, rows + B])[keep], np.concatenate([cols, cols])[keep])),
            shape=(depth * B, F * B),
        )
        self._spread = matrix.toarray() if depth * B * F * B <= 250_000 else matrix
        self._depth = depth
        # Increments live in a window of rows (step - base); it slides when it runs out, so every push
        # adds to one contiguous block instead of wrapping around a ring.
        self._window = np.zeros((4 * depth + 8, B))
        self._base = 0

        # Time-varying multipliers as step averages, only at the steps where they change.
        schedule = sim.rate_schedule or []
        initial = schedule[0][1] if schedule and schedule[0][0] == 0.0 else 1.0
        self.lam_initial = initial
        steps = changing_steps([t for t, _ in schedule], dt, n_steps)
        values = schedule_average(schedule, initial, dt, n_steps, steps) if len(steps) else []
        self.lam_events = {int(s): float(v) for s, v in zip(steps, values)}
        self.capacity_events, self.multiplier = self._antagonists(n_steps)

    def _antagonists(self, n_steps: int):
        events: dict[int, list[tuple[int, float]]] = {}
        multiplier = None
        for j, spec in enumerate(self.model.scenario.backends):
            ant = spec.antagonist
            if ant is None:
                continue
            if multiplier is None:
                multiplier = np.ones(self.model.num_backends)
            if ant.schedule is None:
                warnings.warn(
                    f"backends[{j}].antagonist: random levels have no deterministic fluid model; "
                    "using their time average (the mean level)",
                    stacklevel=4,
                )
                multiplier[j] = float(np.mean(ant.levels))
                continue
            initial = ant.schedule[0][1] if ant.schedule[0][0] == 0.0 else 1.0
            multiplier[j] = initial
            steps = changing_steps([t for t, _ in ant.schedule], self.dt, n_steps)
            for s, v in zip(steps, schedule_average(ant.schedule, initial, self.dt, n_steps, steps)):
                events.setdefault(int(s), []).append((j, float(v)))
        folded = {s: (np.array([j for j, _ in ch]), np.array([v for _, v in ch])) for s, ch in events.items()}
        return folded, multiplier

    # -- histories -------------------------------------------------------------------------
    def _store(self, k: int, x: np.ndarray) -> None:
        if self._signal is None:
            return
        h = self._signal(x)
        s = k % self.ring_len
        self.ring[s] = h
        self.ring[s + self.ring_len] = h

    def observe(self, k: int) -> np.ndarray:
        """The observed signal at ``t_k``: ``h_j(x_j)`` at ``t_k - lag_ij``, linearly interpolated (F, B)."""
        flat = self.ring.reshape(-1)
        if self.periodic:
            return self._observe_periodic(k, flat)
        if self._obs_a_at is not None:
            slot = k % self.ring_len
            xa = flat.take(self._obs_a_at[slot])
            if not self._obs_interp:
                return xa
            assert self._obs_b_at is not None  # set whenever observations interpolate
            xb = flat.take(self._obs_b_at[slot])
        else:
            base = (k % self.ring_len + self.ring_len) * self.model.num_backends
            xa = flat.take(self._obs_a + base)
            if not self._obs_interp:
                return xa
            xb = flat.take(self._obs_b + base)
        xb -= xa
        xb *= self.obs.fraction
        xb += xa
        return xb

    def _observe_periodic(self, k: int, flat: np.ndarray) -> np.ndarray:
        """The last report: sent at the largest ``q P <= t - d_ij`` (before 0: the initial history)."""
        dt, P, B = self.dt, self.model.period, self.model.num_backends
        t = k * dt
        sent = np.floor((t - self.model.observation) / P + 1e-9) * P
        lags = _Lags.of(np.minimum(t - sent, (self.ring_len - 2) * dt), dt)
        base = (k % self.ring_len + self.ring_len) * B
        idx = np.arange(B)[None, :] - lags.whole * B + base
        xa = flat.take(idx)
        return xa + lags.fraction * (flat.take(idx - B) - xa)

    def push(self, delta: np.ndarray, k: int) -> None:
        """A change ``delta`` (F, B) of the sent flow from step ``k`` on: schedule its arrival increments."""
        start = k - self._base
        self._window[start : start + self._depth] += (self._spread @ delta.reshape(-1)).reshape(self._depth, -1)

    def _slide(self, n: int) -> None:
        """Make row 0 of the window step ``n`` (rows before it have been consumed)."""
        shift = n - self._base
        kept = len(self._window) - shift
        self._window[:kept] = self._window[shift:]
        self._window[kept:] = 0.0
        self._base = n

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        model, router, dt = self.model, self.router, self.dt
        lam = model.demand
        x = model.x0.copy()
        self._store(0, x)
        p = router.initial_split()
        scale = self.lam_initial
        if model.prehistory:  # a constant history: the initial split has been in use before 0
            sent = (scale * lam)[:, None] * p
            rate = sent.sum(axis=0)
        else:
            sent = np.zeros_like(p)
            rate = np.zeros(model.num_backends)
        continuous, tick = router.continuous, router.tick_interval
        tick_every = round(tick / dt) if tick is not None else 0
        # When every observation lag is at least a step, the split at t_{n+1} reads only stored states,
        # so the one computed for the corrector is the next step's split: one evaluation per step.
        reuse = continuous and bool((self.obs.whole[model.connect] >= 1).all())
        p_next = None
        lam_events, capacity_events = self.lam_events, self.capacity_events
        multiplier = self.multiplier
        departure, push, observe, store = model.departure, self.push, self.observe, self._store
        window, room = self._window, len(self._window) - self._depth - 1
        sample_step, sample_frac = self._sample_step, self._sample_frac
        next_sample, n_samples = 0, len(sample_step)
        changed = True
        served = np.zeros(model.num_backends)
        warmup_step = self._warmup_step
        progress = self.progress
        report_every = max(1, self.n_steps // 1000) if progress is not None else self.n_steps + 1
        for n in range(self.n_steps):
            if n - self._base >= room:
                self._slide(n)
            if n % report_every == 0 and progress is not None:
                progress(n * dt)
            if n in lam_events:
                scale = lam_events[n]
                changed = True
            if n in capacity_events:
                idx, values = capacity_events[n]
                multiplier[idx] = values
            if continuous:
                p = p_next if p_next is not None else router.split(n * dt, observe(n))
                changed = True
            elif tick_every and n and n % tick_every == 0:
                p = router.tick(n * dt, observe(n), p)
                changed = True
            if changed:
                flow = (scale * lam)[:, None] * p
                push(flow - sent, n)
                sent = flow
                changed = False
            row = n - self._base
            arrivals = rate + window[row]
            mu_now = departure(x, multiplier)
            predictor = x + dt * (arrivals - mu_now)
            np.maximum(predictor, 0.0, out=predictor)
            if continuous:
                if not reuse:
                    store(n + 1, predictor)
                p_next = router.split((n + 1) * dt, observe(n + 1))
                flow = (0.5 * scale * lam)[:, None] * (p + p_next)
                push(flow - sent, n)
                sent = flow
                arrivals = rate + window[row]
                if not reuse:
                    p_next = None
            x_next = x + dt * (arrivals - 0.5 * (mu_now + departure(predictor, multiplier)))
            np.maximum(x_next, 0.0, out=x_next)
            store(n + 1, x_next)
            # what was served in the step: what there was, plus what arrived, minus what is left
            step_served = x + dt * arrivals - x_next
            if n == warmup_step:
                self.served_warmup = served + self._warmup_frac * step_served
            while next_sample < n_samples and sample_step[next_sample] == n:
                f = sample_frac[next_sample]
                self.sample_load[next_sample] = x if f == 0.0 else x + f * (x_next - x)
                self.sample_served[next_sample] = served + f * step_served
                if self.sample_split is not None:
                    self.sample_split[next_sample] = p
                next_sample += 1
            served += step_served
            rate = arrivals
            x = x_next
        self.served = served
        if continuous:  # the split at the final state, as the other routers' is
            p = router.split(self.n_steps * dt, observe(self.n_steps))
        self.x, self.p = x, p
        if progress is not None:
            progress(self.n_steps * dt)


def time_step(model: FluidModel, router: FluidRouter, horizon: float, dt: float | None) -> float:
    """The default step (module docstring), then shortened to put a router's ticks on the grid."""
    sample = model.scenario.simulation.sample_interval
    if dt is None:
        candidates = [sample / 10.0, horizon / 100.0]
        r = model.rate_scale()
        if r > 0:
            candidates.append(0.1 / r)
        if router.continuous:
            # The split follows the observed state continuously: resolve the loop delay 2d (4 steps), or,
            # where a loop has no delay, the split's own reaction rate (explicit methods need R dt < 2).
            lags = model.observation[model.connect]
            positive = lags[lags > 0]
            if len(positive):
                candidates.append(float(positive.min()) / 2.0)
            if len(positive) < len(lags) and (stiff := router.stiffness()) > 0:
                candidates.append(1.0 / stiff)
        dt = min(candidates)
    if not (dt > 0 and math.isfinite(dt)):
        raise ScenarioError("dt", f"must be finite and > 0, got {dt}")
    if router.tick_interval is not None:
        dt = router.tick_interval / math.ceil(router.tick_interval / dt * (1 - 1e-12))
    return float(dt)
