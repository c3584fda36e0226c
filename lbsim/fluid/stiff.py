"""The undelayed loop of an argmin router: a stiff ODE, integrated by scipy's LSODA.

When no usable edge has a delay (no transit time, no observation lag), the
fluid model of an argmin router (:class:`~lbsim.routers.fluid_base.TieRouter`)
is an ordinary differential equation::

    dx_j/dt = s(t) sum_i lambda_i p_ij(x) - m_j(t) mu_j(min(x_j, L_j)),   p_i(x) = tie_split(c_i(x))

with ``s(t)`` the rate schedule and ``m_j(t)`` the antagonists' multipliers,
both piecewise constant. The band-regularised split reacts to its own effect
at a rate ``R ~ Lambda |dc/dx| / eps`` (``1/eps``: thousands per second at the
default band) while the loads move at the backends' relaxation rates (about
one per second): the equation is stiff, and an explicit method needs
``R dt <= 1`` (1.8 million Heun steps for 200 s of a 2 x 3 scenario).

**Why LSODA.** The right-hand side is Lipschitz and piecewise smooth (sparsemax
is piecewise linear, Martins and Astudillo, ICML 2016): a variable-order,
variable-step BDF method (Hindmarsh, ODEPACK, 1983; Petzold's automatic
stiffness switch, SIAM J. Sci. Stat. Comput. 4, 1983) takes steps set by the
accuracy of the slow motion once the fast split has reached its sliding
manifold, and switches to Adams steps while the dynamics are not stiff (the
start-up transient, an overloaded backend's linear growth). Its Jacobian is
formed by differences of the right-hand side (B evaluations), which at the
sizes argmin routers are run at costs less than the steps it saves. The
piecewise-constant schedules are integrated piece by piece (the solver
restarts at every breakpoint, so no step straddles a jump). The tolerances
(:data:`RTOL`, :data:`ATOL` relative to the reference load) put the
trajectory of the 2 x 3 scenario of ``tests/test_fluid.py`` within 2e-10 of
Heun's method's limit ``dt -> 0`` (Heun's method at its default step: 7e-9),
in about a thousand steps for 200 s of model time where Heun's method takes
1.5 million (the test compares both).

The cumulative work served, ``int_0^t m_j mu_j(x_j) ds``, is integrated
along the solution rather than as extra components of the state (which
would change the solver's steps and the loads' rounding): on each step, by
three-point Gauss-Legendre quadrature (order 6) of the service rate on the
step's interpolant (``dense_output``), as accurate as the interpolant within
the tolerances above; samples and the warm-up inside a step get the
quadrature over their part of it.

Loads stay non-negative as in Heun's method: the rates are evaluated at
``max(x, 0)``, and an empty backend serves at most what arrives (this
matters only for rates with ``mu(0+) > 0``, the ``constant`` family).

Which loops this applies to is decided in :func:`undelayed`: every usable
edge has zero transit and zero observation lag, and the telemetry is not
periodic.

**Short delays** (:func:`short_delays`). A loop delay ``T_ij = transit_ij +
observation_ij`` with ``R T`` above ``pi/2`` (the stability limit of
``y' = -R y(t - T)``) makes the regularised argmin herd: the split swings
between whole backends and the loads circle the sliding manifold in a cycle
of period about ``2 T`` whose swing is the work sent in one loop delay,
about ``Lambda T``. Resolving that cycle takes steps shorter than ``T``
(Heun's default is ``d/2``: 400 000 steps for 200 s at ``d`` = 1 ms), and
Heun's method at that step does not follow the cycle's phase either: its
pointwise error is itself a fraction of ``Lambda T``. When every used loop
is in that regime (``R T_ij >=`` :data:`HERDING`) and short against the
backends' relaxation (``r T_ij <=`` :data:`SHORT`, ``r`` the fastest
relaxation rate, so ``Lambda T`` is at most 1% of the loads ``~ Lambda/r``),
this module integrates the undelayed equation instead: the centre of the
cycle, shifted by at most the start-up's ``Lambda d`` (nothing arrives
before ``d``). Error bound, measured in ``tests/test_fluid.py`` on the 2 x
3 GMSR case against Heun's method at an eighth of its default step for
``d`` from 0.3 to 1 ms: ``max_t |x(t) - x_delayed(t)| <= Lambda T_max``
(measured: 0.5 to 0.8 of it), and below Heun's default-step error (0.7 to
0.8 of it). Loops outside the regime keep Heun's method: below
:data:`HERDING` the delayed loop is smooth and Heun's method is accurate to
``O(dt^2)``, better than this ``O(T)``; above :data:`SHORT` its default
step is no longer tied to the delay (``0.1/r`` binds), and ``Lambda T`` is
no longer small against the loads.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import numpy as np

from ..routers.fluid_base import FluidRouter, TieRouter
from .model import FluidModel

__all__ = ["ATOL", "HERDING", "RTOL", "SHORT", "StiffIntegrator", "loop_delays", "short_delays", "undelayed"]

#: relative tolerance of the stiff solver
RTOL = 1e-11
#: absolute tolerance of the stiff solver, relative to the largest reference load (or 1)
ATOL = 1e-12
#: ``R T`` from which a loop herds well beyond its stability limit ``pi/2`` (module docstring)
HERDING = 4.0
#: ``r T`` up to which a loop delay is short against the backends' relaxation (module docstring)
SHORT = 0.01
#: Gauss-Legendre nodes on [0, 1] and weights (3 points: exact for polynomials of degree 5)
_GAUSS_NODES = 0.5 + 0.5 * np.sqrt(0.6) * np.array([-1.0, 0.0, 1.0])
_GAUSS_WEIGHTS = np.array([5.0, 8.0, 5.0]) / 18.0


def undelayed(model: FluidModel, router: FluidRouter) -> bool:
    """Whether the fluid model is this module's undelayed stiff ODE: an argmin router, no delay on any used edge."""
    if not isinstance(router, TieRouter) or router.eps <= 0.0 or model.telemetry == "periodic":
        return False  # band 0 is the raw argmin: discontinuous, usable only with delays
    used = model.connect
    return bool((model.transit[used] == 0.0).all() and (model.observation[used] == 0.0).all())


def loop_delays(model: FluidModel) -> np.ndarray:
    """``T_ij = transit_ij + observation_ij`` on the used edges: from observing backend ``j`` to its arrivals."""
    return (model.transit + model.observation)[model.connect]


def short_delays(model: FluidModel, router: FluidRouter) -> bool:
    """Whether every used loop herds and is short (module docstring): LSODA on the undelayed equation.

    False for a loop with no delay anywhere (that is :func:`undelayed`'s case).
    """
    if not isinstance(router, TieRouter) or router.eps <= 0.0 or model.telemetry == "periodic":
        return False
    loops = loop_delays(model)
    positive = loops[loops > 0.0]
    if not len(positive):
        return False
    stiffness, relaxation = router.stiffness(), model.rate_scale()
    return bool(stiffness * positive.min() >= HERDING and relaxation * positive.max() <= SHORT)


class StiffIntegrator:
    """LSODA on the undelayed ODE (module docstring); the same outputs as :class:`~lbsim.fluid.integrator.Integrator`.

    With short delays (:func:`short_delays`) the delays are left out.

    ``progress`` (optional) is called with the model time reached, as the
    integration goes on.
    """

    def __init__(
        self,
        model: FluidModel,
        router: FluidRouter,
        horizon: float,
        record_split: bool,
        progress: Callable[[float], None] | None = None,
    ):
        self.model, self.router, self.horizon = model, router, horizon
        self.progress = progress
        F, B = model.num_frontends, model.num_backends
        sim = model.scenario.simulation
        self.sample_t = np.arange(0.0, horizon, sim.sample_interval)
        self.sample_t = self.sample_t[self.sample_t < horizon]
        self.sample_load = np.empty((len(self.sample_t), B))
        self.sample_split = np.empty((len(self.sample_t), F, B)) if record_split else None
        self.sample_served = np.empty((len(self.sample_t), B))
        self.warmup = sim.warmup
        self.served_warmup = np.zeros(B) if sim.warmup == 0.0 else np.full(B, np.nan)
        self.n_steps = 0  # the solver's steps, summed over the pieces
        self.n_evaluations = 0

    def _pieces(self) -> list[tuple[float, float, float, np.ndarray | None]]:
        """``(start, end, s, m)``: the intervals on which the rate schedule and the antagonists are constant."""
        scenario = self.model.scenario
        schedule = scenario.simulation.rate_schedule or []
        antagonists = [(j, spec.antagonist) for j, spec in enumerate(scenario.backends) if spec.antagonist is not None]
        for j, ant in antagonists:
            if ant.schedule is None:
                warnings.warn(
                    f"backends[{j}].antagonist: random levels have no deterministic fluid model; "
                    "using their time average (the mean level)",
                    stacklevel=5,
                )
        cuts = {0.0, self.horizon}
        cuts.update(t for t, _ in schedule if 0.0 < t < self.horizon)
        for _, ant in antagonists:
            if ant.schedule is not None:
                cuts.update(t for t, _ in ant.schedule if 0.0 < t < self.horizon)
        times = sorted(cuts)
        pieces = []
        for start, end in itertools.pairwise(times):
            scale = _level(schedule, start)
            multiplier = None
            if antagonists:
                multiplier = np.ones(self.model.num_backends)
                for j, ant in antagonists:
                    # random levels: their time average, as Heun's method (which warns about it) uses
                    random = ant.schedule is None
                    multiplier[j] = float(np.mean(ant.levels)) if random else _level(ant.schedule, start)
            pieces.append((start, end, scale, multiplier))
        return pieces

    def run(self) -> None:
        from scipy.integrate import LSODA

        model, router = self.model, self.router
        lam, shape = model.demand, model.connect.shape
        signal, split, departure = router.signal, router.split, model.departure
        atol = ATOL * max(1.0, float(np.max(model.reference_load, initial=0.0)))
        x = model.x0.copy()
        next_sample, n_samples = 0, len(self.sample_t)
        served = np.zeros(model.num_backends)
        for start, end, scale, multiplier in self._pieces():
            flow = scale * lam

            def rates(t: float, y: np.ndarray, flow=flow, multiplier=multiplier) -> tuple[np.ndarray, np.ndarray]:
                """The arrival and service rates (B,) at state ``y``."""
                load = np.maximum(y, 0.0)
                arrivals = flow @ split(t, np.broadcast_to(signal(load), shape))
                served = departure(load, multiplier)
                # an empty backend serves no more than arrives (rates with mu(0+) > 0)
                served = np.where(y <= 0.0, np.minimum(served, arrivals), served)
                return arrivals, served

            def rhs(t: float, y: np.ndarray, rates=rates) -> np.ndarray:
                arrivals, served = rates(t, y)
                return arrivals - served

            def served_in(a: float, b: float, dense, rates=rates) -> np.ndarray:
                """``int_a^b`` of the service rate along the step's interpolant (Gauss-Legendre)."""
                total = np.zeros(model.num_backends)
                for node, weight in zip(_GAUSS_NODES, _GAUSS_WEIGHTS):
                    t = a + node * (b - a)
                    total += weight * rates(t, dense(t))[1]
                return (b - a) * total

            solver = LSODA(rhs, start, x, end, rtol=RTOL, atol=atol)
            while solver.status == "running":
                t_before = solver.t
                message = solver.step()
                if solver.status == "failed":
                    raise RuntimeError(f"the stiff fluid solver failed at t = {t_before:g}: {message}")
                self.n_steps += 1
                dense = solver.dense_output()
                if t_before < self.warmup <= solver.t:
                    self.served_warmup = served + served_in(t_before, self.warmup, dense)
                # samples in (t_before, t], and t = 0 itself, from the step's interpolant
                stop = next_sample
                while stop < n_samples and self.sample_t[stop] <= solver.t and self.sample_t[stop] < end:
                    stop += 1
                if stop > next_sample:
                    times = self.sample_t[next_sample:stop]
                    for row, t in zip(range(next_sample, stop), times):
                        load = np.maximum(dense(t) if t > t_before else solver.y if t == solver.t else x, 0.0)
                        self.sample_load[row] = load
                        self.sample_served[row] = served + served_in(t_before, t, dense) if t > t_before else served
                        if self.sample_split is not None:
                            self.sample_split[row] = split(t, np.broadcast_to(signal(load), shape))
                    next_sample = stop
                served = served + served_in(t_before, solver.t, dense)
                if self.progress is not None:
                    self.progress(solver.t)
            self.n_evaluations += solver.nfev
            x = np.maximum(solver.y, 0.0)
        self.x = x
        self.served = served
        self.p = split(self.horizon, np.broadcast_to(signal(x), shape))


def _level(schedule, t: float) -> float:
    """The value of a piecewise-constant schedule ``[[time, value], ...]`` at ``t`` (1 before its first time)."""
    level = 1.0
    for when, value in schedule or []:
        if when <= t:
            level = value
    return float(level)
