"""Job-size and jitter distributions, parametrised by their mean and their shape.

A distribution's fields are its shape only (``sigma`` for lognormal, ``alpha``
for pareto...); the mean is given at sampling time, so the same shape serves
job sizes (mean ``job_scale * size_mean``) and delay jitter (mean ``d_ij``).
Every family is scaled so that its mean is exactly the requested one, and
reports its squared coefficient of variation ``scv = Var[X]/E[X]**2``, which
does not depend on the mean.

A new family is one class plus one registry line::

    @register_distribution
    class Weibull(Distribution):
        name = "weibull"
        shape: float = Field(2.0, gt=0)
        examples = ({}, {"shape": 0.7})  # checked by tests/test_distributions.py
        ...
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lbsim.errors import ScenarioError, unknown
from lbsim.registry import Registry, field_rows, first_paragraph, from_params


class Distribution(BaseModel):
    """A positive distribution with a free mean and fixed shape parameters (the fields).

    ``examples`` lists shape parameter sets that exercise the family (the
    defaults and edge ones: nearly deterministic, highly variable), each with
    a finite variance so that a sample mean has a standard error; the test
    suite runs every registered distribution through its checks on each.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    name: ClassVar[str]
    examples: ClassVar[tuple[dict[str, Any], ...]] = ()

    def sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        """``n`` iid draws with expectation ``mean`` (all zero when ``mean == 0``, e.g. no delay)."""
        if mean < 0:
            raise ValueError(f"mean must be >= 0, got {mean}")
        if mean == 0:
            return np.zeros(n)
        return self._sample(rng, n, float(mean))

    @property
    @abstractmethod
    def scv(self) -> float:
        """Squared coefficient of variation ``Var[X]/E[X]**2`` (may be +inf)."""

    @abstractmethod
    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        """``n`` draws with expectation ``mean > 0``."""


DISTRIBUTIONS = Registry("distribution", "name")
#: class decorator: make a distribution available by ``cls.name`` (``size = "lognormal"``)
register_distribution = DISTRIBUTIONS.register


def make_distribution(name: str, params: Mapping[str, Any], key: str, field: str = "size") -> Distribution:
    """The distribution called ``name`` with shape parameters ``params``.

    ``params`` holds only the distribution's own keys (the caller removes
    ``size``, ``size_mean``...). ``key`` is the table they live in and
    ``field`` the key holding the name,
    so errors read ``jobs.sigma: must be > 0, got -1`` or
    ``jobs.size: unknown size distribution 'lognorml' (did you mean 'lognormal'?)``.
    """
    if not isinstance(name, str) or name not in DISTRIBUTIONS:  # (the message says which use: size, jitter...)
        raise ScenarioError(f"{key}.{field}", unknown(f"{field} distribution", str(name), DISTRIBUTIONS))
    return from_params(DISTRIBUTIONS[name], params, key, name)


def parameter_table() -> list[dict[str, Any]]:
    """Every registered distribution (``lbsim distributions``): ``name``, ``description`` (the
    class docstring's first paragraph) and ``params`` (shape parameters, as
    :func:`lbsim.rates.field_rows`), sorted by name. The mean is not a parameter: it is
    ``size_mean`` (sizes) or ``mean`` (jitter)."""
    return [
        {"name": name, "description": first_paragraph(cls), "params": field_rows(cls)}
        for name, cls in sorted(DISTRIBUTIONS.items())
    ]


@register_distribution
class Exponential(Distribution):
    """Exponential with the given mean; ``scv = 1``."""

    name = "exponential"
    examples = ({},)

    @property
    def scv(self) -> float:
        return 1.0

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        return rng.exponential(mean, n)


@register_distribution
class Deterministic(Distribution):
    """Always the mean; ``scv = 0``. Draws nothing from ``rng``."""

    name = "deterministic"
    examples = ({},)

    @property
    def scv(self) -> float:
        return 0.0

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        return np.full(n, mean)


@register_distribution
class Lognormal(Distribution):
    """``exp(N(m, sigma**2))`` with ``m = log(mean) - sigma**2/2``; ``scv = exp(sigma**2) - 1``."""

    name = "lognormal"
    examples = ({}, {"sigma": 0.3}, {"sigma": 1.5})
    sigma: float = Field(1.0, gt=0, description="standard deviation of log(size)")

    @property
    def scv(self) -> float:
        return math.expm1(self.sigma**2)

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        return rng.lognormal(math.log(mean) - self.sigma**2 / 2, self.sigma, n)


@register_distribution
class Gamma(Distribution):
    """Gamma with shape ``shape`` and scale ``mean/shape``; ``scv = 1/shape``."""

    name = "gamma"
    examples = ({}, {"shape": 0.5}, {"shape": 10.0})
    shape: float = Field(2.0, gt=0, description="shape: 1 is exponential, larger is less variable")

    @property
    def scv(self) -> float:
        return 1.0 / self.shape

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        return rng.gamma(self.shape, mean / self.shape, n)


@register_distribution
class Pareto(Distribution):
    """Classic Pareto ``P(X > x) = (x_m/x)**alpha`` for ``x >= x_m = mean*(alpha-1)/alpha``.

    ``scv = 1/(alpha*(alpha-2))`` for ``alpha > 2``, +inf otherwise.
    """

    name = "pareto"
    examples = ({}, {"alpha": 4.5})  # alpha > 2: a finite variance
    alpha: float = Field(2.5, gt=1, description="tail index (> 1 for a finite mean, > 2 for a finite variance)")

    @property
    def scv(self) -> float:
        return 1.0 / (self.alpha * (self.alpha - 2.0)) if self.alpha > 2 else math.inf

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        # numpy's pareto is the Lomax law, X/x_m - 1.
        return mean * (self.alpha - 1.0) / self.alpha * (1.0 + rng.pareto(self.alpha, n))


@register_distribution
class Empirical(Distribution):
    """Uniform over ``values`` (with replacement), rescaled by ``mean/mean(values)``.

    ``scv = var(values)/mean(values)**2`` (population variance).
    """

    name = "empirical"
    examples = ({"values": [1.0, 2.0, 7.0]}, {"values": [0.3]})
    values: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        min_length=1, description="observed sizes (any unit: only their shape is used)"
    )

    @field_validator("values", mode="before")
    @classmethod
    def _as_tuple(cls, values: Any) -> Any:
        # TOML arrays arrive as lists; a tuple keeps the frozen model hashable.
        return tuple(values) if isinstance(values, list | np.ndarray) else values

    @property
    def scv(self) -> float:
        values = np.asarray(self.values)
        return float(np.var(values) / np.mean(values) ** 2)

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        values = np.asarray(self.values)
        return values[rng.integers(0, len(values), n)] * (mean / np.mean(values))


@register_distribution
class Uniform(Distribution):
    """Uniform on ``[mean*(1-spread), mean*(1+spread)]``; ``scv = spread**2/3``."""

    name = "uniform"
    examples = ({}, {"spread": 0.0}, {"spread": 0.4})
    spread: float = Field(1.0, ge=0, le=1, description="half-width relative to the mean")

    @property
    def scv(self) -> float:
        return self.spread**2 / 3.0

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        return rng.uniform(mean * (1.0 - self.spread), mean * (1.0 + self.spread), n)
