"""Tests of lbsim.stats against queueing theory and exact sampling distributions.

The reference data never come from the simulator: M/M/1 FIFO sojourn times
are generated here by the Lindley recurrence

    W_0 = w0,   W_{n+1} = max(0, W_n + S_n - A_{n+1}),   sojourn_n = W_n + S_n,

whose stationary sojourn is Exponential(mu - lambda): mean 1 / (mu - lambda),
q-quantile -ln(1 - q) / (mu - lambda).

Coverage tests count how often a 95% interval contains the known truth over
E independent experiments. The count is Binomial(E, p), so the observed
fraction must lie within ``SIGMAS`` binomial standard deviations
``sqrt(p (1 - p) / E)`` of the nominal ``p`` (0.95, or the exact coverage
of the order-statistic interval when it is known). Every seed is fixed.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats as sps

from lbsim.stats import (
    CI,
    QUANTILE_NAMES,
    QUANTILES,
    after_warmup,
    batch_means_ci,
    batch_quantile_ci,
    ecdf,
    mean_ci,
    mser5,
    quantile_ci,
    quantile_ci_replications,
    summarize,
    warmup_time,
)

LEVEL = 0.95
SIGMAS = 4.0  # a correct method fails a 4-sigma binomial check ~6e-5 of the time


def binomial_tolerance(p: float, experiments: int) -> float:
    return SIGMAS * math.sqrt(p * (1.0 - p) / experiments)


def mm1(
    rng: np.random.Generator,
    lam: float,
    mu: float,
    n: int,
    reps: int | None = None,
    w0: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sojourn, wait, interarrival)`` of ``n`` M/M/1 FIFO jobs (rows: ``reps`` runs).

    Lindley's recurrence unrolled: with ``C_0 = 0``, ``C_n = sum_{k<n} (S_k - A_{k+1})``,
    ``W_n = max(w0 + C_n, max_{k<=n} (C_n - C_k)) = C_n - min(-w0, min_{k<=n} C_k)``.
    ``interarrival[n]`` is the gap before job ``n`` (``interarrival[0]`` is
    the first arrival time).
    """
    shape = (n,) if reps is None else (reps, n)
    service = rng.exponential(1.0 / mu, shape)
    gaps = rng.exponential(1.0 / lam, shape)
    steps = service[..., :-1] - gaps[..., 1:]
    c = np.concatenate([np.zeros(shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)
    wait = c - np.minimum(np.minimum.accumulate(c, axis=-1), -w0)
    return wait + service, wait, gaps


def mm1_jobs(
    seed: int, n: int, lam: float = 0.5, mu: float = 1.0, frontends: int = 3, backends: int = 4
) -> pd.DataFrame:
    """A jobs table in the simulator's schema, with M/M/1 sojourns and random labels."""
    rng = np.random.default_rng(seed)
    sojourn, wait, gaps = mm1(rng, lam, mu, n)
    t_arrival = np.cumsum(gaps)
    delay = 0.01
    t_backend_arrival = t_arrival + delay
    t_backend_done = t_backend_arrival + sojourn
    return pd.DataFrame(
        {
            "job_id": np.arange(n),
            "frontend": rng.integers(0, frontends, n),
            "backend": rng.integers(0, backends, n),
            "size": sojourn - wait,
            "t_arrival": t_arrival,
            "t_backend_arrival": t_backend_arrival,
            "t_backend_done": t_backend_done,
            "t_response": t_backend_done + delay,
            "latency": sojourn + 2 * delay,
            "sojourn": sojourn,
        }
    )


# --------------------------------------------------------------------------
# the reference generator itself


def test_mm1_generator_matches_the_lindley_loop():
    rng = np.random.default_rng(0)
    sojourn, wait, _ = mm1(rng, 0.8, 1.0, 500, w0=3.0)
    rng = np.random.default_rng(0)
    service = rng.exponential(1.0, 500)
    gaps = rng.exponential(1.0 / 0.8, 500)
    w = np.empty(500)
    w[0] = 3.0
    for k in range(499):
        w[k + 1] = max(0.0, w[k] + service[k] - gaps[k + 1])
    np.testing.assert_allclose(wait, w, atol=1e-9)
    np.testing.assert_allclose(sojourn, w + service, atol=1e-9)


# --------------------------------------------------------------------------
# CI and mean_ci


def test_ci_half_width_and_contains():
    ci = CI(2.0, 1.5, 3.5, 10)
    assert ci.half_width == 1.0
    assert 3.5 in ci and 1.5 in ci and 3.6 not in ci
    with pytest.raises(AttributeError):
        ci.low = 0.0  # type: ignore[misc]


def test_mean_ci_textbook_value():
    # xbar = 3, s = sqrt(2.5), t_{4, 0.975} = 2.776445
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci.estimate == 3.0 and ci.n == 5
    assert ci.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)


def test_mean_ci_degenerate_inputs():
    assert math.isnan(mean_ci([]).estimate)
    one = mean_ci([4.0])
    assert one.estimate == 4.0 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=1.5)


@given(arrays(np.float64, st.integers(2, 50), elements=st.floats(-1e6, 1e6)),
       st.floats(0.5, 0.999))
@settings(max_examples=60, deadline=None)
def test_mean_ci_is_ordered_and_widens_with_level(x, level):
    ci = mean_ci(x, level)
    wider = mean_ci(x, min(0.9999, level + 0.0005))
    assert ci.low <= ci.estimate <= ci.high
    assert wider.half_width >= ci.half_width - 1e-9 * (1 + abs(ci.half_width))


def mean_ci_coverage(seed: int, lam: float, jobs: int, reps: int, experiments: int) -> float:
    """Fraction of replication t intervals containing 1 / (mu - lambda).

    Each replication starts empty and keeps all its jobs: the initial bias
    of an M/M/1 sample mean is O(relaxation time / jobs), under 1% of the
    interval's half-width at these lengths.
    """
    rng = np.random.default_rng(seed)
    truth = 1.0 / (1.0 - lam)
    hits = 0
    for _ in range(experiments):
        sojourn, _, _ = mm1(rng, lam, 1.0, jobs, reps=reps)
        hits += truth in mean_ci(sojourn.mean(axis=1), LEVEL)
    return hits / experiments


def test_mean_ci_coverage_fast():
    experiments = 200
    fraction = mean_ci_coverage(11, 0.5, 2_000, 5, experiments)
    assert abs(fraction - LEVEL) <= binomial_tolerance(LEVEL, experiments)


@pytest.mark.slow
@pytest.mark.parametrize(("lam", "jobs"), [(0.5, 4_000), (0.7, 20_000)])
def test_mean_ci_coverage(lam, jobs):
    # Longer runs at higher load keep the replication means close enough to
    # normal for the t interval (at rho = 0.8 and 20k jobs their skew already
    # costs ~1.5 points of coverage).
    experiments = 2_000
    fraction = mean_ci_coverage(12, lam, jobs, 5, experiments)
    assert abs(fraction - LEVEL) <= binomial_tolerance(LEVEL, experiments)


# --------------------------------------------------------------------------
# quantile_ci: order statistics


@pytest.mark.parametrize(("n", "q"), [(20, 0.5), (101, 0.5), (1000, 0.9), (1000, 0.99), (5000, 0.999), (100, 0.999)])
def test_quantile_ci_ranks_are_the_tightest_valid_ones(n, q):
    """Independent check of the ranks by brute force over the binomial law.

    With K ~ Binomial(n, q) observations below the quantile, the lower bound
    X_(l) misses iff K <= l - 1 and the upper X_(u) misses iff K >= u: the
    largest l and smallest u whose miss probabilities are within alpha / 2.
    """
    x = np.arange(1.0, n + 1.0)  # X_(k) = k, so the bounds are the ranks
    ci = quantile_ci(x, q, LEVEL)
    half_alpha = (1.0 - LEVEL) / 2
    ranks = np.arange(1, n + 1)
    cdf = sps.binom.cdf(ranks - 1, n, q)  # P(K <= r - 1)
    lows = ranks[cdf < half_alpha]
    highs = ranks[1.0 - cdf <= half_alpha]
    if len(lows):
        assert ci.low == lows.max()
    else:
        assert math.isnan(ci.low)
    if len(highs):
        assert ci.high == highs.min()
    else:
        assert math.isnan(ci.high)
    assert ci.estimate == pytest.approx(np.quantile(x, q))


def test_quantile_ci_tiny_sample_still_holds_its_estimate():
    # n = 2, q = 0.99: the lower rank is 2, above the interpolated estimate 0.99
    ci = quantile_ci([0.0, 1.0], 0.99)
    assert ci.low == ci.estimate == pytest.approx(0.99) and math.isnan(ci.high)


def test_quantile_ci_too_small_sample_has_no_upper_bound():
    ci = quantile_ci(np.random.default_rng(0).exponential(size=100), 0.999)
    assert math.isnan(ci.high) and not math.isnan(ci.estimate)


@given(arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e3, 1e3)),
       st.sampled_from(QUANTILES))
@settings(max_examples=60, deadline=None)
def test_quantile_ci_brackets_the_estimate(x, q):
    ci = quantile_ci(x, q)
    assert ci.n == len(x)
    if not math.isnan(ci.low):
        assert ci.low <= ci.estimate
    if not math.isnan(ci.high):
        assert ci.estimate <= ci.high


def exact_order_statistic_coverage(n: int, q: float) -> float:
    ci = quantile_ci(np.arange(1.0, n + 1.0), q, LEVEL)
    l, u = int(ci.low), int(ci.high)
    return float(sps.binom.cdf(u - 1, n, q) - sps.binom.cdf(l - 1, n, q))


def quantile_ci_coverage(seed: int, n: int, q: float, experiments: int) -> float:
    truth = -math.log1p(-q)  # Exponential(1)
    samples = np.random.default_rng(seed).exponential(1.0, (experiments, n))
    return float(np.mean([truth in quantile_ci(s, q, LEVEL) for s in samples]))


@pytest.mark.parametrize("q", [0.9, 0.99])
def test_quantile_ci_coverage_fast(q):
    n, experiments = 1_000, 500
    exact = exact_order_statistic_coverage(n, q)
    assert exact >= LEVEL
    fraction = quantile_ci_coverage(21, n, q, experiments)
    assert abs(fraction - exact) <= binomial_tolerance(exact, experiments)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "q"), [(1_000, 0.9), (2_000, 0.99), (10_000, 0.999)])
def test_quantile_ci_coverage(n, q):
    experiments = 10_000
    exact = exact_order_statistic_coverage(n, q)
    fraction = quantile_ci_coverage(22, n, q, experiments)
    assert abs(fraction - exact) <= binomial_tolerance(exact, experiments)


# --------------------------------------------------------------------------
# quantile_ci_replications


def replication_quantile_coverage(seed: int, n: int, reps: int, q: float, experiments: int) -> float:
    truth = -math.log1p(-q)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(experiments):
        samples = rng.exponential(1.0, (reps, n))
        hits += truth in quantile_ci_replications(list(samples), q, LEVEL)
    return hits / experiments


def test_quantile_ci_replications_estimate_and_n():
    rng = np.random.default_rng(3)
    samples = [rng.exponential(size=k) for k in (100, 200, 300)]
    ci = quantile_ci_replications(samples, 0.9)
    assert ci.n == 3
    assert ci.estimate == pytest.approx(np.quantile(np.concatenate(samples), 0.9))
    per_rep = [np.quantile(s, 0.9) for s in samples]
    assert ci.half_width == pytest.approx(mean_ci(per_rep).half_width)


@pytest.mark.parametrize("q", [0.9, 0.99])
def test_quantile_ci_replications_coverage_fast(q):
    experiments = 200
    fraction = replication_quantile_coverage(31, 1_000, 10, q, experiments)
    assert abs(fraction - LEVEL) <= binomial_tolerance(LEVEL, experiments)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "q"), [(1_000, 0.9), (2_000, 0.99), (10_000, 0.999)])
def test_quantile_ci_replications_coverage(n, q):
    experiments = 2_000
    fraction = replication_quantile_coverage(32, n, 10, q, experiments)
    assert abs(fraction - LEVEL) <= binomial_tolerance(LEVEL, experiments)


# --------------------------------------------------------------------------
# batch means and batch quantiles within one run


def test_batch_means_ci_uses_the_last_full_batches():
    x = np.arange(105.0)  # 5 leftovers dropped from the start, batches of 5
    ci = batch_means_ci(x, batches=20)
    batch_means = x[5:].reshape(20, 5).mean(axis=1)
    assert ci.n == 20 and ci.estimate == pytest.approx(x.mean())
    assert ci.half_width == pytest.approx(mean_ci(batch_means).half_width)
    assert math.isnan(batch_means_ci(np.arange(10.0), batches=20).low)


def test_batch_means_ci_long_mm1_run():
    lam = 0.8
    sojourn, _, _ = mm1(np.random.default_rng(41), lam, 1.0, 1_000_000)
    ci = batch_means_ci(sojourn, LEVEL)
    assert 1.0 / (1.0 - lam) in ci
    # Sojourns are nondecreasing functions of the independent service times
    # and nonincreasing of the interarrival times, hence associated and
    # pairwise nonnegatively correlated: the variance of their mean exceeds
    # the iid one. At rho = 0.8 it is dozens of times larger.
    naive = sps.t.ppf(0.975, len(sojourn) - 1) * sojourn.std(ddof=1) / math.sqrt(len(sojourn))
    assert ci.half_width > 2.0 * naive
    for q in (0.5, 0.9, 0.99):
        assert -math.log1p(-q) / (1.0 - lam) in batch_quantile_ci(sojourn, q, LEVEL)


def batch_coverage(seed: int, lam: float, jobs: int, experiments: int) -> np.ndarray:
    """Coverage of the batch mean and batch p50/p90/p99 intervals of M/M/1 runs."""
    rng = np.random.default_rng(seed)
    truths = [1.0 / (1.0 - lam)] + [-math.log1p(-q) / (1.0 - lam) for q in (0.5, 0.9, 0.99)]
    hits = np.zeros(4)
    for _ in range(experiments):
        sojourn, _, _ = mm1(rng, lam, 1.0, jobs)
        cis = [batch_means_ci(sojourn)] + [batch_quantile_ci(sojourn, q) for q in (0.5, 0.9, 0.99)]
        hits += [t in ci for t, ci in zip(truths, cis)]
    return hits / experiments


def test_batch_coverage_fast():
    experiments = 60
    coverage = batch_coverage(42, 0.7, 100_000, experiments)
    assert np.all(np.abs(coverage - LEVEL) <= binomial_tolerance(LEVEL, experiments))


@pytest.mark.slow
@pytest.mark.parametrize(("lam", "jobs"), [(0.7, 200_000), (0.8, 400_000)])
def test_batch_coverage(lam, jobs):
    # Batches of 10k-20k jobs, hundreds of times the sojourn correlation time.
    experiments = 500
    coverage = batch_coverage(43, lam, jobs, experiments)
    assert np.all(np.abs(coverage - LEVEL) <= binomial_tolerance(LEVEL, experiments))


# --------------------------------------------------------------------------
# MSER-5


def mser5_brute_force(x: np.ndarray) -> int:
    """The MSER-5 definition, literally (White 1997; Franklin & White 2008)."""
    m = len(x) // 5
    if m < 2:
        return 0
    z = x[: 5 * m].reshape(m, 5).mean(axis=1)
    best, best_d = math.inf, 0
    for d in range(m // 2 + 1):
        kept = z[d:]
        value = float(np.sum((kept - kept.mean()) ** 2)) / (m - d) ** 2
        if value < best * (1 - 1e-12):
            best, best_d = value, d
    return 5 * best_d


def _mser(z: np.ndarray, d: int) -> float:
    kept = z[d:]
    return float(np.sum((kept - kept.mean()) ** 2)) / len(kept) ** 2


@given(arrays(np.float64, st.integers(0, 300), elements=st.floats(-100, 100)))
@settings(max_examples=150, deadline=None)
def test_mser5_matches_the_definition(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = mser5(x)
    m = len(x) // 5
    assert got % 5 == 0 and 0 <= got <= 5 * (m // 2)
    if m >= 2:
        # ties equal up to rounding may pick different d: compare the statistic
        z = x[: 5 * m].reshape(m, 5).mean(axis=1)
        want = mser5_brute_force(x)
        assert _mser(z, got // 5) <= _mser(z, want // 5) * (1 + 1e-9) + 1e-12


def test_mser5_short_and_constant_series():
    assert mser5([]) == 0
    assert mser5(np.ones(9)) == 0
    assert mser5(np.full(100, 3.0)) == 0


def test_mser5_warns_when_the_run_is_too_short():
    x = np.linspace(100.0, 0.0, 200)  # still trending at the end
    with pytest.warns(RuntimeWarning, match="too short"):
        assert mser5(x) == 5 * (40 // 2)


@pytest.mark.parametrize("seed", range(20))
def test_mser5_exponential_transient(seed):
    """Bias A exp(-i / tau) plus N(0, sigma^2) noise, A = 10 sigma.

    MSER keeps dropping a batch while its squared deviation exceeds about
    twice the current MSER times the batches kept, i.e. while the batch
    bias is above ~sqrt(2) sigma_b (sigma_b = sigma / sqrt(5), the batch
    noise). So the truncation point must sit where the bias is (a) below
    3 sigma_b (not too early) and (b) above 0.1 sigma_b, i.e. at most
    tau ln(A / (0.1 sigma_b)) (not absurdly late); (c) the bias left in
    the truncated mean is under two of its standard errors.
    """
    n, tau, amplitude, sigma = 20_000, 200.0, 10.0, 1.0
    i = np.arange(n)
    bias = amplitude * np.exp(-i / tau)
    x = bias + sigma * np.random.default_rng(seed).standard_normal(n)
    k = mser5(x)
    sigma_b = sigma / math.sqrt(5)
    assert bias[k] <= 3 * sigma_b
    assert k <= tau * math.log(amplitude / (0.1 * sigma_b))
    assert bias[k:].mean() <= 2 * sigma / math.sqrt(n - k)


@pytest.mark.parametrize("seed", range(20))
def test_mser5_stationary_series_is_barely_truncated(seed):
    # With no transient the argmin is a partial-sum fluctuation of a few
    # batches, whatever the run length (over 2000 seeds: at most 95 of 20000).
    n = 20_000
    k = mser5(np.random.default_rng(seed).standard_normal(n))
    assert k <= 0.01 * n


@pytest.mark.parametrize("seed", range(5))
def test_mser5_mm1_with_a_big_initial_queue(seed):
    """M/M/1 at rho = 0.5 starting with w0 = 300 of work.

    The backlog drains at 1/lambda - 1/mu = 1 per job, so the fluid
    transient ends at job n0 = 300, give or take the random walk's
    sd(n0) = sqrt(n0 (1/lambda^2 + 1/mu^2)) / drift ~ 39 jobs. MSER-5 must
    not stop before n0 - 4 sd, nor discard more than 5% of the stationary
    part of the run. The truncated mean must be within two batch-means
    half-widths (~4 standard errors) of the stationary mean; the
    untruncated one is off by ~w0^2 / (2 drift n) = 0.9, dozens of them.
    """
    lam, mu, w0, n = 0.5, 1.0, 300.0, 50_000
    sojourn, _, _ = mm1(np.random.default_rng(100 + seed), lam, mu, n, w0=w0)
    drift = 1.0 / lam - 1.0 / mu
    n0 = w0 / drift
    sd = math.sqrt(n0 * (1.0 / lam**2 + 1.0 / mu**2)) / drift
    k = mser5(sojourn)
    assert n0 - 4 * sd <= k <= n0 + 4 * sd + 0.05 * n
    truth = 1.0 / (mu - lam)
    truncated = batch_means_ci(sojourn[k:])
    assert abs(truncated.estimate - truth) <= 2 * truncated.half_width
    assert sojourn.mean() - truth > 10 * truncated.half_width


def test_warmup_time_and_after_warmup():
    jobs = mm1_jobs(5, 20_000)
    assert warmup_time(jobs, 123.0) == 123.0
    assert warmup_time(jobs, 7) == 7.0
    shuffled = jobs.sample(frac=1.0, random_state=1)  # order must not matter
    t = warmup_time(shuffled, "mser5")
    k = mser5(jobs["latency"].to_numpy())
    assert t == jobs["t_arrival"].iloc[k]
    kept = after_warmup(shuffled, t)
    assert len(kept) == len(jobs) - k and kept["t_arrival"].min() >= t
    assert len(after_warmup(jobs, None)) == len(jobs)
    assert len(after_warmup(jobs, "mser5")) == len(jobs) - k
    assert warmup_time(jobs.iloc[:0], "mser5") == 0.0
    with pytest.raises(ValueError, match="method"):
        warmup_time(jobs, "welch")


def test_warmup_time_finds_a_big_initial_queue():
    rng = np.random.default_rng(9)
    sojourn, _, gaps = mm1(rng, 0.5, 1.0, 30_000, w0=300.0)
    jobs = pd.DataFrame({"t_arrival": np.cumsum(gaps), "latency": sojourn})
    t = warmup_time(jobs, "mser5")
    # the bounds of test_mser5_mm1_with_a_big_initial_queue, as arrival times
    n0, sd = 300.0, math.sqrt(300.0 * 5.0)
    first = int(n0 - 4 * sd)
    last = int(n0 + 4 * sd + 0.05 * len(jobs))
    assert jobs["t_arrival"].iloc[first] <= t <= jobs["t_arrival"].iloc[last]


# --------------------------------------------------------------------------
# summarize


def expected_columns(keys: list[str]) -> list[str]:
    cols = keys + ["count", "mean", "mean_low", "mean_high"]
    for name in ("p50", "p90", "p99", "p999"):
        cols += [name, f"{name}_low", f"{name}_high"]
    return cols


def test_quantile_names():
    assert QUANTILES == (0.5, 0.9, 0.99, 0.999)
    assert QUANTILE_NAMES == ("p50", "p90", "p99", "p999")


def test_summarize_whole_run():
    jobs = mm1_jobs(1, 50_000)
    table = summarize(jobs)
    assert list(table.columns) == expected_columns([])
    assert table.shape == (1, len(expected_columns([])))
    row = table.iloc[0]
    assert row["count"] == len(jobs)
    assert row["mean"] == pytest.approx(jobs["latency"].mean())
    for q, name in zip(QUANTILES, QUANTILE_NAMES):
        assert row[name] == pytest.approx(jobs["latency"].quantile(q))
        assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
    assert row["mean_low"] < row["mean"] < row["mean_high"]
    # batches in arrival order, not in row order
    shuffled = summarize(jobs.sample(frac=1.0, random_state=0))
    pd.testing.assert_frame_equal(table, shuffled)
    # the default value is latency; sojourn can be asked for
    assert summarize(jobs, value="sojourn").iloc[0]["mean"] == pytest.approx(jobs["sojourn"].mean())


def test_summarize_warmup():
    jobs = mm1_jobs(2, 20_000)
    assert summarize(jobs, warmup=1000.0).iloc[0]["count"] == (jobs["t_arrival"] >= 1000.0).sum()
    k = mser5(jobs["latency"].to_numpy())
    assert summarize(jobs, warmup="mser5").iloc[0]["count"] == len(jobs) - k


@pytest.mark.parametrize("by", ["frontend", "backend", ["frontend", "backend"]])
def test_summarize_breakdown_counts_add_up(by):
    jobs = mm1_jobs(3, 30_000)
    keys = [by] if isinstance(by, str) else by
    table = summarize(jobs, by=by)
    assert list(table.columns) == expected_columns(keys)
    sizes = jobs.groupby(keys).size()
    assert len(table) == len(sizes)
    assert table["count"].sum() == len(jobs)
    for _, row in table.iterrows():
        group = jobs.loc[(jobs[keys] == row[keys].to_numpy()).all(axis=1), "latency"]
        assert row["count"] == len(group)
        assert row["mean"] == pytest.approx(group.mean())
        assert row["p90"] == pytest.approx(group.quantile(0.9))


def test_summarize_replications_with_breakdown():
    reps = [mm1_jobs(seed, 5_000).assign(seed=seed) for seed in range(6)]
    jobs = pd.concat(reps, ignore_index=True)
    table = summarize(jobs, by="frontend", replication="seed", warmup=100.0)
    assert list(table.columns) == expected_columns(["frontend"])
    assert sorted(table["frontend"]) == [0, 1, 2]
    kept = jobs[jobs["t_arrival"] >= 100.0]
    assert table["count"].sum() == len(kept)
    for _, row in table.iterrows():
        group = kept[kept["frontend"] == row["frontend"]]
        per_rep = group.groupby("seed")["latency"]
        want = mean_ci(per_rep.mean().to_numpy())
        assert row["mean"] == pytest.approx(want.estimate)
        assert row["mean_high"] - row["mean_low"] == pytest.approx(2 * want.half_width)
        q99 = quantile_ci_replications([g.to_numpy() for _, g in per_rep], 0.99)
        assert (row["p99"], row["p99_low"], row["p99_high"]) == pytest.approx(
            (q99.estimate, q99.low, q99.high)
        )
    # the whole-system version, and mser5 applied per replication
    whole = summarize(jobs, replication="seed", warmup="mser5")
    cuts = sum(mser5(r["latency"].to_numpy()) for r in reps)
    assert len(whole) == 1 and whole.iloc[0]["count"] == len(jobs) - cuts


def test_summarize_empty():
    empty = mm1_jobs(4, 10).iloc[:0]
    table = summarize(empty)
    assert list(table.columns) == expected_columns([]) and table.iloc[0]["count"] == 0
    assert len(summarize(empty, by="frontend")) == 0


# --------------------------------------------------------------------------
# ecdf


def test_ecdf():
    values, prob = ecdf([3.0, 1.0, np.nan, 2.0, 2.0])
    np.testing.assert_array_equal(values, [1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(prob, [0.25, 0.5, 0.75, 1.0])
    values, prob = ecdf([])
    assert len(values) == 0 and len(prob) == 0


# --------------------------------------------------------------------------
# the hand-written intervals and ECDF against scipy's own


@given(arrays(np.float64, st.integers(2, 60), elements=st.floats(-1e6, 1e6)), st.floats(0.5, 0.999))
@settings(max_examples=60, deadline=None)
def test_mean_ci_is_scipy_t_interval(x, level):
    ci = mean_ci(x, level)
    sem = sps.sem(x)
    # scipy gives NaN bounds for a zero standard error; the interval's limit there is the point
    low, high = sps.t.interval(level, len(x) - 1, loc=np.mean(x), scale=sem) if sem > 0 else (np.mean(x),) * 2
    scale = 1e-9 * (1.0 + np.abs(x).max())
    assert ci.low == pytest.approx(low, abs=scale) and ci.high == pytest.approx(high, abs=scale)


@pytest.mark.parametrize(("n", "batches", "level"), [(1000, 20, 0.95), (1003, 20, 0.9), (517, 7, 0.99)])
def test_batch_means_ci_is_a_t_interval_on_the_batch_means(n, batches, level):
    x, _, _ = mm1(np.random.default_rng(n), 0.7, 1.0, n)
    ci = batch_means_ci(x, level, batches)
    m = n // batches
    means = x[n - batches * m :].reshape(batches, m).mean(axis=1)  # the first n % batches dropped
    low, high = sps.t.interval(level, batches - 1, loc=x.mean(), scale=sps.sem(means))
    assert ci.estimate == pytest.approx(x.mean(), rel=1e-12)
    assert (ci.low, ci.high, ci.n) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12), batches)


def test_quantile_ci_replications_is_a_t_interval_around_the_pooled_quantile():
    rng = np.random.default_rng(5)
    reps = [rng.exponential(size=n) for n in (400, 500, 600, 450, 550)]
    ci = quantile_ci_replications(reps, 0.9)
    per_rep = [np.quantile(r, 0.9) for r in reps]
    low, high = sps.t.interval(0.95, len(reps) - 1, loc=np.quantile(np.concatenate(reps), 0.9), scale=sps.sem(per_rep))
    assert (ci.low, ci.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


@pytest.mark.parametrize(("n", "q"), [(20, 0.5), (101, 0.5), (37, 0.3), (1000, 0.9), (1000, 0.99), (5000, 0.999),
                                      (100, 0.999)])  # fmt: skip
def test_quantile_ci_is_scipy_quantile_test_interval(n, q):
    """The order-statistic interval is the one ``scipy.stats.quantile_test`` inverts (its two-sided
    binomial test), bound for bound, NaN where the sample has no such order statistic."""
    x = np.random.default_rng(n).exponential(size=n)
    ci = quantile_ci(x, q, LEVEL)
    ref = sps.quantile_test(x, q=0.0, p=q).confidence_interval(LEVEL)
    np.testing.assert_array_equal([ci.low, ci.high], [ref.low, ref.high])


@given(arrays(np.float64, st.integers(1, 80), elements=st.sampled_from([0.5, 1.0, 2.0, 3.5]) | st.floats(-10, 10)))
@settings(max_examples=60, deadline=None)
def test_ecdf_is_scipy_ecdf(x):
    """As a step function, ``ecdf`` is ``scipy.stats.ecdf``'s CDF at every point, ties included."""
    values, prob = ecdf(x)
    reference = sps.ecdf(x).cdf
    grid = np.concatenate([values, values - 1e-9, values + 1e-9, [values.min() - 1.0, values.max() + 1.0]])
    # the step function of (values, prob): the largest prob at a value <= t, 0 before the first
    ours = np.array([prob[values <= t].max() if (values <= t).any() else 0.0 for t in grid])
    np.testing.assert_allclose(ours, reference.evaluate(grid), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.unique(values), reference.quantiles)
