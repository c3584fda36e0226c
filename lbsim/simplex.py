"""Euclidean projection onto the probability simplex, row by row: the project's one implementation.

DGD-LB's update (:mod:`lbsim.routers.dgdlb`, discrete and fluid) and the
fluid routers' band-regularised argmin (:func:`lbsim.routers.fluid_base.tie_split`)
both project onto

    Delta = {p : p_j >= 0, sum_j p_j = 1}

(over each frontend's usable backends). The answer is ``p_j = max(v_j -
theta, 0)`` with ``theta`` the root of the convex, decreasing,
piecewise-linear ``S(theta) = sum_j max(v_j - theta, 0) = 1`` (Held, Wolfe,
Crowder, "Validation of subgradient optimization", Math. Programming 1974;
Duchi, Shalev-Shwartz, Singer, Chandra, "Efficient projections onto the
l1-ball for learning in high dimensions", ICML 2008). Entries a row may not
use are ``-inf`` (or :data:`EXCLUDED`): they never enter the support.

This module imports only numpy, so routers and the fluid model can both use it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["EXCLUDED", "SORT_BELOW", "project_rows", "project_simplex", "support_bound"]

#: a finite stand-in for -inf: an entry the projection must leave out
EXCLUDED = -1e300
#: rows up to this long are projected by sorting (fewer numpy calls); longer ones by Newton's method
SORT_BELOW = 32


def project_simplex(v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The projection of ``v`` (one row, or each row of a matrix) onto the simplex over ``mask``.

    Entries outside ``mask`` (same shape, True where allowed) are 0 in the
    result and take no part in the projection; every row must allow at least
    one entry. Duchi et al.'s sort-based algorithm, whatever the row length
    (:func:`project_rows` is the same projection with a warm-startable
    method for long rows).
    """
    v = np.asarray(v, dtype=float)
    if v.ndim == 1:
        return project_simplex(v[None, :], None if mask is None else np.asarray(mask)[None, :])[0]
    if mask is not None:
        v = np.where(np.asarray(mask, dtype=bool), v, -np.inf)
    return _project_sorted(v)[0]


def project_rows(
    v: np.ndarray, lower: np.ndarray | None = None, finite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The projection of each row of ``v`` onto the simplex; returns ``(p, theta)``.

    Entries set to ``-inf`` are excluded. Rows up to :data:`SORT_BELOW` long
    are sorted (Duchi et al., Figure 1). Longer rows use Newton's method on
    ``S`` from a lower bound of ``theta`` instead of sorting (Michelot, "A
    finite algorithm for finding the projection of a point onto the
    canonical simplex of R^n", J. Optim. Theory Appl., 1986): on a convex
    function it never overshoots, the active set only shrinks, and it stops
    when the set no longer changes, with the exact answer. ``lower``
    (optional) is a known lower bound, e.g. from the previous split's
    support (:func:`support_bound`); warm-started this way a slowly
    changing split converges in one or two passes over the array.
    ``finite=True`` promises no ``-inf`` (excluded entries at
    :data:`EXCLUDED` instead), which saves a pass.
    """
    if v.shape[1] <= SORT_BELOW:
        return _project_sorted(v)
    if not finite:  # finite, so that products with a 0/1 mask are 0 off the support
        v = np.maximum(v, EXCLUDED)
    theta = v.max(axis=1) - 1.0  # S(max v - 1) >= 1: always a lower bound
    if lower is not None:
        theta = np.maximum(theta, lower)
    count = None
    for _ in range(4 * v.shape[1] + 4):
        active = v > theta[:, None]
        n = np.count_nonzero(active, axis=1)
        theta = (np.einsum("ij,ij->i", v, active) - 1.0) / n
        if count is not None and (n == count).all():
            break
        count = n
    else:  # pragma: no cover  (finite termination; kept as a guard against rounding loops)
        raise RuntimeError("simplex projection did not converge")
    p = v - theta[:, None]
    return np.maximum(p, 0.0, out=p), theta


def support_bound(v: np.ndarray, support: np.ndarray, finite: bool = False) -> np.ndarray:
    """``(sum_{j in S_i} v_ij - 1) / |S_i|``: a lower bound of the projection's ``theta``.

    A bound for *any* set ``S_i``, because ``S(theta) >= sum_{S_i} (v - theta)``.
    ``S_i`` must be within the finite entries of ``v``; an empty ``S_i`` gives
    ``-inf`` (no bound).
    """
    n = np.count_nonzero(support, axis=1)
    total = np.einsum("ij,ij->i", v if finite else np.maximum(v, EXCLUDED), support)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total - 1.0) / n, -np.inf)


def _project_sorted(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Duchi et al.'s sort-based projection (excluded entries sort last and never enter the support).

    Sort each row decreasingly into ``u``; ``rho = max{k : u_k > (sum_{r<=k}
    u_r - 1) / k}`` and ``theta = (sum_{r<=rho} u_r - 1) / rho``.
    """
    u = np.sort(v, axis=1)[:, ::-1]
    css = np.cumsum(u, axis=1)
    rows, k = _ranges(v.shape)
    # The condition holds on a prefix (Duchi et al., Lemma 2) that includes k = 1, so rho >= 1.
    rho = np.add.reduce(u * k > css - 1.0, axis=1)
    theta = (css[rows, rho - 1] - 1.0) / rho
    p = v - theta[:, None]
    return np.maximum(p, 0.0, out=p), theta


@lru_cache(maxsize=16)
def _ranges(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and the ranks 1..n (cached: the projection runs every step on the same shape)."""
    return np.arange(shape[0]), np.arange(1, shape[1] + 1)
