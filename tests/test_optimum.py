"""The centralized optimum against independent facts.

* The KKT conditions (docs/model.md section 2), recomputed here from the rate
  families: every used edge of a frontend costs ``2 d_ij + pi_j`` equal to the
  frontend's cheapest connected edge, with ``pi_j = 1/mu_j'(mu_j^{-1}(Lambda_j))``
  plus a capacity price that may be nonzero only at a backend held at its
  capacity. That last clause is how the check is stated for families whose
  marginal cost is flat: a ``constant`` backend costs 0 at the margin right up
  to its capacity, so a frontend that prefers it fills it, and what keeps
  more flow out is the capacity price (the multiplier of ``Lambda_j < c``); a
  ``linear`` backend's cost 1/r does not depend on its flow, so ties between
  such edges are allowed any split.
* A general-purpose solver (SLSQP) from several starts never does better.
* Cases solved by hand.

Tolerances: KKT equalities hold to ``1e-6`` relative (the brief), against a
solver tolerance of ``1e-9``; objective comparisons to ``1e-7`` relative.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize

from lbsim.errors import ScenarioError
from lbsim.optimum import Optimum, kkt_violation, optimum, solve
from lbsim.rates import RATE_FAMILIES, RateFamily, make_rate

pytestmark = pytest.mark.filterwarnings("error")  # any numpy RuntimeWarning fails a test

KKT = 1e-6
USED = 1e-9
KINDS = sorted(RATE_FAMILIES)


# -- random scenarios ----------------------------------------------------------------------
def random_rate(rng: np.random.Generator, kind: str) -> RateFamily:
    c, k = float(rng.uniform(0.5, 5.0)), float(rng.uniform(0.2, 4.0))
    params = {
        "constant": {"c": c},
        "linear": {"r": float(rng.uniform(0.2, 3.0))},
        "servers": {"r": float(rng.uniform(0.2, 3.0)), "k": k},
        "saturating": {"c": c, "k": k},
        "exponential": {"c": c, "k": k},
        # a in (0.9, 1) is left out: optimal flows there can be 1e-10..1e-300 of
        # the demand (see "Limits" in lbsim.optimum and test_steep_power_law_*).
        "power": {"c": c, "a": float(rng.choice([1.0, rng.uniform(0.2, 0.9)]))},
        "batch": {"a": float(rng.uniform(0.01, 0.5)), "b": float(rng.uniform(0.05, 1.0))},
    }[kind]
    return make_rate({"kind": kind, **params})


def nominal_capacity(rate: RateFamily) -> float:
    """The supremum, or for unbounded families the rate at load 4 (a scale for the demand)."""
    return float(rate.supremum) if math.isfinite(rate.supremum) else float(rate.value(4.0))


def random_scenario(seed: int):
    """F in 1..6, B in 1..8, every family, sparse connect, delays with zeros, load 30-90%.

    The demand is feasible by construction: each backend's (nominal) capacity
    is shared equally among the frontends connected to it, and each frontend
    asks for 30-90% of its share.
    """
    rng = np.random.default_rng(seed)
    F, B = int(rng.integers(1, 7)), int(rng.integers(1, 9))
    kinds = [KINDS[(seed + j) % len(KINDS)] if j == 0 else KINDS[int(rng.integers(len(KINDS)))] for j in range(B)]
    rates = [random_rate(rng, kind) for kind in kinds]
    connect = rng.random((F, B)) < rng.uniform(0.3, 1.0)
    for i in range(F):
        if not connect[i].any():
            connect[i, rng.integers(B)] = True
    latency = rng.uniform(0.0, 0.5, (F, B)) * (rng.random((F, B)) < 0.8)
    if rng.random() < 0.2:
        latency[:] = 0.0
    elif rng.random() < 0.2:
        latency = np.round(latency, 1)  # exact ties between edges
    capacity = np.array([nominal_capacity(r) for r in rates])
    share = (connect * (capacity / connect.sum(axis=0).clip(1))[None, :]).sum(axis=1)
    demand = share * rng.uniform(0.3, 0.9, F)
    return rates, demand, latency, connect


def marginal_cost(rate: RateFamily, flow: float) -> float:
    """``1/mu'(mu^{-1}(flow))``, with ``1/inf = 0`` (constant, power at zero load)."""
    slope = float(rate.derivative(rate.inverse(flow)))
    return 0.0 if math.isinf(slope) else 1.0 / slope


def check_kkt(opt: Optimum, rates, demand, latency, connect) -> None:
    """The optimality conditions, recomputed from the rate families."""
    F, B = connect.shape
    p = opt.routing
    assert p.shape == (F, B)
    assert np.all(p >= 0)
    assert np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(p[~connect] == 0)
    flow = demand @ p
    assert np.allclose(opt.flow, flow, rtol=1e-12, atol=1e-15)
    supremum = np.array([r.supremum for r in rates])
    assert np.all(opt.flow < supremum)
    g = np.array([marginal_cost(r, x) for r, x in zip(rates, opt.flow)])
    assert np.allclose(opt.marginal_cost, g, rtol=1e-9, atol=0)
    assert np.allclose(opt.load, [r.inverse(x) for r, x in zip(rates, opt.flow)], rtol=1e-12, atol=0)
    # Complementary slackness: a capacity price only where the backend is full.
    beta = opt.capacity_price
    assert np.all(beta >= 0)
    full = opt.flow >= supremum * (1 - 1e-6)
    assert np.all(beta[~full] == 0)
    cost = np.where(connect, 2 * latency + (g + beta)[None, :], np.inf)
    nu = cost.min(axis=1)
    assert np.allclose(opt.frontend_cost, nu, rtol=1e-12, atol=0)
    scale = np.maximum(nu, 1e-12 * max(nu.max(), 1.0))
    used = p > USED
    excess = np.where(used, (cost - nu[:, None]) / scale[:, None], 0.0)
    assert excess.max() <= KKT, f"used edge above its frontend's cost by {excess.max():.2e}"
    assert kkt_violation(opt, latency, connect) <= KKT
    # The reported objective is the objective.
    total = demand.sum()
    network = (demand[:, None] * p * 2 * latency).sum() / total
    assert opt.mean_network == pytest.approx(network, rel=1e-12, abs=1e-15)
    assert opt.mean_sojourn == pytest.approx(opt.load.sum() / total, rel=1e-12, abs=1e-15)
    assert opt.mean_latency == pytest.approx(network + opt.load.sum() / total, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seed", range(160))
def test_kkt_conditions_on_random_scenarios(seed: int) -> None:
    rates, demand, latency, connect = random_scenario(seed)
    opt = solve(rates, demand, latency, connect)
    check_kkt(opt, rates, demand, latency, connect)


def test_random_scenarios_cover_every_family() -> None:
    seen = {r.kind for seed in range(160) for r in random_scenario(seed)[0]}
    assert seen == set(KINDS)


# -- an independent solver -----------------------------------------------------------------
def objective(rates, demand, latency, connect, flows: np.ndarray) -> float:
    f = np.zeros(connect.shape)
    f[connect] = flows
    load = sum(float(r.inverse(x)) for r, x in zip(rates, f.sum(axis=0)))
    return float(((f * 2 * latency).sum() + load) / demand.sum())


def slsqp_best(rates, demand, latency, connect, starts: int, rng: np.random.Generator) -> float:
    """The best SLSQP optimum over the flows on the edges, from several feasible starts.

    Start 0 splits each frontend's demand in proportion to its share of each
    backend's nominal capacity (how :func:`random_scenario` makes the demand
    feasible); the others mix it with random splits.
    """
    ei, ej = np.nonzero(connect)
    F, B = connect.shape
    cap = np.array([r.supremum for r in rates]) * (1 - 1e-9)
    finite = np.flatnonzero(np.isfinite(cap))
    inside = np.where(np.isfinite(cap), cap * (1 - 1e-12), np.inf)
    total = demand.sum()

    def fun(x):
        # SLSQP may probe beyond a capacity, where the load is infinite: clip
        # to keep its line search finite; the constraint keeps the answer inside.
        flow = np.minimum(np.bincount(ej, weights=x, minlength=B), inside)
        return ((x * 2 * latency[ei, ej]).sum() + sum(float(r.inverse(y)) for r, y in zip(rates, flow))) / total

    def jac(x):
        flow = np.minimum(np.bincount(ej, weights=x, minlength=B), inside)
        g = np.array([marginal_cost(r, y) for r, y in zip(rates, flow)])
        return (2 * latency[ei, ej] + g[ej]) / total

    rows = np.zeros((F, ei.size))
    rows[ei, np.arange(ei.size)] = 1.0
    cols = np.zeros((finite.size, ei.size))
    for k, j in enumerate(finite):
        cols[k, ej == j] = 1.0
    constraints = [{"type": "eq", "fun": lambda x: rows @ x - demand, "jac": lambda x: rows}]
    if finite.size:
        constraints.append({"type": "ineq", "fun": lambda x: cap[finite] - cols @ x, "jac": lambda x: -cols})
    nominal = np.array([nominal_capacity(r) for r in rates])
    share = connect * (nominal / connect.sum(axis=0).clip(1))[None, :]
    base = (share / share.sum(axis=1, keepdims=True) * demand[:, None])[ei, ej]
    best = math.inf
    for start in range(starts):
        x0, mix = base, 0.5
        while start and mix > 1e-3:
            split = np.zeros((F, B))
            split[ei, ej] = rng.dirichlet(np.ones(ei.size))
            split /= split.sum(axis=1, keepdims=True)
            x0 = (1 - mix) * base + mix * (split * demand[:, None])[ei, ej]
            if not finite.size or np.all(cols @ x0 < cap[finite]):
                break
            mix /= 2
        res = scipy.optimize.minimize(fun, x0, jac=jac, method="SLSQP", bounds=[(0, None)] * ei.size,
                                      constraints=constraints, options={"maxiter": 1000, "ftol": 1e-15})
        x = np.maximum(res.x, 0.0)
        below = not finite.size or np.all(cols @ x < cap[finite] / (1 - 1e-9))
        if np.allclose(rows @ x, demand, rtol=1e-9) and below:
            best = min(best, objective(rates, demand, latency, connect, x))
    return best


@pytest.mark.parametrize("seed", range(24))
def test_no_worse_than_slsqp_from_several_starts(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    F, B = int(rng.integers(1, 4)), int(rng.integers(2, 5))
    rates = [random_rate(rng, KINDS[(seed + j) % len(KINDS)]) for j in range(B)]
    connect = rng.random((F, B)) < 0.8
    connect[np.arange(F), rng.integers(B, size=F)] = True
    latency = rng.uniform(0.0, 0.3, (F, B))
    capacity = np.array([nominal_capacity(r) for r in rates])
    share = (connect * (capacity / connect.sum(axis=0).clip(1))[None, :]).sum(axis=1)
    demand = share * rng.uniform(0.3, 0.7, F)
    with np.errstate(all="ignore"):
        theirs = slsqp_best(rates, demand, latency, connect, starts=4, rng=rng)
    ours = solve(rates, demand, latency, connect).mean_latency
    assert math.isfinite(theirs)
    assert ours <= theirs * (1 + 1e-7) + 1e-12


# -- cases solved by hand --------------------------------------------------------------------
def test_identical_saturating_backends_split_equally() -> None:
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    opt = solve([sat, sat], np.array([3.0]), np.zeros((1, 2)), np.ones((1, 2), bool))
    assert opt.routing[0] == pytest.approx([0.5, 0.5], abs=1e-12)
    # mu^{-1}(y) = k y / (c - y) = 2 * 1.5 / 2.5 = 1.2 per backend; mean latency 2.4 / 3.
    assert opt.load == pytest.approx([1.2, 1.2], rel=1e-12)
    assert opt.mean_latency == pytest.approx(0.8, rel=1e-12)
    # marginal cost k c / (c - y)^2 = 8 / 6.25
    assert opt.marginal_cost == pytest.approx([1.28, 1.28], rel=1e-12)


def test_saturating_backends_with_a_delay_on_one() -> None:
    # Built backwards: flows 2.5 and 0.5 (total 3) equalise the marginal costs
    # 8/(4-y)^2 iff 2 d = 8/1.5^2 - 8/3.5^2.
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    d = (8 / 1.5**2 - 8 / 3.5**2) / 2
    opt = solve([sat, sat], np.array([3.0]), np.array([[0.0, d]]), np.ones((1, 2), bool))
    assert opt.flow == pytest.approx([2.5, 0.5], rel=1e-9)
    assert opt.frontend_cost == pytest.approx([8 / 1.5**2], rel=1e-9)


def test_linear_backends_take_everything_on_the_cheapest_edge() -> None:
    # Cost 2 d + 1/r: 0.6 + 1 = 1.6 against 0 + 1.25: all to the second; latency 1/r.
    rates = [make_rate({"kind": "linear", "r": 1.0}), make_rate({"kind": "linear", "r": 0.8})]
    opt = solve(rates, np.array([2.0]), np.array([[0.3, 0.0]]), np.ones((1, 2), bool))
    assert opt.routing[0] == pytest.approx([0.0, 1.0], abs=1e-9)
    assert opt.mean_latency == pytest.approx(1.25, rel=1e-9)


def test_square_root_backends_share_in_proportion_to_c_squared() -> None:
    # mu = c sqrt(x): mu^{-1}(y) = (y/c)^2, marginal cost 2 y / c^2: equal when y_j ~ c_j^2.
    rates = [make_rate({"kind": "power", "c": 1.0, "a": 0.5}), make_rate({"kind": "power", "c": 2.0, "a": 0.5})]
    opt = solve(rates, np.array([5.0]), np.zeros((1, 2)), np.ones((1, 2), bool))
    assert opt.flow == pytest.approx([1.0, 4.0], rel=1e-9)
    assert opt.marginal_cost == pytest.approx([2.0, 2.0], rel=1e-9)


def test_exponential_backends_leave_equal_headroom() -> None:
    # marginal cost k/(c - y): with equal k, equal when c1 - y1 = c2 - y2.
    rates = [make_rate({"kind": "exponential", "c": c, "k": 1.0}) for c in (3.0, 5.0)]
    opt = solve(rates, np.array([4.0]), np.zeros((1, 2)), np.ones((1, 2), bool))
    assert opt.flow == pytest.approx([1.0, 3.0], rel=1e-9)


def test_batch_backend_against_its_closed_form() -> None:
    # mu = x/(a + b x): marginal cost a/(1 - b y)^2; next to a linear backend of
    # cost 1/r = 0.5 (no delay) the batch backend takes y with a/(1-by)^2 = 0.5.
    a, b = 0.125, 0.5
    rates = [make_rate({"kind": "batch", "a": a, "b": b}), make_rate({"kind": "linear", "r": 2.0})]
    opt = solve(rates, np.array([3.0]), np.zeros((1, 2)), np.ones((1, 2), bool))
    y = (1 - math.sqrt(a / 0.5)) / b
    assert opt.flow == pytest.approx([y, 3.0 - y], rel=1e-9)


def test_constant_backend_fills_to_capacity_with_a_capacity_price() -> None:
    # A constant backend costs nothing at the margin until its capacity: the
    # frontend fills it (up to the margin) and sends the rest to the linear
    # backend, whose edge costs 2*0.1 + 1/1 = 1.2: the capacity price.
    rates = [make_rate({"kind": "constant", "c": 2.0}), make_rate({"kind": "linear", "r": 1.0})]
    opt = solve(rates, np.array([3.0]), np.array([[0.0, 0.1]]), np.ones((1, 2), bool))
    assert opt.flow[0] == pytest.approx(2.0, rel=1e-8)
    assert opt.flow[0] < 2.0
    assert opt.capacity_price == pytest.approx([1.2, 0.0], rel=1e-9)
    assert opt.marginal_cost[0] == 0.0
    assert opt.mean_latency == pytest.approx((1.0 * 0.2 + 1.0) / 3.0, rel=1e-8)


def test_servers_backend_is_flat_then_full() -> None:
    # servers: marginal cost 1/r up to r k; against a saturating backend with
    # 8/(4-y)^2: equal at y = 4 - sqrt(8) when the servers have room.
    rates = [make_rate({"kind": "servers", "r": 1.0, "k": 2.0}), make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})]
    opt = solve(rates, np.array([3.0]), np.zeros((1, 2)), np.ones((1, 2), bool))
    assert opt.flow[1] == pytest.approx(4 - math.sqrt(8), rel=1e-9)


def test_far_frontends_keep_to_their_own_backend() -> None:
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    latency = np.array([[0.0, 5.0], [5.0, 0.0]])
    opt = solve([sat, sat], np.array([1.0, 2.0]), latency, np.ones((2, 2), bool))
    assert opt.routing == pytest.approx(np.eye(2), abs=1e-12)
    assert opt.mean_network == pytest.approx(0.0, abs=1e-15)


def test_steep_power_law_gets_its_tiny_flow() -> None:
    # mu = c x^a, a = 0.99: marginal cost g(y) = (y/c)^((1-a)/a) / (a c), 0 at 0.
    # Next to a linear backend of cost 1/r = 0.5 its optimal flow solves
    # g(y) = 0.5: y = c (0.5 a c)^(a/(1-a)) = 0.495^99, about 1e-30 of the
    # demand, below any row sum's rounding: it is set from the price.
    a, c = 0.99, 1.0
    rates = [make_rate({"kind": "linear", "r": 2.0}), make_rate({"kind": "power", "c": c, "a": a})]
    opt = solve(rates, np.array([1.0]), np.zeros((1, 2)), np.ones((1, 2), bool))
    assert opt.flow[1] == pytest.approx(c * (0.5 * a * c) ** (a / (1 - a)), rel=1e-6, abs=0)
    assert opt.marginal_cost == pytest.approx([0.5, 0.5], rel=1e-9)
    assert kkt_violation(opt, np.zeros((1, 2)), np.ones((1, 2), bool)) <= KKT


# -- ties, degenerate and edge cases -----------------------------------------------------------
@pytest.mark.parametrize("spec", [{"kind": "linear", "r": 1.0}, {"kind": "constant", "c": 2.0}])
def test_exact_ties_are_split_evenly_and_deterministically(spec) -> None:
    rates = [make_rate(spec)] * 3
    args = (rates, np.array([1.5, 1.2]), np.zeros((2, 3)), np.ones((2, 3), bool))
    first, second = solve(*args), solve(*args)
    assert np.array_equal(first.routing, second.routing)
    assert first.routing == pytest.approx(np.full((2, 3), 1 / 3), abs=1e-9)


def test_zero_demand_frontend_routes_to_its_cheapest_edge() -> None:
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    opt = solve([sat, sat], np.array([3.0, 0.0]), np.array([[0.0, 0.1], [0.05, 0.0]]), np.ones((2, 2), bool))
    assert opt.routing.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert np.isclose(opt.routing[1] @ (2 * np.array([0.05, 0.0]) + opt.price), opt.frontend_cost[1])


def test_near_saturation_stays_finite() -> None:
    # 99.99% of the capacity: marginal rates near 0, marginal costs near 1e8.
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    rates, demand, latency, connect = [sat, sat], np.array([7.9992]), np.array([[0.0, 0.01]]), np.ones((1, 2), bool)
    opt = solve(rates, demand, latency, connect)
    check_kkt(opt, rates, demand, latency, connect)
    assert np.all(np.isfinite(opt.marginal_cost)) and opt.marginal_cost.max() > 1e6


def test_infeasible_demand_names_the_frontends_and_backends() -> None:
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    lin = make_rate({"kind": "linear", "r": 1.0})
    connect = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]], bool)
    with pytest.raises(ScenarioError) as err:
        solve([sat, sat, lin], np.array([3.0, 1.5, 30.0]), np.zeros((3, 3)), connect,
              frontend_labels=["eu", "us", "asia"], backend_labels=["a", "b", "c"])
    assert err.value.key == "frontends"
    assert "[eu, us]" in err.value.message and "asia" not in err.value.message
    assert "[a]" in err.value.message


@pytest.mark.parametrize("demand", [8.0, 9.0])
def test_demand_at_or_above_capacity_is_infeasible(demand: float) -> None:
    # Lambda_j < sup mu_j is strict: demand equal to the capacity cannot be served.
    const = make_rate({"kind": "constant", "c": 4.0})
    with pytest.raises(ScenarioError, match="frontends"):
        solve([const, const], np.array([demand]), np.zeros((1, 2)), np.ones((1, 2), bool))


def test_bad_shapes_name_the_key() -> None:
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    with pytest.raises(ScenarioError) as err:
        solve([sat], np.array([1.0]), np.zeros((1, 2)), np.ones((1, 1), bool))
    assert err.value.key == "network.delay"


# -- the scenario wrapper and the JSON form ----------------------------------------------------
def test_optimum_reads_the_scenario_and_is_json_friendly() -> None:
    sat = make_rate({"kind": "saturating", "c": 4.0, "k": 2.0})
    rates = [sat, make_rate({"kind": "exponential", "c": 3.0, "k": 1.0})]
    scenario = SimpleNamespace(
        demand=np.array([1.0, 2.0]),
        delay=np.array([[0.01, 0.08], [0.08, 0.01]]),
        connect=np.ones((2, 2), bool),
        service_rates=rates,
        rate_functions=lambda needed_by: rates,
    )
    opt = optimum(scenario)
    data = json.loads(json.dumps(opt.to_dict()))
    keys = {"routing", "load", "flow", "marginal_cost", "capacity_price", "frontend_cost", "mean_latency", "seconds"}
    assert keys <= set(data)
    assert np.allclose(data["routing"], opt.routing)
    assert data["mean_latency"] == opt.mean_latency
    check_kkt(opt, scenario.service_rates, scenario.demand, scenario.delay, scenario.connect)


@pytest.mark.parametrize("wrong", [{"frontends": []}, "scenarios/two_regions.toml", 3])
def test_optimum_names_a_wrong_scenario_argument(wrong):
    with pytest.raises(ScenarioError) as err:
        optimum(wrong)
    assert err.value.key == "scenario"
