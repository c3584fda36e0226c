"""Rate families against independent facts: finite differences, round trips, bisection, concavity.

Tolerances are multiples of the machine epsilon scaled by the conditioning
of the quantity checked (e.g. an inverse loses ``y/mu'(x)`` in absolute
precision per relative error in ``y``), so they hold for any parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from pydantic import Field

from lbsim.errors import ScenarioError
from lbsim.rates import RATE_FAMILIES, RateFamily, make_rate, register_rate

pytestmark = pytest.mark.filterwarnings("error")  # any numpy RuntimeWarning fails the test

EPS = float(np.finfo(float).eps)
# Each closed form is a handful of correctly rounded operations (or libm calls
# within 1 ulp): a few ulps of error, times the conditioning of the result.
ULPS = 16

# Loads where mu' jumps: finite differences do not apply there.
KINKS: dict[str, Callable[[RateFamily], list[float]]] = {"servers": lambda rate: [rate.k]}
# Families whose value jumps (at 0): mu(mu^{-1}(y)) = y cannot hold.
JUMPS = {"constant"}

# Every registered family, on each parameter set it declares in ``examples``:
# a new family is checked by every test below without being named here.
CASES = [
    pytest.param(make_rate({"kind": kind, **params}), id=f"{kind}-" + "-".join(f"{k}{v:g}" for k, v in params.items()))
    for kind, family in RATE_FAMILIES.items()
    for params in family.examples
]
EDGE = np.array([0.0, 5e-324, 1e-300, 1e-8, 0.5, 1.0, 3.0, 1e8, 1e300, np.finfo(float).max, np.inf])


def scale(rate: RateFamily) -> float:
    """A natural load scale: where half the capacity is reached, else 1."""
    half = rate.inverse(rate.supremum / 2) if np.isfinite(rate.supremum) else 1.0
    return float(half) if 0 < half < np.inf else 1.0


def grid(rate: RateFamily) -> np.ndarray:
    """Loads over six decades around the scale; 30 points so that 1*scale (a kink) is not one."""
    return scale(rate) * np.logspace(-3, 3, 30)


def curvature(rate: RateFamily, x: np.ndarray) -> np.ndarray:
    """``|mu''(x)|`` to a few digits by a forward difference (only sizes tolerances); huge across a kink."""
    h = 1e-4 * (x + scale(rate))
    return np.abs(rate.derivative(x) - rate.derivative(x + h)) / h


def x_tolerance(rate: RateFamily, x: np.ndarray) -> np.ndarray:
    """Error of ``(mu')^{-1}``: mu' has a few ulps of relative error, which moves x by ``mu'/|mu''|``."""
    slope, curv = rate.derivative(x), curvature(rate, x)
    usable = np.isfinite(slope) & np.isfinite(curv) & (curv > 0)  # else x is at a jump of mu': exact
    cond = np.divide(slope, curv, out=np.zeros_like(x), where=usable)
    return 4 * ULPS * EPS * (x + cond)


@pytest.mark.parametrize("family", RATE_FAMILIES.values(), ids=RATE_FAMILIES.keys())
def test_every_registered_family_declares_examples(family: type[RateFamily]) -> None:
    assert family.examples, f"{family.kind}: declare examples = ({{...}}, ...) on the class"
    for params in family.examples:
        assert make_rate({"kind": family.kind, **params}).spec() == {"kind": family.kind, **params}


@pytest.mark.parametrize("rate", CASES)
def test_derivative_matches_central_differences(rate: RateFamily) -> None:
    x = grid(rate)
    x = x[[all(abs(x_ - kink) > 1e-3 * x_ for kink in KINKS.get(rate.kind, lambda r: [])(rate)) for x_ in x]]
    h = x * EPS ** (1 / 3)  # balances truncation (h**2) against rounding (eps/h)
    central = (rate.value(x + h) - rate.value(x - h)) / (2 * h)
    central_2h = (rate.value(x + 2 * h) - rate.value(x - 2 * h)) / (4 * h)
    # |D(h) - D(2h)| is three times D(h)'s truncation error (Richardson), plus
    # the rounding of mu(x +- h), a few ulps of mu over 2h.
    tolerance = np.abs(central - central_2h) + ULPS * EPS * rate.value(x) / h
    np.testing.assert_array_less(np.abs(rate.derivative(x) - central), tolerance + ULPS * EPS * rate.derivative(x))


def test_right_derivatives_at_kinks() -> None:
    servers = make_rate({"kind": "servers", "r": 2.0, "k": 3.0})
    assert servers.derivative(3.0) == 0.0 and servers.derivative(np.nextafter(3.0, 0)) == 2.0
    assert make_rate({"kind": "constant", "c": 1.0}).derivative(0.0) == np.inf
    assert make_rate({"kind": "power", "c": 1.0, "a": 0.5}).derivative(0.0) == np.inf
    assert make_rate({"kind": "power", "c": 1.5, "a": 1.0}).derivative(0.0) == 1.5
    assert make_rate({"kind": "saturating", "c": 4.0, "k": 2.0}).derivative(0.0) == 2.0


@pytest.mark.parametrize("rate", CASES)
def test_inverse_round_trips(rate: RateFamily) -> None:
    x = grid(rate)
    y = rate.value(x)
    below = y < rate.supremum  # at the supremum there is no steady state
    slope = rate.derivative(x[below])
    # A relative error eps in y moves x by eps*y/mu'(x).
    tolerance = ULPS * EPS * (x[below] + y[below] / slope)
    np.testing.assert_array_less(np.abs(rate.inverse(y[below]) - x[below]), tolerance + 1e-300)
    assert rate.inverse(0.0) == 0.0 and rate.value(0.0) == 0.0
    if rate.kind not in JUMPS:
        # mu is continuous and x*mu'(x) <= mu(x) (concave, mu(0) = 0): y comes back to a few ulps.
        np.testing.assert_allclose(rate.value(rate.inverse(y[below])), y[below], rtol=ULPS * EPS, atol=0)


def test_constant_inverse_is_zero_below_capacity() -> None:
    rate = make_rate({"kind": "constant", "c": 3.0})
    assert np.all(rate.inverse([0.0, 1.0, 2.999]) == 0.0)
    assert np.all(rate.inverse([3.0, 4.0, np.inf]) == np.inf)


@pytest.mark.parametrize("rate", CASES)
def test_inverse_is_infinite_at_and_beyond_supremum(rate: RateFamily) -> None:
    sup = rate.supremum
    beyond = [sup, 2 * sup, np.inf] if np.isfinite(sup) else [np.inf]
    assert np.all(rate.inverse(beyond) == np.inf)
    assert np.all(rate.numeric_inverse(beyond) == np.inf)


@pytest.mark.parametrize("rate", CASES)
def test_inverse_matches_bisection(rate: RateFamily) -> None:
    x = grid(rate)
    y = rate.value(x)
    y = np.concatenate([[0.0], y[y < rate.supremum]])
    exact, numeric = rate.inverse(y), rate.numeric_inverse(y)
    slope = rate.derivative(exact)
    tolerance = ULPS * EPS * (exact + np.divide(y, slope, out=np.zeros_like(y), where=slope > 0))
    np.testing.assert_array_less(np.abs(exact - numeric), tolerance + 1e-300)


@pytest.mark.parametrize("rate", CASES)
def test_concave_nondecreasing_and_positive(rate: RateFamily) -> None:
    x = np.concatenate([[0.0], grid(rate), [1e6 * scale(rate)]])
    y = rate.value(x)
    assert np.all(y[1:] > 0)
    slack = 4 * EPS * y  # each value carries a couple of ulps of rounding
    assert np.all(np.diff(y) >= -slack[1:])
    a, b = np.meshgrid(x, x)
    mid = rate.value((a + b) / 2)
    chord = (rate.value(a) + rate.value(b)) / 2
    assert np.all(mid >= chord - 4 * EPS * np.maximum(rate.value(a), rate.value(b)))
    slopes = rate.derivative(x)
    assert np.all(np.diff(slopes) <= 4 * EPS * slopes[1:])  # concave: mu' nonincreasing


@pytest.mark.parametrize("rate", CASES)
def test_supremum_is_the_limit(rate: RateFamily) -> None:
    x = np.concatenate([grid(rate), [1e6 * scale(rate)]])
    y = rate.value(x)
    assert np.all(y <= rate.supremum)
    assert rate.value(np.inf) == rate.supremum
    huge = rate.value(1e300)
    if np.isfinite(rate.supremum):
        assert huge == pytest.approx(rate.supremum, rel=4 * EPS)
        assert np.all(np.diff(rate.supremum - y) <= 4 * EPS * rate.supremum)  # the gap closes
    else:
        assert huge > 1e20 * y.max()  # unbounded: grows by many decades over 1e300


@pytest.mark.parametrize("rate", CASES)
def test_derivative_inverse_matches_bisection_and_inverts_derivative(rate: RateFamily) -> None:
    x = grid(rate)
    slopes = rate.derivative(x)
    s = np.concatenate([slopes, [-1.0, 0.0, 1e-300, 1e300, np.inf, float(rate.derivative(0.0))]])
    exact, numeric = rate.derivative_inverse(s), rate.numeric_derivative_inverse(s)
    infinite = np.isinf(exact)
    assert np.array_equal(infinite, np.isinf(numeric))
    finite = ~infinite
    np.testing.assert_array_less(np.abs(exact[finite] - numeric[finite]), x_tolerance(rate, exact[finite]) + 1e-300)

    # Definition: mu' >= s just below the answer, mu' <= s just above it.
    interior = ~infinite & (exact > 0)
    x_star, s_star = exact[interior], s[interior]
    tol = x_tolerance(rate, x_star)
    assert np.all(rate.derivative(np.maximum(x_star - tol, 0.0)) >= s_star * (1 - ULPS * EPS))
    assert np.all(rate.derivative(x_star + tol) <= s_star * (1 + ULPS * EPS))
    if rate.kind not in KINKS:
        # mu' is continuous: it equals s there, to its own error plus |mu''| times x's.
        allowed = ULPS * EPS * s_star + curvature(rate, x_star) * tol
        np.testing.assert_array_less(np.abs(rate.derivative(x_star) - s_star), allowed + 1e-300)

    # Out of range: the marginal rate never falls to s, or is below s from the start.
    floor, top = float(rate.derivative(np.inf)), float(rate.derivative(0.0))
    assert np.all(rate.derivative_inverse([floor, floor - 1.0]) == np.inf)
    assert np.all(rate.derivative_inverse([2 * top, np.inf]) == 0.0)


@pytest.mark.parametrize("rate", CASES)
def test_vectorised_equals_elementwise(rate: RateFamily) -> None:
    sup = rate.supremum
    inputs = np.concatenate([EDGE, [sup * (1 - EPS), sup, 2 * sup]]) if np.isfinite(sup) else EDGE
    names = ["value", "derivative", "inverse", "derivative_inverse", "numeric_inverse", "numeric_derivative_inverse"]
    for method in (getattr(rate, name) for name in names):
        out = method(inputs)
        assert isinstance(out, np.ndarray) and out.shape == inputs.shape, method.__name__
        assert not np.isnan(out).any(), method.__name__
        scalars = [method(float(v)) for v in inputs]
        assert all(isinstance(v, np.float64) and np.ndim(v) == 0 for v in scalars)
        assert np.array_equal(out, scalars), method.__name__
        assert method(inputs[:10].reshape(2, 5)).shape == (2, 5)
        assert method(list(inputs[:3])).shape == (3,)


def test_families_agree_where_they_coincide() -> None:
    """batch(a, b) is saturating(c = 1/b, k = a/b); power with a = 1 is linear."""
    x = np.logspace(-3, 3, 13)
    batch = make_rate({"kind": "batch", "a": 0.02, "b": 0.001})
    saturating = make_rate({"kind": "saturating", "c": 1e3, "k": 20.0})
    for method, probe in [("value", x), ("derivative", x), ("inverse", x), ("derivative_inverse", batch.derivative(x))]:
        np.testing.assert_allclose(getattr(batch, method)(probe), getattr(saturating, method)(probe), rtol=1e-12)
    power, linear = make_rate({"kind": "power", "c": 2.0, "a": 1.0}), make_rate({"kind": "linear", "r": 2.0})
    for method, probe in [("value", x), ("derivative", x), ("inverse", x), ("derivative_inverse", [1.0, 2.0, 3.0])]:
        np.testing.assert_array_equal(getattr(power, method)(probe), getattr(linear, method)(probe))


# --------------------------------------------------------------------------
# make_rate, describe, spec
# --------------------------------------------------------------------------


def test_make_rate_builds_validated_family() -> None:
    rate = make_rate({"kind": "saturating", "c": 4.0, "k": 2})
    assert (rate.kind, rate.c, rate.k) == ("saturating", 4.0, 2.0)
    assert rate.describe() == "saturating(c=4, k=2): c*x/(x+k)"
    assert make_rate(rate.spec()) == rate
    assert make_rate(rate) is rate


@pytest.mark.parametrize(
    ("spec", "subkey", "message"),
    [
        ({"kind": "saturatng", "c": 4.0}, ".kind", "unknown rate family 'saturatng' (did you mean 'saturating'?)"),
        ({"c": 4.0}, ".kind", f"missing (one of: {', '.join(sorted(RATE_FAMILIES))})"),
        ({"kind": "saturating", "c": -2, "k": 2.0}, ".c", "must be > 0, got -2"),
        ({"kind": "saturating", "c": 4.0, "kk": 2.0}, ".kk", "unknown saturating parameter 'kk' (did you mean 'k'?)"),
        ({"kind": "saturating", "c": 4.0}, ".k", "missing (saturating needs c, k)"),
        ({"kind": "power", "c": 1.0, "a": 1.5}, ".a", "must be <= 1, got 1.5"),
        ({"kind": "batch", "a": "fast", "b": 1.0}, ".a", "must be a number, got 'fast'"),
        ({"kind": "linear", "r": True}, ".r", "must be a number, got True"),
        ({"kind": "constant", "c": float("inf")}, ".c", "must be finite, got inf"),
        ("saturating", "", 'must be a table like { kind = "saturating", c = 4.0, k = 2.0 }, got \'saturating\''),
    ],
)
def test_make_rate_errors_name_the_key(spec: object, subkey: str, message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        make_rate(spec, key="backends[0].service")  # type: ignore[arg-type]
    assert (error.value.key, error.value.message) == ("backends[0].service" + subkey, message)
    assert "\n" not in str(error.value)


class SoftSaturating(RateFamily):
    """``mu(x) = c*x/sqrt(x**2 + k**2)``: no closed-form inverses given, so bisection is used."""

    kind = "softsat"
    formula = "c*x/sqrt(x**2+k**2)"
    c: float = Field(gt=0, description="capacity")
    k: float = Field(gt=0, description="load scale")

    @property
    def supremum(self) -> float:
        return self.c

    def _value(self, x: np.ndarray) -> np.ndarray:
        return np.where(np.isinf(x), self.c, self.c * x / np.hypot(x, self.k))

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        return self.c * (self.k / np.hypot(x, self.k)) ** 2 / np.hypot(x, self.k)


@pytest.fixture
def softsat() -> Iterator[type[RateFamily]]:
    register_rate(SoftSaturating)
    yield SoftSaturating
    del RATE_FAMILIES["softsat"]


def test_registered_family_is_usable(softsat: type[RateFamily]) -> None:
    rate = make_rate({"kind": "softsat", "c": 2.0, "k": 1.0})
    assert isinstance(rate, softsat)
    y = np.array([0.0, 0.5, 1.0, 1.9])
    np.testing.assert_allclose(rate.value(rate.inverse(y)), y, rtol=ULPS * EPS)
    # mu'(x) = c*k**2/(x**2+k**2)**1.5 = s  <=>  x = k*sqrt((c/(k*s))**(2/3) - 1)
    s = np.array([0.1, 1.0, 1.9])
    np.testing.assert_allclose(rate.derivative_inverse(s), np.sqrt((2.0 / s) ** (2 / 3) - 1), rtol=1e-12)
    assert rate.derivative_inverse(3.0) == 0.0 and rate.derivative_inverse(0.0) == np.inf
    with pytest.raises(ScenarioError, match="did you mean 'softsat'"):
        make_rate({"kind": "softsatt", "c": 1.0, "k": 1.0})
    # a kind belongs to one family (registering the same class again is harmless: a module reload)
    register_rate(softsat)
    impostor = type("Impostor", (softsat,), {})
    with pytest.raises(ValueError, match="already registered"):
        register_rate(impostor)
