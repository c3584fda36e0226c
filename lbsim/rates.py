"""Rate families: a backend's total service rate ``mu(x)`` as a function of its load.

``x >= 0`` is the backend's load in work units and ``mu(x)`` its service rate
in work units per second: concave, nondecreasing, ``mu(x) > 0`` for ``x > 0``
(docs/model.md section 1). Each family knows its value, derivative (the marginal
rate), inverse (the steady-state load ``mu^{-1}(Lambda)`` at arrival rate
``Lambda``), supremum (the capacity) and the inverse of its derivative (the
load at which the marginal rate falls to a price, used by the optimum).

A new family is one class plus one registry line::

    @register_rate
    class SoftSaturating(RateFamily):
        kind = "softsat"
        formula = "c*x/sqrt(x**2+k**2)"
        c: float = Field(gt=0, description="capacity (work units/s)")
        k: float = Field(gt=0, description="load scale (work units)")
        examples = ({"c": 2.0, "k": 1.0}, {"c": 0.5, "k": 1e-3})  # checked by tests/test_rates.py
        supremum = property(lambda self: self.c)
        def _value(self, x): ...          # on float arrays
        def _derivative(self, x): ...     # inverses default to bisection

All methods are vectorised: they take a float or an array and return a
``numpy.float64`` or an array of the same shape, and never emit numpy
floating-point warnings (limits such as ``0**-1`` and ``inf/inf`` are resolved
explicitly).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from .registry import Registry, field_rows, first_paragraph

ArrayLike = npt.ArrayLike
FloatOrArray = np.float64 | np.ndarray

_INF_BITS = np.float64(np.inf).view(np.int64)


def _bisect_boundary(
    predicate: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Bracket ``sup{x >= 0 : predicate(x)}`` for a predicate true on an initial interval.

    Returns adjacent floats ``(lo, hi)`` with ``predicate(lo)`` (or ``lo = 0``)
    and not ``predicate(hi)`` (or ``hi = inf``). Bisects on the bit patterns of
    the floats, which are ordered like the values for ``x >= 0``: 63 steps
    reach adjacent floats whatever the magnitude (1e-300 or 1e300), and the
    endpoints 0 and inf are never evaluated.
    """
    lo = np.zeros(shape, np.int64)
    hi = np.full(shape, _INF_BITS, np.int64)
    for _ in range(63):  # 0x7FF0000000000000 (inf) < 2**63
        mid = lo + (hi - lo) // 2
        inside = np.asarray(predicate(mid.view(np.float64)), dtype=bool)
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return lo.view(np.float64), hi.view(np.float64)


class RateFamily(BaseModel):
    """A concave, nondecreasing service rate ``mu(x)`` with ``mu(x) > 0`` for ``x > 0``.

    Subclasses set ``kind`` and ``formula``, declare their parameters as
    validated fields named by the formula's letters, and implement ``_value``,
    ``_derivative`` and ``supremum`` on float arrays. ``_inverse`` and
    ``_derivative_inverse`` default to bisection; override them when a closed
    form exists. ``examples`` lists parameter sets that exercise the family (a
    typical one and edge ones: tiny or huge scales, a limiting exponent); the
    test suite runs every registered family through its checks on each.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    kind: ClassVar[str]
    formula: ClassVar[str]
    examples: ClassVar[tuple[dict[str, Any], ...]] = ()

    # -- public, vectorised ---------------------------------------------------
    def value(self, x: ArrayLike) -> FloatOrArray:
        """``mu(x)``: the backend's total service rate at load ``x``."""
        return _apply(self._value, x)

    def derivative(self, x: ArrayLike) -> FloatOrArray:
        """``mu'(x)``, the marginal rate (right derivative at kinks; may be +inf at 0)."""
        return _apply(self._derivative, x)

    def inverse(self, y: ArrayLike) -> FloatOrArray:
        """``mu^{-1}(y) = inf{x >= 0 : mu(x) >= y}`` for ``0 <= y < sup mu``; +inf for ``y >= sup mu``.

        At arrival rate ``y`` this is the steady-state load; +inf means no steady state.
        """
        return _apply(self._inverse, y)

    def derivative_inverse(self, s: ArrayLike) -> FloatOrArray:
        """``sup{x >= 0 : mu'(x) >= s}``: the load at which the marginal rate falls to ``s``.

        0 if ``s > mu'(0)``; +inf if ``s <= inf_x mu'(x)`` (the marginal rate never falls to ``s``).
        """
        return _apply(self._derivative_inverse, s)

    def numeric_inverse(self, y: ArrayLike) -> FloatOrArray:
        """:meth:`inverse` by bisection on ``mu`` (the default for families without a closed form)."""
        return _apply(self._numeric_inverse, y)

    def numeric_derivative_inverse(self, s: ArrayLike) -> FloatOrArray:
        """:meth:`derivative_inverse` by bisection on ``mu'`` (the default without a closed form)."""
        return _apply(self._numeric_derivative_inverse, s)

    @property
    @abstractmethod
    def supremum(self) -> float:
        """``sup_x mu(x)``: the backend's capacity (may be +inf)."""

    def describe(self) -> str:
        """One line such as ``saturating(c=4, k=2): c*x/(x+k)``."""
        params = ", ".join(f"{name}={getattr(self, name):g}" for name in type(self).model_fields)
        return f"{self.kind}({params}): {self.formula}"

    def spec(self) -> dict[str, Any]:
        """The TOML table this family is built from: ``make_rate(rate.spec()) == rate``."""
        return {"kind": self.kind, **self.model_dump()}

    # -- implemented by families, on float arrays, warnings suppressed ---------
    @abstractmethod
    def _value(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _derivative(self, x: np.ndarray) -> np.ndarray: ...

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return self._numeric_inverse(y)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return self._numeric_derivative_inverse(s)

    def _numeric_inverse(self, y: np.ndarray) -> np.ndarray:
        lo, hi = _bisect_boundary(lambda x: self._value(x) < y, y.shape)
        # lo, not hi: where mu jumps (constant at 0) the infimum is not attained.
        # At y >= sup there is no steady state even if mu attains its supremum.
        return np.where((y >= self.supremum) | np.isinf(hi), np.inf, lo)

    def _numeric_derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        lo, hi = _bisect_boundary(lambda x: self._derivative(x) >= s, s.shape)
        return np.where(np.isinf(hi), np.inf, lo)


def _apply(method: Callable[[np.ndarray], np.ndarray], x: ArrayLike) -> FloatOrArray:
    """Run a family's array method on ``x``: float array in, same shape out, 0-d as ``np.float64``."""
    x = np.asarray(x, dtype=np.float64)
    # Families resolve limits (0**-1, inf/inf, log(0)) with np.where; the
    # suppressed warnings are those of the discarded branches. Scalars run as
    # 1-element arrays because numpy takes other loops for 0-d arrays (x**0.5
    # is sqrt in one, pow in the other), and scalar and vector results must
    # be bit-identical.
    with np.errstate(all="ignore"):
        out = np.array(np.broadcast_to(method(x.reshape(-1)), (x.size,)), dtype=np.float64)
    return out.reshape(x.shape)[()]


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

RATE_FAMILIES = Registry("rate family", "kind")
#: class decorator: make a rate family available as ``{ kind = cls.kind, ... }``
register_rate = RATE_FAMILIES.register


def make_rate(spec: Mapping[str, Any] | RateFamily, key: str = "service") -> RateFamily:
    """The rate family described by a TOML table such as ``{kind = "saturating", c = 4.0, k = 2.0}``.

    Raises :class:`ScenarioError` naming ``key`` (e.g. ``backends[0].service``)
    for a missing or unknown kind or a bad, missing or unknown parameter.
    """
    if isinstance(spec, RateFamily):
        return spec
    family: RateFamily = RATE_FAMILIES.make(spec, key, '{ kind = "saturating", c = 4.0, k = 2.0 }')
    return family


# --------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------


@register_rate
class Constant(RateFamily):
    """``mu(x) = c`` for ``x > 0`` and ``mu(0) = 0``: a single M/M/1-style server.

    ``mu'(x) = 0`` for ``x > 0`` (+inf at 0); ``mu^{-1}(y) = 0`` for ``0 <= y < c``; sup ``c``.
    """

    kind = "constant"
    formula = "c for x > 0"
    examples = ({"c": 3.0}, {"c": 0.25})
    c: float = Field(gt=0, description="service rate whenever the backend is busy (work units/s)")

    @property
    def supremum(self) -> float:
        return self.c

    def _value(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, self.c, 0.0)

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, 0.0, np.inf)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.where(y < self.c, 0.0, np.inf)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > 0, 0.0, np.inf)


@register_rate
class Linear(RateFamily):
    """``mu(x) = r*x``: infinitely many servers. ``mu^{-1}(y) = y/r``; sup +inf."""

    kind = "linear"
    formula = "r*x"
    examples = ({"r": 2.0}, {"r": 1e-3})
    r: float = Field(gt=0, description="rate per unit of load (1/s)")

    @property
    def supremum(self) -> float:
        return np.inf

    def _value(self, x: np.ndarray) -> np.ndarray:
        return self.r * x

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        return np.full_like(x, self.r)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return y / self.r

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > self.r, 0.0, np.inf)


@register_rate
class Servers(RateFamily):
    """``mu(x) = r*min(x, k)``: ``k`` load units of parallel servers at rate ``r``.

    ``mu'(x) = r`` for ``x < k``, 0 beyond; ``mu^{-1}(y) = y/r`` for ``y < r*k``;
    sup ``r*k``; ``(mu')^{-1}(s) = k`` for ``0 < s <= r``.
    """

    kind = "servers"
    formula = "r*min(x, k)"
    examples = ({"r": 2.0, "k": 3.0}, {"r": 0.5, "k": 0.01})
    r: float = Field(gt=0, description="rate per unit of load below the knee (1/s)")
    k: float = Field(gt=0, description="load at which all servers are busy (work units)")

    @property
    def supremum(self) -> float:
        return self.r * self.k

    def _value(self, x: np.ndarray) -> np.ndarray:
        return self.r * np.minimum(x, self.k)

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        return np.where(x < self.k, self.r, 0.0)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.where(y < self.supremum, np.minimum(y / self.r, self.k), np.inf)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > self.r, 0.0, np.where(s > 0, self.k, np.inf))


@register_rate
class Saturating(RateFamily):
    """``mu(x) = c*x/(x+k)`` (Michaelis-Menten): half of the capacity ``c`` at load ``k``.

    ``mu'(x) = c*k/(x+k)**2``; ``mu^{-1}(y) = k*y/(c-y)``; sup ``c``;
    ``(mu')^{-1}(s) = sqrt(c*k/s) - k``.
    """

    kind = "saturating"
    formula = "c*x/(x+k)"
    examples = ({"c": 4.0, "k": 2.0}, {"c": 0.5, "k": 1e-3}, {"c": 1e3, "k": 50.0})
    c: float = Field(gt=0, description="capacity: the rate approached at high load (work units/s)")
    k: float = Field(gt=0, description="load at which the rate is c/2 (work units)")

    @property
    def supremum(self) -> float:
        return self.c

    def _value(self, x: np.ndarray) -> np.ndarray:
        # c/(1 + k/x) gives 0 at x = 0 and c at x = inf without nan.
        return self.c / (1.0 + self.k / x)

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        # Two factors rather than a square: (x+k)**2 overflows for x > 1e154.
        return (self.c / (x + self.k)) * (self.k / (x + self.k))

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.where(y < self.c, self.k * y / (self.c - y), np.inf)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > 0, np.maximum(np.sqrt(self.c * self.k / s) - self.k, 0.0), np.inf)


@register_rate
class Exponential(RateFamily):
    """``mu(x) = c*(1 - exp(-x/k))``.

    ``mu'(x) = (c/k)*exp(-x/k)``; ``mu^{-1}(y) = -k*log(1 - y/c)``; sup ``c``;
    ``(mu')^{-1}(s) = k*log(c/(k*s))``.
    """

    kind = "exponential"
    formula = "c*(1-exp(-x/k))"
    examples = ({"c": 4.0, "k": 2.0}, {"c": 0.5, "k": 1e-3})
    c: float = Field(gt=0, description="capacity: the rate approached at high load (work units/s)")
    k: float = Field(gt=0, description="load scale of the saturation (work units)")

    @property
    def supremum(self) -> float:
        return self.c

    def _value(self, x: np.ndarray) -> np.ndarray:
        return -self.c * np.expm1(-x / self.k)

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        return self.c / self.k * np.exp(-x / self.k)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.where(y < self.c, -self.k * np.log1p(-y / self.c), np.inf)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > 0, np.maximum(self.k * np.log(self.c / (self.k * s)), 0.0), np.inf)


@register_rate
class Power(RateFamily):
    """``mu(x) = c*x**a`` with ``0 < a <= 1``.

    ``mu'(x) = c*a*x**(a-1)`` (+inf at 0 when ``a < 1``); ``mu^{-1}(y) = (y/c)**(1/a)``;
    sup +inf; ``(mu')^{-1}(s) = (s/(c*a))**(1/(a-1))``.
    """

    kind = "power"
    formula = "c*x**a"
    examples = (
        {"c": 2.0, "a": 0.5},
        {"c": 0.3, "a": 0.1},
        {"c": 1.5, "a": 1.0},  # linear: the closed forms special-case it
        {"c": 1.0, "a": 0.95},  # near linear: 1/(a-1) is large
    )
    c: float = Field(gt=0, description="rate at unit load (work units/s)")
    a: float = Field(gt=0, le=1, description="exponent: 1 is linear, smaller saturates faster")

    @property
    def supremum(self) -> float:
        return np.inf

    def _value(self, x: np.ndarray) -> np.ndarray:
        return self.c * x**self.a

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        return self.c * self.a * x ** (self.a - 1.0)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return (y / self.c) ** (1.0 / self.a)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        if self.a == 1.0:  # linear: the marginal rate is c everywhere
            return np.where(s > self.c, 0.0, np.inf)
        return np.where(s > 0, (s / (self.c * self.a)) ** (1.0 / (self.a - 1.0)), np.inf)


@register_rate
class Batch(RateFamily):
    """``mu(x) = x/(a + b*x)``: a batch of ``x`` requests whose decode step takes ``a + b*x`` seconds.

    ``mu'(x) = a/(a+b*x)**2``; ``mu^{-1}(y) = a*y/(1 - b*y)``; sup ``1/b``;
    ``(mu')^{-1}(s) = (sqrt(a/s) - a)/b``.
    """

    kind = "batch"
    formula = "x/(a+b*x)"
    examples = ({"a": 0.02, "b": 0.001}, {"a": 1.0, "b": 2.0})
    a: float = Field(gt=0, description="fixed time of a decode step (s)")
    b: float = Field(gt=0, description="time per request in the batch of a decode step (s)")

    @property
    def supremum(self) -> float:
        return 1.0 / self.b

    def _value(self, x: np.ndarray) -> np.ndarray:
        # 1/(b + a/x) gives 0 at x = 0 and 1/b at x = inf without nan.
        return 1.0 / (self.b + self.a / x)

    def _derivative(self, x: np.ndarray) -> np.ndarray:
        step = self.a + self.b * x
        return (1.0 / step) * (self.a / step)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.where(y < self.supremum, self.a * y / np.maximum(1.0 - self.b * y, 0.0), np.inf)

    def _derivative_inverse(self, s: np.ndarray) -> np.ndarray:
        return np.where(s > 0, np.maximum((np.sqrt(self.a / s) - self.a) / self.b, 0.0), np.inf)


def parameter_table() -> list[dict[str, Any]]:
    """Every registered rate family (``lbsim rates``): ``kind``, ``formula``, ``description``
    (the class docstring's first paragraph) and ``params`` (:func:`field_rows`), sorted by kind."""
    return [
        {
            "kind": kind,
            "formula": cls.formula,
            "description": first_paragraph(cls),
            "params": field_rows(cls),
        }
        for kind, cls in sorted(RATE_FAMILIES.items())
    ]
