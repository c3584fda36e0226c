"""The fluid model (lbsim/fluid/): exact solutions, order of accuracy, the optimum, DGD-LB's stability limit.

Every tolerance is derived from the numerics or the theory it checks, and
says where it comes from: rounding (a few ulps times the number of steps),
the method's order, the regularisation band of the argmin routers (whose rest
point is known in closed form), or the linearisation of DGD-LB's loop.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
from helpers import backend, scenario

import lbsim
from lbsim.errors import ScenarioError
from lbsim.fluid import default_time_step, fluid
from lbsim.fluid.model import RateVector
from lbsim.rates import make_rate
from lbsim.routers import FLUID_ROUTERS
from lbsim.routers.dgdlb import critical_gain, dgdlb_critical_step, loop_root
from lbsim.routers.fluid_base import tie_split
from lbsim.simplex import project_rows, project_simplex, support_bound

EPS = np.finfo(float).eps

HETEROGENEOUS = [
    backend("saturating", c=4.0, k=2.0),
    backend("saturating", c=3.0, k=1.0),
    backend("exponential", c=2.5, k=1.5),
]
#: one-way delays (s), deliberately off any grid of steps used below
OFF_GRID = [[0.013, 0.051, 0.0337], [0.046, 0.007, 0.0291]]


def two_frontends(router: str = "dgdlb", horizon: float = 12.0, sample_interval: float = 0.4, **network):
    return scenario(
        HETEROGENEOUS,
        rates=(3.0, 2.5),
        horizon=horizon,
        sample_interval=sample_interval,
        router=router,
        network={"delay": OFF_GRID, **network},
    )


# -- building blocks ----------------------------------------------------------------------------
@pytest.mark.parametrize("width", [3, 12, 40, 300])
def test_projection_is_the_sort_based_one(width):
    """Newton (long rows) and sorting (short rows), masked or not, equal Duchi et al.'s projection to rounding."""
    rng = np.random.default_rng(width)
    v = rng.normal(size=(40, width)) * rng.choice([0.01, 1.0, 30.0], size=(40, 1))
    mask = rng.random(v.shape) < 0.7
    mask[:, 0] = True
    expected = project_simplex(v, mask)
    p, _ = project_rows(np.where(mask, v, -np.inf))
    # Both sum the same ~width terms: rounding of that many additions.
    assert np.abs(p - expected).max() <= 4 * width * EPS * max(1.0, np.abs(v).max())
    # A warm start from any support is a valid lower bound and changes nothing.
    support = mask & (rng.random(v.shape) < 0.5)
    support[:, 0] = True
    warm, _ = project_rows(np.where(mask, v, -np.inf), support_bound(np.where(mask, v, -np.inf), support))
    assert np.abs(warm - expected).max() <= 4 * width * EPS * max(1.0, np.abs(v).max())


def test_tie_split_shares_exact_ties_and_regularises_near_ones():
    cost = np.array([[1.0, 1.0, 2.0], [1.0, 1.0 + 1e-3, 3.0]])
    assert np.array_equal(tie_split(cost, None, 0.0), [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    p = tie_split(cost, None, 1e-2)
    # sparsemax: p_j = (nu - c_j)/eps on the support; a gap of 1e-3 = eps/10 shifts 0.05 of the flow.
    np.testing.assert_allclose(p[1], [0.55, 0.45, 0.0], rtol=0, atol=1e-12)
    allowed = np.array([[False, True, True], [True, True, True]])
    assert tie_split(cost, allowed, 0.0)[0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "specs",
    [
        [{"kind": "saturating", "c": 4.0, "k": 2.0}, {"kind": "saturating", "c": 1.5, "k": 0.3}],
        [
            {"kind": "constant", "c": 2.0},
            {"kind": "linear", "r": 0.7},
            {"kind": "servers", "r": 1.0, "k": 3.0},
            {"kind": "exponential", "c": 2.0, "k": 1.0},
            {"kind": "power", "c": 1.0, "a": 0.5},
            {"kind": "batch", "a": 0.02, "b": 0.001},
            {"kind": "saturating", "c": 3.0, "k": 1.0},
        ],
    ],
)
def test_rate_vector_is_each_family_on_its_own(specs):
    rates = [make_rate(s) for s in specs]
    vector = RateVector(rates)
    x = np.array([0.0, 1e-6, 0.5, 2.0, 3.0, 50.0])[:, None] * np.ones(len(rates))
    with np.errstate(all="ignore"):
        for method in ("value", "derivative"):
            want = np.stack([getattr(r, method)(x[:, j]) for j, r in enumerate(rates)], axis=1)
            np.testing.assert_array_equal(getattr(vector, method)(x), want)


# -- exact solutions -------------------------------------------------------------------------------
def linear_solution(t, rate, r, start, x_start=0.0):
    """x' = rate - r x from x(start) = x_start."""
    return rate / r + (x_start - rate / r) * np.exp(-r * (t - start))


def test_linear_backend_with_delay_schedule_and_antagonist_is_exact_to_second_order():
    """x' = lambda m(t - d) - a(t) r x: a request delay, a rate step and a capacity step, all off the step grid.

    The closed form is piecewise exponential. Error bound of the scheme (arrivals
    exact, service by Heun): on smooth stretches the local error is at most
    dt^3 r |x''| / 3 (trapezoid dt^3/12 plus the predictor's dt^2/2 error times
    r dt/2), and the system contracts at rate r, so the accumulated error stays
    below dt^2 r max|x'| / 3 = dt^2 * 2 * 6 / 3; an arrival jump of D inside a
    step (a kink of x) costs the trapezoid at most r D dt^2 / 8 once: two jumps
    of 3 at r = 2. The capacity step enters as an exact step average. So
    |error| <= 5.5 dt^2 at every dt, which is second order with a constant
    that may wobble with where the kinks fall in their steps (it does).
    """
    d, r, lam = 0.0123, 2.0, 3.0
    data = scenario(
        [backend("linear", r=r)],
        rates=(lam,),
        horizon=6.0,
        sample_interval=0.25,
        router="random",
        network={"delay": d},
        rate_schedule=[[0.0, 1.0], [2.3, 2.0]],
    ).to_dict()
    data["backends"][0]["antagonist"] = {"schedule": [[3.71, 0.5]]}
    sc = lbsim.Scenario.from_dict(data)
    t = np.arange(0.0, 6.0, 0.25)
    t1, t2 = 2.3 + d, 3.71
    x1 = linear_solution(t1, lam, r, d)
    x2 = linear_solution(t2, 2 * lam, r, t1, x1)
    exact = np.where(t <= t1, linear_solution(t, lam, r, d), linear_solution(t, 2 * lam, r, t1, x1))
    exact = np.where(t <= d, 0.0, exact)
    exact = np.where(t > t2, linear_solution(t, 2 * lam, 0.5 * r, t2, x2), exact)
    bound = r * (2 * lam) / 3 + 2 * r * lam / 8
    for k in range(4):
        dt = 0.02 / 2**k
        error = np.abs(fluid(sc, dt=dt).load[:, 0] - exact).max()
        assert error <= bound * dt**2, (dt, error / dt**2)


def test_nothing_arrives_before_the_shortest_delay():
    sc = two_frontends("weighted", horizon=0.2, sample_interval=0.001)
    res = fluid(sc, dt=0.0005)
    first = {j: res.t[np.flatnonzero(res.load[:, j] > 0)[0]] for j in range(3)}
    shortest = np.min(OFF_GRID, axis=0)
    for j in range(3):
        assert shortest[j] <= first[j] <= shortest[j] + 0.001 + 1e-12


def test_the_optimum_with_its_requests_in_transit_is_a_rest_point():
    """x0 = optimum with the optimal split in use before 0: nothing moves (up to the optimum's own precision)."""
    sc = two_frontends("weighted", horizon=30.0)
    opt = lbsim.optimum(sc)
    res = fluid(sc, x0="optimum", split="optimal")
    residual = np.abs([r.value(x) for r, x in zip(sc.service_rates, opt.load)] - opt.flow).max()
    # The drift mu(x*) - Lambda* relaxes at rate mu'(x*): the load moves by at most drift / mu'.
    slowest = min(float(r.derivative(x)) for r, x in zip(sc.service_rates, opt.load))
    assert np.abs(res.load - opt.load).max() <= residual / slowest + 1e3 * EPS * opt.load.max()


def test_max_load_caps_the_rate_and_a_static_split_reaches_its_steady_state():
    backends = [backend("linear", r=1.0, max_load=2.0), backend("saturating", c=3.0, k=1.0)]
    sc = scenario(backends, rates=(3.0,), horizon=60.0, router="random", network={"delay": 0.01})
    res = fluid(sc)
    # backend 0 gets 1.5 < mu(2) = 2: steady load 1.5; backend 1: mu^{-1}(1.5) = 1.
    np.testing.assert_allclose(res.final_load, [1.5, 1.0], rtol=1e-6)
    overloaded = fluid(scenario(backends, rates=(5.0,), horizon=60.0, router="random"))
    # 2.5 > mu(min(x, 2)) = 2: the load grows at 0.5/s once the cap binds.
    growth = np.diff(overloaded.load[-10:, 0])
    np.testing.assert_allclose(growth, 0.5, rtol=1e-6)


# -- order of accuracy --------------------------------------------------------------------------
def measured_order(errors: list[float], reference_ratio: int = 8) -> float:
    """The order p explaining errors at dt and dt/2, both measured against a dt/8 reference.

    With e(h) = C h^p, the measured errors are C (h^p - (h/8)^p) and
    C ((h/2)^p - (h/8)^p): their ratio is (1 - 8^-p) / (2^-p - 8^-p), which we invert.
    """
    ratio = errors[0] / errors[1]
    return scipy.optimize.brentq(
        lambda p: (1 - reference_ratio**-p) / (2**-p - reference_ratio**-p) - ratio, 0.2, 6.0
    )


@pytest.mark.parametrize("router, params", [("weighted", {}), ("dgdlb", {"interval": 0.2, "step": 0.5})])
def test_order_is_two_on_smooth_dynamics(router, params):
    """Heun's method with exact arrivals: halving dt divides the error by 4 (order 2).

    Smooth dynamics: a constant history (x0 given, the initial split in use
    before 0) removes the start-up kink; saturating and exponential rates;
    delays off the grid. DGD-LB's ticks fall on the grid (dt divides the
    interval) and move the arrival rates at t_tick + d_ij, inside steps: each
    such kink costs O(dt^2) locally, so the order stays 2 but the constant
    wobbles with where the kinks fall. An integer order is what is measured,
    so the estimate must round to 2 (|p - 2| < 0.5), on two successive halvings.
    """
    sc = two_frontends(router)
    x0 = lbsim.optimum(sc).load * np.array([1.6, 0.5, 1.2])
    h = 0.05
    for coarse in (h, h / 2):
        reference = fluid(sc, dt=coarse / 8, x0=x0, **params).load
        errors = [np.abs(fluid(sc, dt=coarse / 2**k, x0=x0, **params).load - reference).max() for k in range(2)]
        p = measured_order(errors)
        print(f"{router}: dt {coarse:g}, {coarse / 2:g}: errors {errors[0]:.3e} {errors[1]:.3e}, order {p:.2f}")
        assert abs(p - 2.0) < 0.5


def test_order_is_two_for_the_regularised_argmin_without_delay():
    """GMSR with a band is a Lipschitz ODE (sparsemax is piecewise linear): order 2 once dt resolves its reaction.

    The split reacts to its own effect at rate R (the default dt is 1/R, the
    stability limit); the asymptotic regime needs a few steps per 1/R, so the
    coarsest dt here is a quarter of the default. The largest error sits
    where the support of the split changes (kinks of the right-hand side).
    """
    sc = two_frontends("gmsr", horizon=4.0, sample_interval=0.25, delay=0.0)
    h = default_time_step(sc, band=0.05) / 4
    reference = fluid(sc, dt=h / 8, band=0.05).load
    errors = [np.abs(fluid(sc, dt=h / 2**k, band=0.05).load - reference).max() for k in range(2)]
    p = measured_order(errors)
    print(f"gmsr band 0.05: dt {h:.2e}: errors {errors[0]:.3e} {errors[1]:.3e}, order {p:.2f}")
    assert abs(p - 2.0) < 0.5


# -- against the optimum ------------------------------------------------------------------------
def regularised_rest_point(rates, demand: float, eps: float, cap: float = 1e4) -> np.ndarray:
    """Rest loads of band-regularised GMSR (one frontend, no delay), from its optimality conditions.

    sparsemax gives p_j = (nu - c_j)/eps on the support, and at rest
    lambda p_j = mu_j(x_j), so c_j(x_j) + eps mu_j(x_j)/lambda = nu on used
    backends (c_j = min(1/mu_j', cap)): the KKT conditions of the optimum with
    the extra cost (eps / 2 lambda) sum_j Lambda_j^2. Solved by bisection.
    """

    def cost(r, x):
        return min(1.0 / float(r.derivative(x)), cap) + eps * float(r.value(x)) / demand

    def load(r, nu):
        if cost(r, 0.0) >= nu:
            return 0.0
        top = float(r.inverse(0.999999 * r.supremum))
        return scipy.optimize.brentq(lambda x: cost(r, x) - nu, 0.0, top, xtol=1e-15)

    def excess(nu):
        return sum(float(r.value(load(r, nu))) for r in rates) - demand

    nu = scipy.optimize.brentq(excess, 0.0, 1e3, xtol=1e-15)
    return np.array([load(r, nu) for r in rates])


def test_gmsr_without_delay_converges_to_the_optimum_as_the_band_shrinks():
    """Regularised GMSR settles exactly where its optimality conditions say, and that point tends to the optimum.

    The rest point's distance to the optimum is linear in the band (the
    regulariser's weight); at band 0.02 it is below 1e-3 (relative), and the
    fluid's final state is at the computed rest point up to its exponential
    convergence (rate ~ mu'(x*) over 40 s: e^-20). Whole trajectories also
    converge as the band shrinks: the sup distance between successive bands
    halves with the band.
    """
    sc = scenario(HETEROGENEOUS, rates=(5.0,), horizon=40.0, sample_interval=0.1, router="gmsr")
    opt = lbsim.optimum(sc)
    bands = (0.08, 0.04, 0.02)
    runs = [fluid(sc, band=b) for b in bands]
    gaps, trajectory = [], []
    for b, res in zip(bands, runs):
        rest = regularised_rest_point(sc.service_rates, 5.0, res.tie_tolerance)
        assert np.abs(res.final_load - rest).max() <= 1e-6 * rest.max()
        gaps.append(np.abs(res.final_load - opt.load).max() / opt.load.max())
        within = res.settling_time(opt.load, 0.01)
        print(f"band {b}: dt {res.dt:.2e}, load gap {gaps[-1]:.2e}, within 1% of the optimum after {within:.1f} s")
    for a, b in zip(runs, runs[1:]):
        trajectory.append(np.abs(a.load - b.load).max())
    print(f"sup distance between trajectories at successive bands: {trajectory}")
    # The rest point moves linearly with the band: halving it halves the gap (first order in the band;
    # the second-order term is (band * c''/c')-relative, under 10% here). Trajectories of a regularised
    # sliding mode are O(band) from the limit, so their distance at least halves with the band.
    np.testing.assert_allclose(np.array(gaps[:-1]) / np.array(gaps[1:]), 2.0, rtol=0.1)
    assert trajectory[0] / trajectory[1] >= 2.0 * 0.9
    final = runs[-1]
    assert gaps[-1] < 1e-3
    assert np.abs(final.final_split - opt.routing).max() < 1e-3


def test_dgdlb_with_delays_converges_to_the_optimum():
    """DGD-LB's rest points are the optimum's KKT points: with a stable step it gets there (1e-3 relative).

    On two_regions the loads settle within a minute, but eu-west's split
    between the two us pools (whose round trips differ by 4 ms) has almost
    no gradient: it drifts at about step * 2 * 2 ms per second, hence 1600 s
    (with the default step, 0.05).
    """
    sc = lbsim.load_scenario("scenarios/two_regions.toml").replace(**{"simulation.horizon": 1600.0})
    opt = lbsim.optimum(sc)
    res = fluid(sc, router="dgdlb")
    load_gap = np.abs(res.final_load - opt.load).max() / opt.load.max()
    split_gap = np.abs(res.final_split - opt.routing).max()
    within = res.settling_time(opt.load, 0.01)
    split_error = np.abs(res.split - opt.routing).max(axis=(1, 2))
    split_within = res.t[np.flatnonzero(split_error > 0.01)[-1] + 1]
    print(
        f"dgdlb step {res.params['step']}: load gap {load_gap:.2e}, split gap {split_gap:.2e}; "
        f"loads within 1% after {within:.1f} s, split within 0.01 after {split_within:.1f} s"
    )
    assert load_gap < 1e-3 and split_gap < 1e-3
    assert abs(res.mean_latency() - opt.mean_latency) < 1e-3 * opt.mean_latency


def test_gmsr_latency_variant_with_instant_telemetry_reaches_the_optimum():
    """argmin 2d + 1/mu' on the current state equalises marginal costs: the optimum, up to the band."""
    sc = two_frontends("gmsr", horizon=40.0, telemetry="instant")
    opt = lbsim.optimum(sc)
    res = fluid(sc, variant="latency", band=0.02)
    gap = np.abs(res.final_load - opt.load).max() / opt.load.max()
    # Each frontend's used edges differ in cost by at most eps: loads move by eps / c'(x*) at most.
    slope = min(
        (1 / float(r.derivative(x * (1 + 1e-6))) - 1 / float(r.derivative(x))) / (x * 1e-6)
        for r, x in zip(sc.service_rates, opt.load)
    )
    assert gap <= res.tie_tolerance / slope / opt.load.max()
    print(f"gmsr latency variant, instant telemetry: load gap {gap:.2e}")


@pytest.mark.parametrize("router", ["least_load", "least_latency", "gmsr"])
def test_argmin_routers_rest_where_sparsemax_says(router):
    """At rest without delay, each frontend's used edges have equal c_ij + eps p_ij, unused ones cost more."""
    sc = two_frontends(router, horizon=40.0, delay=0.0)
    res = fluid(sc, band=0.05)
    again = fluid(sc.replace(**{"simulation.horizon": 41.0}), band=0.05)
    assert np.abs(again.final_load - res.final_load).max() < 1e-9 * res.final_load.max()  # at rest
    model_cost = {
        "least_load": lambda x: x,
        "least_latency": lambda x: np.array([x_ / float(r.value(x_)) for r, x_ in zip(sc.service_rates, x)]),
        "gmsr": lambda x: np.array([1 / float(r.derivative(x_)) for r, x_ in zip(sc.service_rates, x)]),
    }[router]
    cost = np.broadcast_to(model_cost(res.final_load), (2, 3))
    level = cost + res.tie_tolerance * res.final_split
    for i in range(2):
        used = res.final_split[i] > 0
        assert np.ptp(level[i, used]) <= 1e-9 * level[i].max()
        assert (cost[i, ~used] >= level[i, used].max() - 1e-9 * level[i].max()).all()


# -- DGD-LB's stability limit ---------------------------------------------------------------------
def window_amplitudes(res, period: float) -> np.ndarray:
    difference = res.load[:, 0] - res.load[:, 1]
    windows = int(res.t[-1] // period)
    window = np.floor(res.t / period).astype(int)
    return np.array([np.abs(difference[window == k]).max() for k in range(windows)])


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_dgdlb_stability_limit_of_the_linearised_loop(factor):
    """One frontend, two identical backends, d = 0.25 s: stable at 0.8x the predicted critical step, not at 1.25x.

    Prediction (docs/routers.md, DGD-LB, "Stability limit"): with a = mu'(x*), c = 1/mu', the flow
    dp/dt = -step Proj_T(g) gives D'' + a D' + K D(t - 2d) = 0 with
    K = step * lambda * c'(x*) (lbsim.routers.dgdlb.dgdlb_critical_step). With a
    small interval (2d/100) the fluid DGD-LB approximates that flow. The
    amplitude of x_1 - x_2 over successive windows of one oscillation period
    must change by the factor e^{Re(s) P} the rightmost root s of the
    characteristic equation predicts: decay below 1, growth above (until
    the nonlinearity bounds it: a limit cycle, not decay). The perturbation
    is 1% of x*, so nonlinear terms are O(1%) of the linear ones, and the
    interval's effect is O((interval / 2d)^2): 10% on the per-window rate
    covers both with room.
    """
    d, lam = 0.25, 4.0
    rate = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    x_star = float(rate.inverse(lam / 2))
    a = float(rate.derivative(x_star))
    critical = dgdlb_critical_step(rate, x_star, lam, d)
    slope = (1 / float(rate.derivative(x_star + 1e-6)) - 1 / float(rate.derivative(x_star - 1e-6))) / 2e-6
    k_crit, w = critical_gain(a, 2 * d)
    assert critical == pytest.approx(k_crit / (lam * slope), rel=1e-9)
    root = loop_root(a, factor * k_crit, 2 * d)
    period = 2 * math.pi / root.imag
    sc = scenario(
        [backend("saturating", c=4.0, k=2.0)] * 2,
        rates=(lam,),
        horizon=12 * period,
        sample_interval=0.02,
        router="dgdlb",
        network={"delay": d},
    )
    res = fluid(sc, x0=[x_star * 1.01, x_star * 0.99], step=factor * critical, interval=2 * d / 100)
    amplitude = window_amplitudes(res, period)
    per_window = math.exp(root.real * period)
    print(f"{factor}x critical step {critical:.4f}: predicted factor {per_window:.3f}/period, amplitudes", amplitude)
    if factor < 1:
        assert (np.diff(amplitude[1:]) < 0).all()
        measured = (amplitude[-1] / amplitude[1]) ** (1 / (len(amplitude) - 2))
        assert measured == pytest.approx(per_window, rel=0.1)
        assert amplitude[-1] < 0.1 * amplitude[0]
    else:
        growing = amplitude[1:5]
        measured = (growing[-1] / growing[0]) ** (1 / (len(growing) - 1))
        assert measured == pytest.approx(per_window, rel=0.1)
        assert (amplitude[1:] >= amplitude[:-1] * (1 - 1e-3)).all()  # never decays
        assert amplitude[-1] > 10 * amplitude[0]


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_dgdlb_ticks_add_no_loop_delay_to_first_order(factor):
    """With interval = d (ticks as long as the one-way delay) the limit is still the T = 2d one, not T = 2d + interval.

    Holding each update for an interval lags by half of it and applying the
    update at once leads by as much (lbsim/routers/dgdlb.py), so the critical step
    moves by O((interval / 2d)^2): at interval = d a few percent, well inside
    +-10%, whereas T = 2d + interval would put the limit 32% lower (0.176 vs 0.260).
    """
    d, lam = 0.25, 4.0
    rate = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    critical = dgdlb_critical_step(rate, 2.0, lam, d)
    sc = scenario(
        [backend("saturating", c=4.0, k=2.0)] * 2, rates=(lam,), horizon=80.0, sample_interval=0.05, router="dgdlb",
        network={"delay": d},
    )  # fmt: skip
    res = fluid(sc, x0=[2.02, 1.98], step=factor * critical, interval=d)
    _, w = critical_gain(float(rate.derivative(2.0)), 2 * d)
    amplitude = window_amplitudes(res, 2 * math.pi / w)
    assert (amplitude[-1] < amplitude[1]) == (factor < 1)


# -- outputs and errors ----------------------------------------------------------------------------
def test_tables_have_the_simulator_shapes_and_files_are_written(tmp_path):
    sc = two_frontends("dgdlb", horizon=5.0, sample_interval=0.5)
    res = fluid(sc)
    sim = lbsim.simulate(sc.replace(**{"simulation.warmup": 0.0}), seed=1)
    for mine, theirs in ((res.timeseries, sim.timeseries), (res.routing, sim.routing)):
        assert list(mine.columns) == list(theirs.columns)
        for column in ("t", "backend") + (("frontend",) if "frontend" in mine else ()):
            np.testing.assert_array_equal(mine[column].to_numpy(), theirs[column].to_numpy())
            assert mine[column].dtype == theirs[column].dtype
    assert res.load.shape == (10, 3) and res.split.shape == (10, 2, 3)
    np.testing.assert_allclose(res.split.sum(axis=2), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.timeseries["jobs"], res.timeseries["load"] / sc.mean_size)
    res.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "routing.parquet", "scenario.toml", "summary.json", "timeseries.parquet",
    ]  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "timeseries.parquet"), res.timeseries)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["router"] == "dgdlb" and len(summary["final_load"]) == 3
    assert summary["mean_latency"] == pytest.approx(res.mean_latency())


def test_same_inputs_same_trajectory():
    sc = two_frontends("gmsr", horizon=2.0)
    a, b = fluid(sc), fluid(sc)
    assert np.array_equal(a.load, b.load) and np.array_equal(a.split, b.split)


def test_periodic_telemetry_keeps_dgdlb_rest_point():
    sc = lbsim.load_scenario("scenarios/two_regions.toml").replace(
        **{"simulation.horizon": 400.0, "network.telemetry": "periodic", "network.period": 0.5}
    )
    opt = lbsim.optimum(sc)
    res = fluid(sc, router="dgdlb")
    assert np.abs(res.final_load - opt.load).max() < 1e-3 * opt.load.max()


@pytest.mark.parametrize(
    "call, key",
    [
        (lambda sc: fluid(sc, router="prequal"), "router"),
        (lambda sc: fluid(sc, router="dgdlb", step=-1.0), "router.step"),
        (lambda sc: fluid(sc, router="dgdlb", x0=[1.0]), "x0"),
        (lambda sc: fluid(sc.replace(**{"network.telemetry": "none"}), router="gmsr"), "network.telemetry"),
        (lambda sc: fluid(sc, router="gmsr", band=-1.0), "band"),
    ],
)
def test_bad_input_names_the_key(call, key):
    sc = two_frontends("weighted", horizon=1.0)
    with pytest.raises(ScenarioError) as err:
        call(sc)
    assert err.value.key == key


def test_every_fluid_router_is_a_discrete_router():
    from lbsim.routers import ROUTERS

    assert set(FLUID_ROUTERS) <= set(ROUTERS)
    sc = two_frontends("weighted", horizon=1.0)
    for name in FLUID_ROUTERS:
        res = fluid(sc, router=name)
        assert np.isfinite(res.load).all() and (res.load >= 0).all()


# -- the stiff solver, long delays, overload, progress, threads ---------------------------------------
def undelayed_two_frontends(horizon: float, sample_interval: float = 0.25, **simulation) -> lbsim.Scenario:
    return scenario(
        HETEROGENEOUS,
        rates=(3.0, 2.5),
        horizon=horizon,
        sample_interval=sample_interval,
        router="gmsr",
        network={"delay": 0.0},
        **simulation,
    )


@pytest.mark.parametrize("schedules", [False, True])
def test_undelayed_argmin_is_solved_as_a_stiff_ode_as_accurately_as_heun(schedules):
    """With no delay, GMSR's loop goes to LSODA by itself, and lands at least as close to Heun's dt -> 0 limit.

    The reference is Heun's method at an eighth of its default step (its own
    error is 1/64 of the default step's, order 2: measured above); the stiff
    solver must be within the error Heun's method makes at its default step.
    With ``schedules``, a rate step and a capacity step inside the horizon
    (LSODA restarts at each: no step straddles a jump).
    """
    sc = undelayed_two_frontends(1.2, sample_interval=0.05)
    if schedules:
        data = undelayed_two_frontends(1.2, sample_interval=0.05, rate_schedule=[[0.0, 1.0], [0.43, 1.4]]).to_dict()
        data["backends"][1]["antagonist"] = {"schedule": [[0.71, 0.6]]}
        sc = lbsim.Scenario.from_dict(data)
    h = default_time_step(sc)
    reference = fluid(sc, dt=h / 8)
    heun = fluid(sc, dt=h)
    stiff = fluid(sc)
    assert (heun.method, stiff.method) == ("heun", "lsoda")
    heun_error = np.abs(heun.load - reference.load).max()
    stiff_error = np.abs(stiff.load - reference.load).max()
    print(f"errors against Heun at dt/8: Heun {heun_error:.2e} ({heun.steps} steps), LSODA {stiff_error:.2e} "
          f"({stiff.steps} steps)")  # fmt: skip
    assert stiff_error <= heun_error
    assert np.abs(stiff.split - reference.split).max() <= np.abs(heun.split - reference.split).max() * 1.5


def test_undelayed_gmsr_takes_thousands_of_steps_for_200_seconds_not_millions():
    """Issue 13's case: 2 x 3, no delay, 200 s. Heun's default step would be 1.4e-4 s (1.5 million steps)."""
    sc = undelayed_two_frontends(200.0, sample_interval=1.0)
    res = fluid(sc)
    assert res.method == "lsoda" and res.steps < 5_000
    assert res.summary()["method"] == "lsoda" and res.summary()["horizon"] == pytest.approx(200.0)
    # at rest: every used backend at the regularised rest point (KKT with the band), as with Heun
    assert np.abs(res.final_split.sum(axis=1) - 1.0).max() < 1e-12
    assert math.isclose(float(res.final_load.sum()), float(res.load[-1].sum()), rel_tol=1e-6)


def test_a_delay_beyond_the_horizon_costs_what_the_horizon_costs():
    """Delays longer than the horizon read only the initial history: the same steps, buffers and trajectory."""
    from lbsim.fluid.integrator import Integrator
    from lbsim.fluid.model import FluidModel
    from lbsim.routers.base import validate_params

    sizes, loads = [], []
    for delay in (3 * 20.0, 1e5, 1e9):
        # (the scenario must outlast its delays to load, as a simulation would never return a job otherwise;
        # the fluid model then integrates only 20 s of it)
        sc = scenario(
            HETEROGENEOUS, rates=(1e-3,), horizon=3e9, sample_interval=1e3, router="gmsr", network={"delay": delay}
        )
        res = fluid(sc, horizon=20.0)
        model = FluidModel(sc, 1e-3, None)
        router = FLUID_ROUTERS["gmsr"]("gmsr", validate_params("gmsr", {}), model)
        integrator = Integrator(model, router, res.dt, 20.0, False)
        sizes.append((res.steps, integrator.ring.shape, integrator._window.shape))
        loads.append(res.load)
        # nothing arrives within the horizon, so the loads stay at 0
        assert np.abs(res.load).max() == 0.0
    assert sizes[0] == sizes[1] == sizes[2]
    assert sizes[0][1][0] <= 2 * (sizes[0][0] + 6)


@pytest.mark.parametrize("router, delay", [("gmsr", 0.0), ("least_load", 0.0), ("random", 0.05), ("dgdlb", 0.05)])
def test_an_overloaded_backend_grows_at_lambda_minus_its_supremum(router, delay):
    """One frontend, lambda = 5, its only backend saturating with c = 3, k = 1: x' = (lambda - c) + c k / (k + x).

    So between two times the mean slope is lambda - c plus the mean of
    c k / (k + x), which lies in (0, c k / (k + x(t1))]. The stiff solver
    takes large steps on the linear growth (no crawling).
    """
    lam, c, k = 5.0, 3.0, 1.0
    sc = scenario([backend("saturating", c=c, k=k)], rates=(lam,), horizon=400.0, router=router,
                  network={"delay": delay})  # fmt: skip
    res = fluid(sc)
    half = len(res.t) // 2
    slope = (res.load[-1, 0] - res.load[half, 0]) / (res.t[-1] - res.t[half])
    assert 0.0 < slope - (lam - c) <= c * k / (k + res.load[half, 0])
    if delay == 0.0:
        assert res.method == "lsoda" and res.steps < 2_000


def test_short_herding_delays_go_to_lsoda_within_one_loop_delay_of_the_delayed_trajectory():
    """GMSR with 1 ms delays: the loop herds (``R T`` about 14) and is short (``r T`` below 1%), so LSODA.

    Issue 13's accuracy target: at least as close to the delayed trajectory
    (Heun's method at an eighth of its default step) as Heun's default step,
    and within the stated bound ``Lambda T_max`` (lbsim/fluid/stiff.py).
    """
    sc = undelayed_two_frontends(3.0, sample_interval=0.01).replace(**{"network.delay": 0.001})
    short = fluid(sc)
    assert short.method == "lsoda" and short.neglected_delay == pytest.approx(0.002)
    assert short.summary()["neglected_delay"] == pytest.approx(0.002)
    h = default_time_step(sc)
    assert h == pytest.approx(0.0005)  # today's step: half the delay
    reference, heun = fluid(sc, dt=h / 8), fluid(sc, dt=h)
    heun_error = np.abs(heun.load - reference.load).max()
    short_error = np.abs(short.load - reference.load).max()
    print(f"errors against Heun at dt/8: Heun {heun_error:.2e} ({heun.steps} steps), LSODA {short_error:.2e} "
          f"({short.steps} steps)")  # fmt: skip
    assert short_error <= heun_error
    assert short_error <= sc.demand.sum() * short.neglected_delay


@pytest.mark.parametrize("delay", [1e-4, 0.01])
def test_delays_outside_the_short_herding_regime_keep_heun(delay):
    """0.1 ms: ``R T`` about 1.4, the loop does not herd (Heun is O(dt^2) there); 10 ms: ``r T`` above 1%."""
    sc = undelayed_two_frontends(1.0).replace(**{"network.delay": delay})  # (a scenario its jobs can return in)
    res = fluid(sc, horizon=0.01)
    assert res.method == "heun" and res.neglected_delay == 0.0


# -- served work -----------------------------------------------------------------------------------
def test_heun_served_work_is_arrived_work_minus_the_load_per_backend():
    """A static split with off-grid delays: ``arrived_j(t) = sum_i lambda_i p_ij max(0, t - d_ij)`` in closed form.

    Conservation ``S_j(t) = x0_j + arrived_j(t) - x_j(t)`` holds at every
    sample and at the end, to the rounding of the cumulative sums (a few ulps
    of the arrived work per step). The summary's ``served`` is the work per
    second after the warm-up, as the simulator's.
    """
    data = two_frontends("random", horizon=12.0, sample_interval=0.4).to_dict()
    data["simulation"]["warmup"] = 3.0
    sc = lbsim.Scenario.from_dict(data)
    res = fluid(sc)
    assert res.method == "heun"
    delay, flow = np.array(OFF_GRID), sc.demand[:, None] / 3.0

    def arrived(t):
        return (flow * np.maximum(0.0, t - delay)).sum(axis=0)

    end = res.steps * res.dt
    rounding = 8 * EPS * res.steps * arrived(end).max()
    expected = np.stack([arrived(t) for t in res.t]) - res.load
    np.testing.assert_allclose(res.served, expected, rtol=0, atol=rounding)
    np.testing.assert_allclose(res.final_served, arrived(end) - res.final_load, rtol=0, atol=rounding)
    np.testing.assert_allclose(res.timeseries["served"], res.served.reshape(-1), rtol=0, atol=0)
    at_warmup = 3.0 / res.dt  # on the grid here: the warm-up's state is a step's
    assert at_warmup == round(at_warmup)
    rate = (res.final_served.sum() - res.served_warmup.sum()) / (end - 3.0)
    assert res.summary()["served"] == pytest.approx(rate, rel=1e-12)
    assert 0.0 < rate < sc.demand.sum()


def test_lsoda_served_work_is_conserved_and_matches_heun():
    """GMSR undelayed (LSODA): the split sums to 1, so ``sum_j S_j(t) = Lambda t - sum_j x_j(t)`` exactly.

    The quadrature of the service rate along LSODA's interpolant conserves it
    to the solver's tolerances (RTOL per step, times the steps); and per
    backend it lands within Heun's default-step error of Heun's dt -> 0 limit
    (the reference of ``test_undelayed_argmin_is_solved_as_a_stiff_ode_as_accurately_as_heun``).
    """
    sc = undelayed_two_frontends(1.2, sample_interval=0.05)
    stiff = fluid(sc)
    assert stiff.method == "lsoda"
    total = sc.demand.sum() * stiff.t - stiff.load.sum(axis=1)
    bound = stiff.steps * 1e-11 * sc.demand.sum() * 1.2
    assert np.abs(stiff.served.sum(axis=1) - total).max() <= bound
    assert abs(stiff.final_served.sum() - (sc.demand.sum() * 1.2 - stiff.final_load.sum())) <= bound
    h = default_time_step(sc)
    reference, heun = fluid(sc, dt=h / 8), fluid(sc, dt=h)
    heun_error = np.abs(heun.served - reference.served).max()
    assert np.abs(stiff.served - reference.served).max() <= heun_error


@pytest.mark.parametrize("router, delay", [("gmsr", 0.0), ("random", 0.05)])
def test_an_overloaded_backend_serves_at_its_supremum(router, delay):
    """lambda = 5 into one saturating backend (c = 3, k = 1): it serves ``mu(x) = c - c k / (k + x)``, x growing.

    So the work served per second between two times lies in
    ``[c - c k / (k + x(t1)), c)``; with one backend the arrivals are known
    (``lambda (t - d)``) and conservation holds per backend, for LSODA too.
    """
    lam, c, k = 5.0, 3.0, 1.0
    sc = scenario([backend("saturating", c=c, k=k)], rates=(lam,), horizon=400.0, warmup=100.0, router=router,
                  network={"delay": delay})  # fmt: skip
    res = fluid(sc)
    assert res.method == ("lsoda" if delay == 0.0 else "heun")
    warmup = int(np.searchsorted(res.t, 100.0))
    rate = res.summary()["served"]
    assert c - c * k / (k + res.load[warmup, 0]) <= rate < c
    end = res.steps * res.dt
    np.testing.assert_allclose(res.final_served[0], lam * (end - delay) - res.final_load[0], rtol=1e-9)


def test_progress_is_silent_when_stderr_is_not_a_terminal(capfd):
    for sc in (undelayed_two_frontends(2.0), two_frontends("dgdlb", horizon=2.0)):
        quiet, shown = fluid(sc), fluid(sc, progress=True)
        assert np.array_equal(quiet.load, shown.load)
    assert capfd.readouterr().err == ""


def test_the_optimum_and_the_fluid_model_run_on_one_blas_thread(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from lbsim.threads import blas_threads

    def blas_pools():
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    seen = []
    with blas_threads():
        seen = blas_pools()
    assert seen and set(seen) == {1}
    monkeypatch.setenv("LBSIM_BLAS_THREADS", "0")
    before = blas_pools()
    with blas_threads():
        assert blas_pools() == before
