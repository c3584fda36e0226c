"""Statistics for simulation output: warm-up, percentiles, confidence intervals.

Two kinds of output come out of a run (docs/model.md section 3): the jobs table,
one row per completed job (``t_arrival``, ``latency``, ``sojourn``, ...), and
the time series (``t``, ``backend``, ``load``, ``jobs``). Both are
autocorrelated and start in a transient, so:

- the warm-up is cut either at a given time or by MSER-5 (:func:`mser5`);
- a confidence interval within one run comes from nonoverlapping batches
  (:func:`batch_means_ci`, :func:`batch_quantile_ci`), never from the iid
  formulas, which would be far too narrow;
- across independent replications it is a Student t interval
  (:func:`mean_ci`, :func:`quantile_ci_replications`);
- for an iid sample a quantile has an exact distribution-free interval from
  order statistics (:func:`quantile_ci`).

Quantile point estimates are ``numpy.quantile`` with its default (linear
interpolation) method everywhere, so a ``p99`` here is the same number as
``jobs.latency.quantile(0.99)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _sps

__all__ = [
    "CI",
    "QUANTILES",
    "QUANTILE_NAMES",
    "after_warmup",
    "batch_means_ci",
    "batch_quantile_ci",
    "ecdf",
    "mean_ci",
    "mser5",
    "quantile_ci",
    "quantile_ci_replications",
    "summarize",
    "warmup_time",
]

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
QUANTILE_NAMES: tuple[str, ...] = ("p50", "p90", "p99", "p999")

#: MSER-5 batch size (White, Cobb & Spratt 2000).
MSER_BATCH = 5


@dataclass(frozen=True)
class CI:
    """A point estimate with a confidence interval ``[low, high]`` from ``n`` units.

    ``n`` counts what the interval was computed from: replications, batches
    or observations, depending on the method. ``low``/``high`` are NaN when
    there are too few of them for the requested level.
    """

    estimate: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's length (for asymmetric intervals, the mean of both sides)."""
        return (self.high - self.low) / 2.0

    def __contains__(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)


# --------------------------------------------------------------------------
# helpers


def _as_1d(x: ArrayLike, name: str = "x") -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D series, got shape {arr.shape}")
    return arr


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1), got {level}")


def _check_q(q: float) -> None:
    if not 0.0 < q < 1.0:
        raise ValueError(f"q: must be in (0, 1), got {q}")


def _t_quantile(level: float, df: int) -> float:
    return float(_sps.t.ppf(0.5 + level / 2.0, df))


def _batches(x: NDArray[np.float64], batches: int) -> NDArray[np.float64] | None:
    """``x`` cut into a ``(batches, m)`` matrix of consecutive, equal batches.

    The ``len(x) % batches`` leftover observations are dropped from the
    *start* of the series: they are the ones nearest the warm-up, so the
    most likely to carry residual initialisation bias. ``None`` if there is
    less than one observation per batch.
    """
    if batches < 2:
        raise ValueError(f"batches: must be >= 2, got {batches}")
    m = len(x) // batches
    if m == 0:
        return None
    return x[len(x) - batches * m :].reshape(batches, m)


def _sectioning(
    estimates: NDArray[np.float64], centre: NDArray[np.float64], level: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """t interval ``centre +- t * s / sqrt(k)`` from ``k`` section estimates (rows)."""
    k = estimates.shape[0]
    if k < 2:
        nan = np.full_like(centre, np.nan)
        return nan, nan
    half = _t_quantile(level, k - 1) * estimates.std(axis=0, ddof=1) / math.sqrt(k)
    return centre - half, centre + half


# --------------------------------------------------------------------------
# warm-up


def mser5(x: ArrayLike) -> int:
    """MSER-5 truncation point of an output series, as an index into ``x``.

    The series is cut into ``m = len(x) // 5`` batch means ``Z_1..Z_m`` (a
    trailing partial batch is ignored) and the truncation ``d`` (in batches)
    minimises the marginal standard error statistic

        MSER(d) = 1 / (m - d)^2 * sum_{i=d+1..m} (Z_i - Zbar(d))^2,

    where ``Zbar(d)`` is the mean of the batches kept, over ``0 <= d <= m // 2``
    (the minimum is only trusted in the first half of the run). The result is
    ``5 * d``: the first observation kept. Ties go to the earliest ``d``.

    References: White (1997), "An effective truncation heuristic for bias
    reduction in simulation output", Simulation 69(6); White, Cobb & Spratt
    (2000), "A comparison of five steady-state truncation heuristics for
    simulation", WSC; Franklin & White (2008), "Stationarity tests and
    MSER-5: exploring the intuition behind mean-squared-error-reduction in
    warm-up period determination", WSC.

    Series shorter than two batches are returned untruncated (0). A minimum
    at the last admissible ``d`` means the run is probably too short to
    reach steady state; a ``RuntimeWarning`` says so.
    """
    arr = _as_1d(x)
    m = len(arr) // MSER_BATCH
    if m < 2:
        return 0
    z = arr[: m * MSER_BATCH].reshape(m, MSER_BATCH).mean(axis=1)
    # centring first keeps sum(z^2) - sum(z)^2 / n from cancelling catastrophically
    z = z - z.mean()
    s1 = np.cumsum(z[::-1])[::-1]  # s1[d] = sum_{i >= d} z_i
    s2 = np.cumsum((z * z)[::-1])[::-1]
    kept = np.arange(m, 0, -1, dtype=float)  # m - d
    sse = np.maximum(s2 - s1 * s1 / kept, 0.0)
    last = m // 2
    d = int(np.argmin(sse[: last + 1] / kept[: last + 1] ** 2))
    if d == last and last > 0:
        warnings.warn(
            "MSER-5 minimum at half the series: the run may be too short "
            "to reach steady state",
            RuntimeWarning,
            stacklevel=2,
        )
    return MSER_BATCH * d


def warmup_time(
    jobs: pd.DataFrame, method: str | float = "mser5", value: str = "latency"
) -> float:
    """The warm-up time of a run: jobs arriving before it are discarded.

    With a number, that number. With ``"mser5"``, MSER-5 (:func:`mser5`)
    applied to column ``value`` in arrival order, and the ``t_arrival`` of
    the first job kept (0.0 for an empty table).
    """
    if not isinstance(method, str):
        return float(method)
    if method != "mser5":
        raise ValueError(f"method: unknown warm-up method '{method}' (valid: mser5, or a time)")
    if len(jobs) == 0:
        return 0.0
    ordered = jobs.sort_values("t_arrival", kind="stable")
    k = mser5(ordered[value].to_numpy(dtype=float))
    return float(ordered["t_arrival"].iloc[k])


def after_warmup(jobs: pd.DataFrame, warmup: float | str | None) -> pd.DataFrame:
    """The jobs that arrived at or after ``warmup``.

    ``warmup`` is a time, ``None`` (keep all) or a method name understood by
    :func:`warmup_time` (``"mser5"``, on latency).
    """
    if warmup is None:
        return jobs
    if isinstance(warmup, str):
        warmup = warmup_time(jobs, warmup)
    return jobs[jobs["t_arrival"] >= warmup]


# --------------------------------------------------------------------------
# confidence intervals


def mean_ci(values: ArrayLike, level: float = 0.95) -> CI:
    """Student t interval for the mean of independent, roughly normal values.

    ``xbar +- t_{n-1, (1+level)/2} * s / sqrt(n)``, the interval for
    independent replications (Law & Kelton, *Simulation Modeling and
    Analysis*, 3rd ed., section 9.4.1). NaN bounds for fewer than 2 values.
    """
    _check_level(level)
    x = _as_1d(values, "values")
    n = len(x)
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0)
    est = float(x.mean())
    if n < 2:
        return CI(est, math.nan, math.nan, n)
    half = _t_quantile(level, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return CI(est, est - half, est + half, n)


def batch_means_ci(x: ArrayLike, level: float = 0.95, batches: int = 20) -> CI:
    """Confidence interval for the steady-state mean of one correlated run.

    Nonoverlapping batch means (Law & Kelton, *Simulation Modeling and
    Analysis*, 3rd ed., section 9.5.3): the series is cut into ``batches``
    consecutive batches of ``m = len(x) // batches`` observations; if ``m``
    is large next to the correlation time, the batch means are nearly iid
    normal and ``Ybar +- t_{b-1} * s_b / sqrt(b)`` holds. The point estimate
    is the mean of the whole series (it differs from the grand batch mean
    only by the ``len(x) % batches`` observations left out of the batches).
    ``n`` is the number of batches.
    """
    _check_level(level)
    arr = _as_1d(x)
    est = float(arr.mean()) if len(arr) else math.nan
    mat = _batches(arr, batches)
    if mat is None:
        return CI(est, math.nan, math.nan, 0)
    low, high = _sectioning(mat.mean(axis=1), np.asarray(est), level)
    return CI(est, float(low), float(high), batches)


def _order_statistic_ranks(n: int, q: float, level: float) -> tuple[int, int]:
    """1-based ranks ``(l, u)`` with ``P(X_(l) <= xi_q <= X_(u)) >= level``.

    The number ``K`` of observations below the true quantile ``xi_q`` is
    Binomial(n, q) for any continuous distribution, and
    ``P(X_(l) <= xi_q < X_(u)) = P(l <= K <= u - 1)``. Each tail gets at most
    ``(1 - level) / 2``. A rank of 0 or ``n + 1`` means the bound does not
    exist with ``n`` observations.
    """
    alpha = 1.0 - level
    l = int(_sps.binom.ppf(alpha / 2.0, n, q))  # noqa: E741  (the ranks l, u of X_(l), X_(u))
    u = int(_sps.binom.ppf(1.0 - alpha / 2.0, n, q)) + 1
    return l, u


def quantile_ci(samples: ArrayLike, q: float, level: float = 0.95) -> CI:
    """Distribution-free interval for the ``q``-quantile of an iid sample.

    Order-statistic (binomial) interval ``[X_(l), X_(u)]`` (David & Nagaraja,
    *Order Statistics*, 3rd ed., section 7.1; Conover, *Practical
    Nonparametric Statistics*, section 3.2): the count of observations below
    the true quantile is Binomial(n, q), ``l`` and ``u`` cut off at most
    ``(1 - level) / 2`` of it on each side, so coverage is at least ``level``
    for continuous distributions (in tiny samples where a bound would
    exclude the point estimate it is moved to it, which only widens the
    interval). A bound is NaN when the sample is too small to have it (e.g.
    the upper bound of a p999 from 1000 samples).
    Only valid for independent observations: for one simulation run use
    :func:`batch_quantile_ci`.
    """
    _check_level(level)
    _check_q(q)
    x = np.sort(_as_1d(samples, "samples"))
    n = len(x)
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0)
    est = float(np.quantile(x, q))
    l, u = _order_statistic_ranks(n, q, level)  # noqa: E741  (the ranks of X_(l), X_(u))
    # With very few observations X_(l) can lie above the interpolated point
    # estimate (n = 2, q = 0.99: l = 2); widening to include the estimate
    # keeps the coverage guarantee and the interval around its own estimate.
    low = min(float(x[l - 1]), est) if l >= 1 else math.nan
    high = max(float(x[u - 1]), est) if u <= n else math.nan
    return CI(est, low, high, n)


def _replication_quantiles(
    samples: Sequence[ArrayLike], qs: Sequence[float], level: float
) -> list[CI]:
    arrays = [_as_1d(s, "samples") for s in samples]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return [CI(math.nan, math.nan, math.nan, 0) for _ in qs]
    per_rep = np.array([np.quantile(a, qs) for a in arrays])  # (R, len(qs))
    centre = np.quantile(np.concatenate(arrays), qs)
    low, high = _sectioning(per_rep, centre, level)
    return [CI(float(c), float(lo), float(hi), len(arrays)) for c, lo, hi in zip(centre, low, high)]


def quantile_ci_replications(
    samples: Sequence[ArrayLike], q: float, level: float = 0.95
) -> CI:
    """Interval for a quantile across independent replications (sectioning).

    Each replication gives its own sample quantile; their spread ``s`` gives
    a t interval with ``R - 1`` degrees of freedom. It is centred on the
    quantile of all replications pooled rather than on the mean of the
    per-replication quantiles, whose ``O(1/n)`` bias is larger for tail
    quantiles of short replications: the "sectioning" estimator of Asmussen
    & Glynn, *Stochastic Simulation* (2007), section III.5a; see also
    Nakayama (2014), "Confidence intervals for quantiles using sectioning
    when applying variance-reduction techniques", ACM TOMACS 24(4).
    ``n`` is the number of (non-empty) replications.
    """
    _check_level(level)
    _check_q(q)
    return _replication_quantiles(samples, [q], level)[0]


def _batch_quantiles(
    x: NDArray[np.float64], qs: Sequence[float], level: float, batches: int
) -> list[CI]:
    if len(x) == 0:
        return [CI(math.nan, math.nan, math.nan, 0) for _ in qs]
    centre = np.quantile(x, qs)
    mat = _batches(x, batches)
    if mat is None:
        return [CI(float(c), math.nan, math.nan, 0) for c in centre]
    per_batch = np.quantile(mat, qs, axis=1).T  # (batches, len(qs))
    low, high = _sectioning(per_batch, centre, level)
    return [CI(float(c), float(lo), float(hi), batches) for c, lo, hi in zip(centre, low, high)]


def batch_quantile_ci(
    x: ArrayLike, q: float, level: float = 0.95, batches: int = 20
) -> CI:
    """Interval for a steady-state quantile from one correlated run.

    Batch quantiles: the run is cut into ``batches`` consecutive batches as
    in :func:`batch_means_ci`, each gives a sample quantile, and their
    spread gives a t interval with ``batches - 1`` degrees of freedom
    centred on the quantile of the whole run (sectioning, Asmussen & Glynn
    2007, section III.5a; batch quantiles in Law & Kelton, 3rd ed., section
    9.7). Batches must hold enough jobs for the quantile: a p999 needs
    batches of several thousand. ``n`` is the number of batches.
    """
    _check_level(level)
    _check_q(q)
    return _batch_quantiles(_as_1d(x), [q], level, batches)[0]


# --------------------------------------------------------------------------
# tables


def _summary_columns() -> list[str]:
    cols = ["count", "mean", "mean_low", "mean_high"]
    for name in QUANTILE_NAMES:
        cols += [name, f"{name}_low", f"{name}_high"]
    return cols


def _row(count: int, mean: CI, quantiles: Sequence[CI]) -> dict[str, float]:
    row: dict[str, float] = {
        "count": count,
        "mean": mean.estimate,
        "mean_low": mean.low,
        "mean_high": mean.high,
    }
    for name, ci in zip(QUANTILE_NAMES, quantiles):
        row[name], row[f"{name}_low"], row[f"{name}_high"] = ci.estimate, ci.low, ci.high
    return row


def summarize(
    jobs: pd.DataFrame,
    warmup: float | str | None = None,
    by: str | Sequence[str] | None = None,
    level: float = 0.95,
    replication: str | None = None,
    value: str = "latency",
    batches: int = 20,
) -> pd.DataFrame:
    """Tidy table of the mean and the :data:`QUANTILES` of ``value`` with CIs.

    One row per group of ``by`` (``"frontend"``, ``"backend"`` or a list of
    columns), or a single row without it; the group keys are columns,
    followed by ``count, mean, mean_low, mean_high`` and ``p50, p50_low,
    p50_high, ..., p999_high``.

    - ``warmup``: a time, ``"mser5"`` or ``None`` (keep all jobs). MSER-5 is
      applied to the whole system's latency, per replication if any: the
      transient is the system's, not one group's.
    - Without ``replication``, one run: intervals from ``batches`` batches in
      arrival order within each group (:func:`batch_means_ci`,
      :func:`batch_quantile_ci`).
    - With ``replication`` (a column, e.g. ``"seed"``), independent runs:
      the mean is the mean of the per-replication means with a t interval
      (:func:`mean_ci`), quantiles use :func:`quantile_ci_replications`.
      ``count`` is the total over replications.
    """
    _check_level(level)
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    if warmup is not None:
        if replication is None:
            jobs = after_warmup(jobs, warmup)
        else:
            jobs = pd.concat(
                [after_warmup(g, warmup) for _, g in jobs.groupby(replication, sort=False)]
                or [jobs.iloc[:0]]
            )
    jobs = jobs.sort_values("t_arrival", kind="stable")

    groups = jobs.groupby(keys, sort=True) if keys else [((), jobs)]
    rows = []
    for key, group in groups:
        x = group[value].to_numpy(dtype=float)
        if replication is None:
            mean = batch_means_ci(x, level, batches)
            quants = _batch_quantiles(x, QUANTILES, level, batches)
        else:
            reps = [g[value].to_numpy(dtype=float) for _, g in group.groupby(replication, sort=True)]
            mean = mean_ci([r.mean() for r in reps], level)
            quants = _replication_quantiles(reps, QUANTILES, level)
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(keys, key)) | _row(len(x), mean, quants))

    table = pd.DataFrame(rows, columns=keys + _summary_columns())
    return table.astype({"count": "int64"})


def ecdf(x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Empirical CDF: sorted finite values and ``P(X <= value) = i / n``, i = 1..n."""
    arr = _as_1d(x)
    arr = np.sort(arr[np.isfinite(arr)])
    n = len(arr)
    return arr, np.arange(1, n + 1, dtype=float) / n if n else np.empty(0)
