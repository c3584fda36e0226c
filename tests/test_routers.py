"""Unit tests of the model-based routers and the practical baselines.

Most tests drive a router by hand on a :class:`FixedView` (job counts chosen
by the test) so that the expected decision is computed here from the rate
functions, never by the simulator. The statistical ones (tie-breaking) use a
fixed seed and a chi-square test; the DGD-LB stability check simulates the
sampled linear loop of docs/routers.md (DGD-LB, "Stability limit") directly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas.testing as pd_testing
import pytest
from helpers import backend, scenario
from scipy import optimize
from scipy import stats as sps

from lbsim.engine import Simulation
from lbsim.jobs import Job
from lbsim.view import View
from lbsim.errors import ScenarioError
from lbsim.optimum import optimum
from lbsim.routers.tables import COST_CAP
from lbsim.simplex import project_simplex


class FixedView(View):
    """A view whose observed job counts are set by the test: ``counts[i][j]``."""

    def __init__(self, counts, mean_size: float):
        counts = np.asarray(counts)
        super().__init__([None] * counts.shape[1], np.zeros(counts.shape), mean_size, env=None)
        self.counts = counts.astype(int).tolist()

    def jobs(self, frontend, backend):
        return self.counts[frontend][backend]


def make_router(scn, name: str | None = None, **params):
    """The router a simulation of ``scn`` would build (its context, RNG stream and all)."""
    return Simulation(scn, router=name, **params).router


def job(frontend: int = 0, backend: int = -1, size: float = 1.0) -> Job:
    j = Job(0, frontend, size, 0.0)
    j.backend = backend
    return j


MIXED = [
    backend("saturating", c=4.0, k=2.0),
    backend("batch", a=0.2, b=0.15),
    backend("exponential", c=3.0, k=1.5),
    backend("power", c=1.0, a=0.6),
    backend("servers", r=1.0, k=2.0),
]


# -- Duchi et al. projection ------------------------------------------------------------
def _projection_by_supports(v: np.ndarray) -> np.ndarray:
    """Exact projection by enumerating supports: on support S the KKT point is v - theta, theta = (sum v_S - 1)/|S|."""
    best, best_distance = None, math.inf
    n = len(v)
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            s = list(support)
            theta = (v[s].sum() - 1.0) / size
            w = np.zeros(n)
            w[s] = v[s] - theta
            if (w[s] >= -1e-15).all():
                distance = float(((w - v) ** 2).sum())
                if distance < best_distance:
                    best, best_distance = w, distance
    return best


def test_projection_matches_brute_force_and_a_qp_solver():
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 8))
        v = rng.normal(0.0, 1.0 + trial % 3, n)
        w = project_simplex(v)
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w >= 0).all()
        np.testing.assert_allclose(w, _projection_by_supports(v), atol=1e-12)
        if trial % 10 == 0:  # an independent QP solver, at its own accuracy
            qp = optimize.minimize(
                lambda x: 0.5 * ((x - v) ** 2).sum(),
                np.full(n, 1.0 / n),
                jac=lambda x: x - v,
                bounds=[(0.0, None)] * n,
                constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(n)}],
                method="SLSQP",
                options={"ftol": 1e-14, "maxiter": 500},
            )
            assert qp.success
            np.testing.assert_allclose(w, qp.x, atol=1e-6)


def test_projection_rows_and_masks():
    rng = np.random.default_rng(8)
    v = rng.normal(size=(6, 7))
    mask = rng.random((6, 7)) < 0.6
    mask[np.arange(6), rng.integers(0, 7, 6)] = True
    w = project_simplex(v, mask)
    assert (w[~mask] == 0).all()
    for i in range(6):
        np.testing.assert_allclose(w[i, mask[i]], _projection_by_supports(v[i, mask[i]]), atol=1e-12)
    np.testing.assert_allclose(project_simplex(v), [project_simplex(row) for row in v], atol=0)
    # Points of the simplex are fixed; adding a constant to a row changes nothing.
    p = rng.dirichlet(np.ones(5), size=3)
    np.testing.assert_allclose(project_simplex(p), p, atol=1e-15)
    np.testing.assert_allclose(project_simplex(p + 3.7), p, atol=1e-12)


# -- GMSR -------------------------------------------------------------------------------
def _gmsr_keys(scn, counts, variant):
    sbar = scn.mean_size
    x = np.asarray(counts, dtype=float) * sbar
    rates = scn.service_rates
    if variant == "derivative":
        return [-float(r.derivative(xj)) for r, xj in zip(rates, x)]
    if variant == "discrete":
        return [-float(r.value(xj + sbar) - r.value(xj)) for r, xj in zip(rates, x)]
    derivatives = [float(r.derivative(xj)) for r, xj in zip(rates, x)]
    costs = [COST_CAP if dj <= 1.0 / COST_CAP else 1.0 / dj for dj in derivatives]  # 1/mu', capped
    return [2 * scn.delay[0, j] + c for j, c in enumerate(costs)]


@pytest.mark.parametrize("variant", ["derivative", "discrete", "latency"])
def test_gmsr_picks_the_best_marginal_rate(variant):
    scn = scenario(MIXED, [3.0], job_scale=0.1, network={"delay": [[0.0, 0.1, 0.2, 0.05, 0.3]]})
    router = make_router(scn, "gmsr", variant=variant)
    rng = np.random.default_rng(3)
    for _ in range(300):
        counts = rng.integers(0, 60, size=5)
        keys = _gmsr_keys(scn, counts, variant)
        best = set(np.flatnonzero(np.array(keys) == min(keys)))
        assert router.route(0, job(), FixedView([counts], scn.mean_size)) in best


def test_gmsr_respects_connect():
    scn = scenario(MIXED[:3], [1.0, 1.0], network={"connect": [[False, True, True], [True, False, False]]})
    router = make_router(scn, "gmsr")
    view = FixedView([[0, 50, 50], [50, 0, 0]], scn.mean_size)  # backend 0 is the most attractive by far
    assert {router.route(0, job(), view) for _ in range(50)} <= {1, 2}
    assert {router.route(1, job(), view) for _ in range(50)} == {0}


def test_random_picks_uniformly_among_usable_backends_only():
    """Each frontend's picks: only its usable backends, each equally often (chi-square), past a refill."""
    connect = [[True, False, True, True], [False, True, False, False]]
    scn = scenario([backend("linear", r=1.0)] * 4, [1.0, 1.0], network={"connect": connect})
    router = make_router(scn, "random")
    picks = np.bincount([router.route(0, job(), None) for _ in range(9000)], minlength=4)
    assert picks[1] == 0
    assert sps.chisquare(picks[[0, 2, 3]]).pvalue > 1e-3, picks
    assert {router.route(1, job(1), None) for _ in range(50)} == {1}


@pytest.mark.parametrize("variant", ["derivative", "discrete", "latency"])
def test_gmsr_breaks_ties_uniformly(variant):
    """Three identical backends at the same load and a worse fourth: a chi-square test of uniformity."""
    scn = scenario([backend("saturating", c=2.0, k=1.0)] * 4, [1.0], job_scale=0.1)
    router = make_router(scn, "gmsr", variant=variant)
    view = FixedView([[5, 5, 9, 5]], scn.mean_size)
    picks = np.bincount([router.route(0, job(), view) for _ in range(6000)], minlength=4)
    assert picks[2] == 0
    assert sps.chisquare(picks[[0, 1, 3]]).pvalue > 1e-3, picks


def test_gmsr_prefers_empty_backends_with_infinite_marginal_rate():
    """power with a < 1 has mu'(0) = +inf: empty backends win and tie among themselves."""
    scn = scenario([backend("power", c=1.0, a=0.5)] * 3, [1.0], job_scale=0.1)
    router = make_router(scn, "gmsr")
    view = FixedView([[0, 3, 0]], scn.mean_size)
    picks = np.bincount([router.route(0, job(), view) for _ in range(2000)], minlength=3)
    assert picks[1] == 0 and min(picks[0], picks[2]) > 900


# -- expected latency, least load, nearest ----------------------------------------------
def test_least_latency_minimises_expected_latency_and_handles_empty_backends():
    scn = scenario(
        [backend("saturating", c=4.0, k=2.0), backend("linear", r=0.5), backend("constant", c=1.0)],
        [1.0],
        job_scale=0.5,
        network={"delay": [[0.3, 0.0, 0.1]]},
    )
    router = make_router(scn, "least_latency")
    sbar = scn.mean_size
    rates = scn.service_rates
    for counts in ([0, 0, 0], [3, 1, 2], [1, 5, 0], [10, 0, 4]):
        x = np.maximum(np.array(counts) * sbar, sbar)  # x = 0 reads as one job: sbar / mu(sbar)
        expected = [2 * scn.delay[0, j] + x[j] / float(rates[j].value(x[j])) for j in range(3)]
        assert router.route(0, job(), FixedView([counts], sbar)) == int(np.argmin(expected)), counts


def test_least_load_and_nearest():
    scn = scenario(
        [backend("saturating", c=1.0, k=1.0)] * 4, [1.0], network={"delay": [[0.2, 0.1, 0.1, 0.3]]}
    )
    least_load = make_router(scn, "least_load")
    assert least_load.route(0, job(), FixedView([[3, 2, 4, 7]], 1.0)) == 1
    nearest = make_router(scn, "nearest")
    picks = np.bincount([nearest.route(0, job(), None) for _ in range(4000)], minlength=4)
    assert picks[0] == picks[3] == 0
    assert sps.binomtest(int(picks[1]), 4000).pvalue > 1e-3


# -- least request -----------------------------------------------------------------------
def test_least_request_counts_its_own_requests():
    scn = scenario([backend("saturating", c=1.0, k=1.0)] * 3, [1.0, 1.0])
    router = make_router(scn, "least_request", choices=0)
    view = FixedView([[9, 9, 9], [9, 9, 9]], 1.0)  # telemetry is not used
    first = [router.route(0, job(0), view) for _ in range(3)]
    assert sorted(first) == [0, 1, 2] and router.in_flight[0] == [1, 1, 1]
    assert router.in_flight[1] == [0, 0, 0]  # client-local: frontend 1 knows nothing of frontend 0
    router.on_response(0, job(0, backend=first[1]))
    assert router.route(0, job(0), view) == first[1]
    assert router.in_flight[0] == [1, 1, 1]


def test_least_request_power_of_two_samples_pairs_uniformly():
    """Counts 5, 0, 9: pairs {0,1} and {1,2} pick 1, {0,2} picks 0, so P = 1/3, 2/3, 0."""
    scn = scenario([backend("saturating", c=1.0, k=1.0)] * 3, [1.0])
    router = make_router(scn, "least_request", choices=2)
    picks = np.zeros(3, dtype=int)
    for _ in range(3000):
        router.in_flight[0] = [5, 0, 9]
        picks[router.route(0, job(), None)] += 1
    assert picks[2] == 0
    assert sps.binomtest(int(picks[0]), 3000, 1 / 3).pvalue > 1e-3, picks


def test_least_request_counts_match_jobs_in_flight():
    """At the end of a run every request a frontend counts is somewhere in the system, and vice versa."""
    scn = scenario(
        [backend("saturating", c=2.0, k=1.0)] * 3,
        [1.5, 1.0],
        horizon=60.0,
        drain=False,  # the counts at the horizon (a drain runs on after it)
        job_scale=0.1,
        network={"delay": [[0.05, 0.1, 0.2], [0.2, 0.1, 0.05]]},
        router={"name": "least_request", "choices": 2},
    )
    sim = Simulation(scn)
    result = sim.run()
    assert sum(map(sum, sim.router.in_flight)) == result.counts["jobs_in_system_end"]
    assert min(min(row) for row in sim.router.in_flight) >= 0


# -- weighted round robin ----------------------------------------------------------------
def test_smooth_weighted_round_robin_sequence():
    """nginx's smooth WRR with weights 5, 1, 1 gives a a b a c a a: proportional and interleaved."""
    scn = scenario([backend("saturating", c=1.0, k=1.0)] * 3, [1.0])
    router = make_router(scn, "wrr")
    router.set_weights(0, [5.0, 1.0, 1.0])
    assert [router.route(0, job(), None) for _ in range(7)] == [0, 0, 1, 0, 2, 0, 0]
    router.set_weights(0, [0.5, 0.3, 0.2])
    picks = np.bincount([router.route(0, job(), None) for _ in range(1000)], minlength=3)
    np.testing.assert_allclose(picks, [500, 300, 200], atol=2)


def nginx_smooth_wrr(weights: list[float], jobs: int, credit: list[float]) -> list[int]:
    """nginx's smooth weighted round robin as written there: a loop over the peers, strict ``>`` in index order
    (``credit`` is updated in place)."""
    total = sum(weights)
    picks = []
    for _ in range(jobs):
        best = -1
        for k, w in enumerate(weights):
            credit[k] += w
            if best == -1 or credit[k] > credit[best]:
                best = k
        credit[best] -= total
        picks.append(best)
    return picks


@pytest.mark.parametrize("backends", [3, 40, 300])
def test_wrr_picks_are_the_reference_loops_for_any_fleet(backends):
    """The credits kept in one numpy array pick what nginx's per-peer loop picks, job for job.

    Integer weights make many credits tie exactly (the first must win), then
    random float weights, installed midway: the credits carry over.
    """
    rng = np.random.default_rng(backends)
    scn = scenario([backend("saturating", c=1.0, k=1.0)] * backends, [1.0])
    router = make_router(scn, "wrr")
    credit = [0.0] * backends
    for weights in (rng.integers(1, 4, backends).astype(float), rng.uniform(0.01, 2.0, backends)):
        router.set_weights(0, weights)
        picks = [router.route(0, job(), None) for _ in range(5 * backends)]
        assert picks == nginx_smooth_wrr(weights.tolist(), 5 * backends, credit)


def test_least_tokens_on_rate_backends_is_least_load_on_large_fleets():
    """On ``rate`` backends a backend's tokens are its load n_j * sbar: least_tokens routes as least_load
    job for job, also where the view keeps its arrays (from 48 backends) and reads them in bulk."""
    delay = np.random.default_rng(2).uniform(0.005, 0.05, size=(2, 64)).tolist()
    for telemetry in ("delayed", "instant"):
        scn = scenario(
            [backend("saturating", c=1.0, k=0.5)] * 64,
            [20.0, 20.0],
            horizon=20.0,
            job_scale=0.05,
            network={"delay": delay, "telemetry": telemetry},
        )
        tokens = Simulation(scn, router="least_tokens")
        assert tokens.view.vectorised
        jobs = tokens.run().jobs
        pd_testing.assert_frame_equal(jobs, Simulation(scn, router="least_load").run().jobs)


def test_wrr_weights_are_throughput_over_utilisation():
    scn = scenario(
        [backend("saturating", c=4.0, k=2.0), backend("saturating", c=2.0, k=1.0), backend("linear", r=1.0)],
        [3.0],
        job_scale=0.5,
        router={"name": "wrr", "interval": 2.0, "smoothing": 1.0, "min_weight": 0.0},
    )
    router = make_router(scn)
    sbar = scn.mean_size
    for j, work in enumerate([6.0, 2.0, 1.0]):  # 3, 1 and 0.5 work units/s over the 2 s interval
        for _ in range(int(work / 0.5)):
            router.on_response(0, job(0, backend=j, size=0.5))
    counts = [4, 2, 1]
    router.tick(2.0, FixedView([counts], sbar))
    rates = scn.service_rates
    capacity = [4.0, 2.0, 3.0]  # linear is unbounded: its capacity is the total demand
    expected = [t / (float(r.value(n * sbar)) / c) for t, r, n, c in zip([3.0, 1.0, 0.5], rates, counts, capacity)]
    np.testing.assert_allclose(router.weights[0], expected, rtol=1e-12)
    np.testing.assert_allclose(router.split()[0], np.array(expected) / sum(expected), rtol=1e-12)
    # A backend never seen busy gets the largest weight; the floor holds the rest up.
    floor = router.estimate_weights(np.array([1.0, 0.0, 0.0]), np.array([0.5, 0.5, 0.0]))
    np.testing.assert_allclose(floor, [2.0, 0.0, 2.0])


def test_wrr_converges_to_capacity_weights_alone():
    """A lone frontend's throughput/utilisation estimates each backend's capacity sup mu_j."""
    scn = scenario(
        [backend("saturating", c=4.0, k=1.0), backend("saturating", c=2.0, k=0.5)],
        [3.0],
        horizon=300.0,
        job_scale=0.05,
        router="wrr",
    )
    result = Simulation(scn).run()
    split = result.routing[result.routing["t"] >= 100].groupby("backend")["prob"].mean().to_numpy()
    np.testing.assert_allclose(split, [2 / 3, 1 / 3], atol=0.05)


# -- DGD-LB -------------------------------------------------------------------------------
def test_dgdlb_rest_point_is_the_optimum():
    """At the optimum's loads one tick leaves the optimal split unchanged (KKT: equal g on used edges).

    Loads are the optimum's to within sbar = 1e-5, so g is within ~1e-5 of its
    value there and a step moves the split by about step*interval*1e-5.
    """
    scn = scenario(
        [backend("saturating", c=4.0, k=2.0), backend("batch", a=0.2, b=0.15), backend("exponential", c=3.0, k=1.5)],
        [3.0, 2.5],
        job_scale=1e-5,
        network={"delay": [[0.01, 0.05, 0.3], [0.2, 0.02, 0.04]]},
    )
    opt = optimum(scn)
    counts = np.rint(opt.load / scn.mean_size).astype(int)
    view = FixedView(np.tile(counts, (2, 1)), scn.mean_size)
    router = make_router(scn, "dgdlb", init="optimal", step=1.0, interval=1.0)
    np.testing.assert_allclose(router.split(), opt.routing, atol=1e-12)
    g = router.gradient(view)
    for i in range(2):
        used = opt.routing[i] > 1e-6
        np.testing.assert_allclose(g[i, used], opt.frontend_cost[i], atol=1e-4)
        assert (g[i, ~used] >= opt.frontend_cost[i] - 1e-4).all()
    router.tick(1.0, view)
    np.testing.assert_allclose(router.split(), opt.routing, atol=1e-4)
    # Elsewhere it moves, downhill: the directional derivative of the cost along the step is negative.
    uniform = make_router(scn, "dgdlb", init="uniform", step=1.0, interval=1.0)
    before = uniform.split().copy()
    uniform.tick(1.0, view)
    move = uniform.split() - before
    assert np.abs(move).max() > 1e-2
    assert (scn.demand[:, None] * move * uniform.gradient(view)).sum() < 0


def test_dgdlb_initial_splits():
    scn = scenario(
        [backend("saturating", c=1.0, k=1.0)] * 3,
        [1.0, 1.0],
        network={"delay": [[0.1, 0.1, 0.3], [0.2, 0.3, 0.1]], "connect": [[True, True, True], [False, True, True]]},
    )
    np.testing.assert_allclose(make_router(scn, "dgdlb").split(), [[1 / 3, 1 / 3, 1 / 3], [0, 0.5, 0.5]])
    np.testing.assert_allclose(make_router(scn, "dgdlb", init="nearest").split(), [[0.5, 0.5, 0], [0, 0, 1]])


def test_no_nan_when_marginal_rates_vanish():
    """Saturated backends (mu' = 0: servers beyond k, constant when busy) get the capped cost, never NaN."""
    scn = scenario(
        [backend("servers", r=1.0, k=2.0), backend("constant", c=1.0), backend("saturating", c=1.0, k=1.0)],
        [1.5],
        job_scale=0.5,
        network={"delay": [[0.1, 0.2, 0.3]]},
    )
    saturated = FixedView([[50, 7, 10**6]], scn.mean_size)  # saturating at huge load: mu' ~ 1e-12
    router = make_router(scn, "dgdlb", step=1.0, interval=1.0)
    g = router.gradient(saturated)
    assert np.isfinite(g).all() and g.max() <= COST_CAP + 1.0
    router.tick(1.0, saturated)
    assert np.isfinite(router.split()).all() and router.split().sum() == pytest.approx(1.0)
    # Only backend 0 below its knee: the others are pushed out in one tick.
    router.tick(2.0, FixedView([[1, 7, 10**6]], scn.mean_size))
    np.testing.assert_allclose(router.split(), [[1.0, 0.0, 0.0]], atol=1e-12)
    for name, params in [("gmsr", {"variant": "latency"}), ("gmsr", {}), ("least_latency", {})]:
        r = make_router(scn, name, **params)
        assert r.route(0, job(), saturated) in (0, 1, 2)
    # And a whole run into saturation stays finite.
    run = scenario(
        [backend("servers", r=1.0, k=1.0), backend("servers", r=1.0, k=1.0)],
        [1.9],
        horizon=50.0,
        job_scale=0.1,
        router={"name": "dgdlb", "step": 2.0},
    )
    result = Simulation(run).run()
    assert np.isfinite(result.routing["prob"]).all()


def test_dgdlb_rejects_bad_parameters():
    with pytest.raises(ScenarioError, match="router.step"):
        scenario([backend("linear", r=1.0)], router={"name": "dgdlb", "step": -1.0})
    with pytest.raises(ScenarioError, match="router.init"):
        scenario([backend("linear", r=1.0)], router={"name": "dgdlb", "init": "random"})


# -- the linearised stability limit (docs/routers.md, DGD-LB) ------------------------------
def critical_gain(a: float, delay: float) -> float:
    """K_crit = w sqrt(w^2 + a^2) with w T = arctan(a / w): where D'' + a D' + K D(t - T) = 0 turns unstable."""
    w = optimize.brentq(lambda w: w * delay - math.atan(a / w), 1e-9, 1e6)
    return w * math.sqrt(w * w + a * a)


def _sampled_loop_grows(step, a, slope, demand, d, interval, dt=0.01, horizon=300.0) -> bool:
    """The linearised DGD-LB loop exactly as the router samples it: does the load difference grow?

    Two identical backends, one frontend. Every ``interval`` the split moves
    by ``q += -step * interval * slope * D(t - d) / 2`` (the projection of
    ``-step * interval * g``, ``g_1 - g_2 = slope * D`` seen d late); the
    flow difference ``2 demand q`` reaches the backends d later and
    ``D' = -a D + 2 demand q(t - d)``.
    """
    lag, every, n = round(d / dt), round(interval / dt), round(horizon / dt)
    D = np.zeros(n)
    q = np.zeros(n)
    D[0], qk = 1e-3, 0.0
    for t in range(1, n):
        if t % every == 0:
            qk -= step * interval * slope * D[max(t - lag, 0)] / 2.0
        q[t] = qk
        D[t] = D[t - 1] + dt * (-a * D[t - 1] + 2.0 * demand * q[max(t - lag, 0)])
    quarter = n // 4
    return np.abs(D[-quarter:]).max() > np.abs(D[n // 2 : n // 2 + quarter]).max()


@pytest.mark.parametrize("interval", [0.1, 0.25])
def test_ticking_keeps_the_continuous_stability_limit(interval):
    """The sampled loop turns unstable within a few percent of K_crit / (lambda h') with T = 2d, not 2d + interval."""
    a, slope, demand, d = 0.5, 2.0, 2.0, 0.5  # scenarios/dgdlb_step.toml
    limit = critical_gain(a, 2 * d) / (demand * slope)
    assert not _sampled_loop_grows(0.97 * limit, a, slope, demand, d, interval)
    assert _sampled_loop_grows(1.03 * limit, a, slope, demand, d, interval)
    # 2d + interval would put the limit 8% (interval 0.1) to 19% (0.25) lower: refuted above.
    assert critical_gain(a, 2 * d + interval) / (demand * slope) < 0.97 * limit
