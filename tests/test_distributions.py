"""Size distributions against scipy.stats: exact mean, scv formula, sample mean and shape.

Every registered distribution is checked on each shape parameter set it
declares in ``examples``; a family this file knows no exact law for has its
scv checked against the sample variance instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats

from lbsim.distributions import DISTRIBUTIONS, Distribution, make_distribution, register_distribution
from lbsim.errors import ScenarioError

pytestmark = pytest.mark.filterwarnings("error")

EPS = float(np.finfo(float).eps)
MEAN = 2.5

# Examples have a finite variance (pareto alpha > 2), so the sample mean has a standard error.
CASES = [
    pytest.param(make_distribution(name, params, "jobs"), id="-".join([name, *(f"{k}{v}" for k, v in params.items())]))
    for name, family in DISTRIBUTIONS.items()
    for params in family.examples
]


def reference(dist: Distribution, mean: float) -> stats.rv_continuous | None:
    """The scipy law the family claims to sample at this mean (None: not a scipy continuous law)."""
    match dist.name:
        case "exponential":
            return stats.expon(scale=mean)
        case "lognormal":  # log X ~ N(log(mean) - sigma**2/2, sigma**2)
            return stats.lognorm(s=dist.sigma, scale=mean * math.exp(-dist.sigma**2 / 2))
        case "gamma":
            return stats.gamma(a=dist.shape, scale=mean / dist.shape)
        case "pareto":  # classic Pareto with scale x_m = mean*(alpha-1)/alpha
            return stats.pareto(b=dist.alpha, scale=mean * (dist.alpha - 1) / dist.alpha)
        case "uniform" if dist.spread > 0:
            return stats.uniform(loc=mean * (1 - dist.spread), scale=2 * mean * dist.spread)
    return None


def support_mean_var(dist: Distribution, mean: float) -> tuple[float, float] | None:
    """Mean and variance of the law, from scipy or (empirical, point masses) from its support.

    None for a family this file knows no exact law for.
    """
    law = reference(dist, mean)
    if law is not None:
        return float(law.mean()), float(law.var())
    if dist.name == "empirical":
        support = np.asarray(dist.values) * mean / np.mean(dist.values)
        return float(np.mean(support)), float(np.var(support))
    if dist.name == "deterministic" or (dist.name == "uniform" and dist.spread == 0):
        return mean, 0.0
    return None


def assert_scv_matches_the_sample(dist: Distribution, n: int = 200_000) -> None:
    """scv against ``mean((X - MEAN)**2) / MEAN**2``, within 5 of its standard errors.

    With the mean known, ``(X - MEAN)**2`` is an unbiased estimate of the
    variance; its standard error is the sample's spread over sqrt(n) (a
    finite fourth moment assumed). The check for families without an exact law.
    """
    squares = (dist.sample(np.random.default_rng(13), n, MEAN) - MEAN) ** 2 / MEAN**2
    standard_error = squares.std(ddof=1) / math.sqrt(n)
    assert abs(squares.mean() - dist.scv) <= 5 * standard_error + 8 * EPS, (
        f"{dist.name}: scv {dist.scv:.6g}, sample {squares.mean():.6g} (se {standard_error:.3g})"
    )


@pytest.mark.parametrize("family", DISTRIBUTIONS.values(), ids=DISTRIBUTIONS.keys())
def test_every_registered_distribution_declares_examples(family: type[Distribution]) -> None:
    assert family.examples, f"{family.name}: declare examples = ({{...}}, ...) on the class"
    for params in family.examples:
        assert math.isfinite(make_distribution(family.name, params, "jobs").scv), f"{family.name} {params}"


@pytest.mark.parametrize("dist", CASES)
def test_law_has_the_mean_and_the_scv_claimed(dist: Distribution) -> None:
    known = support_mean_var(dist, MEAN)
    if known is None:  # no exact law here: the sample tells the variance
        assert_scv_matches_the_sample(dist)
        return
    mean, var = known
    assert mean == pytest.approx(MEAN, rel=8 * EPS)
    assert dist.scv == pytest.approx(var / mean**2, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("dist", CASES)
def test_sample_mean_within_five_standard_errors(dist: Distribution) -> None:
    n = 100_000
    sample = dist.sample(np.random.default_rng(7), n, MEAN)
    assert sample.shape == (n,) and sample.dtype == np.float64 and np.all(sample >= 0)
    standard_error = math.sqrt(dist.scv) * MEAN / math.sqrt(n)
    # 5 standard errors: a false alarm has probability 6e-7 per case.
    assert abs(sample.mean() - MEAN) <= 5 * standard_error + 8 * EPS * MEAN


@pytest.mark.parametrize("dist", [c for c in CASES if reference(c.values[0], MEAN) is not None])
def test_sample_follows_the_reference_law(dist: Distribution) -> None:
    sample = dist.sample(np.random.default_rng(11), 20_000, MEAN)
    assert stats.kstest(sample, reference(dist, MEAN).cdf).pvalue > 1e-3


@pytest.mark.parametrize("dist", CASES)
def test_same_seed_same_sample(dist: Distribution) -> None:
    first = dist.sample(np.random.default_rng(3), 1000, MEAN)
    assert np.array_equal(first, dist.sample(np.random.default_rng(3), 1000, MEAN))
    if dist.scv > 0:
        assert not np.array_equal(first, dist.sample(np.random.default_rng(4), 1000, MEAN))


@pytest.mark.parametrize("dist", CASES)
def test_degenerate_requests(dist: Distribution) -> None:
    rng = np.random.default_rng(0)
    assert dist.sample(rng, 0, MEAN).shape == (0,)
    assert np.array_equal(dist.sample(rng, 4, 0.0), np.zeros(4))  # zero delay: no jitter
    with pytest.raises(ValueError):
        dist.sample(rng, 4, -1.0)


def test_empirical_is_rescaled_to_the_exact_mean() -> None:
    values = [1.0, 2.0, 7.0, 0.5]
    dist = make_distribution("empirical", {"values": values}, "jobs")
    sample = dist.sample(np.random.default_rng(5), 10_000, 3.0)
    support = np.asarray(values) * 3.0 / np.mean(values)
    assert set(np.unique(sample)) == set(support)  # every value drawn, nothing else
    assert np.mean(support) == pytest.approx(3.0, rel=4 * EPS)
    assert dist.scv == pytest.approx(np.var(values) / np.mean(values) ** 2, rel=1e-15)


def test_deterministic_is_exact_and_draws_nothing() -> None:
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    assert np.all(make_distribution("deterministic", {}, "jobs").sample(rng, 5, 0.7) == 0.7)
    assert rng.bit_generator.state == state


def test_defaults_and_heavy_tails() -> None:
    assert make_distribution("lognormal", {}, "jobs").sigma == 1.0
    assert make_distribution("gamma", {}, "jobs").shape == 2.0
    assert make_distribution("pareto", {}, "jobs").alpha == 2.5
    assert make_distribution("uniform", {}, "jobs").spread == 1.0
    assert make_distribution("pareto", {"alpha": 1.5}, "jobs").scv == math.inf
    assert make_distribution("pareto", {"alpha": 2}, "jobs").scv == math.inf


@pytest.mark.parametrize(
    ("name", "params", "key", "message"),
    [
        ("lognorml", {}, "jobs.size", "unknown size distribution 'lognorml' (did you mean 'lognormal'?)"),
        ("lognormal", {"sigma": -1}, "jobs.sigma", "must be > 0, got -1"),
        ("lognormal", {"sigam": 1.0}, "jobs.sigam", "unknown lognormal parameter 'sigam' (did you mean 'sigma'?)"),
        ("pareto", {"alpha": 1.0}, "jobs.alpha", "must be > 1, got 1"),
        ("uniform", {"spread": 1.5}, "jobs.spread", "must be <= 1, got 1.5"),
        ("gamma", {"shape": "two"}, "jobs.shape", "must be a number, got 'two'"),
        ("empirical", {"values": [1.0, -3.0]}, "jobs.values[1]", "must be > 0, got -3"),
        ("empirical", {"values": []}, "jobs.values", "must not be empty"),
        ("empirical", {}, "jobs.values", "missing (empirical needs values)"),
        ("deterministic", {"sigma": 1.0}, "jobs.sigma", "unknown parameter 'sigma' (deterministic takes none)"),
    ],
)
def test_make_distribution_errors_name_the_key(name: str, params: dict, key: str, message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        make_distribution(name, params, "jobs")
    assert (error.value.key, error.value.message) == (key, message)


def test_jitter_errors_name_their_field() -> None:
    with pytest.raises(ScenarioError) as error:
        make_distribution("gama", {}, "network", field="jitter")
    assert str(error.value) == "network.jitter: unknown jitter distribution 'gama' (did you mean 'gamma'?)"


class TwoPoint(Distribution):
    """``mean/2`` or ``3*mean/2`` with equal probability; ``scv = 1/4``."""

    name = "twopoint"

    @property
    def scv(self) -> float:
        return 0.25

    def _sample(self, rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
        return mean * (0.5 + rng.integers(0, 2, n))


@pytest.fixture
def twopoint() -> Iterator[type[Distribution]]:
    register_distribution(TwoPoint)
    yield TwoPoint
    del DISTRIBUTIONS["twopoint"]


def test_registered_distribution_is_usable(twopoint: type[Distribution]) -> None:
    dist = make_distribution("twopoint", {}, "jobs")
    assert isinstance(dist, twopoint)
    assert set(np.unique(dist.sample(np.random.default_rng(0), 100, 2.0))) == {1.0, 3.0}
    assert support_mean_var(dist, MEAN) is None
    assert_scv_matches_the_sample(dist)  # how an unknown family's scv is checked
    with pytest.raises(ScenarioError, match="did you mean 'twopoint'"):
        make_distribution("twopont", {}, "jobs")
    # a name belongs to one distribution (registering the same class again is harmless: a module reload)
    register_distribution(twopoint)
    impostor = type("Impostor", (twopoint,), {})
    with pytest.raises(ValueError, match="already registered"):
        register_distribution(impostor)
