"""Per-load tables the model-based routers share: mu_j, mu_j' and the capped marginal cost 1/mu_j'.

Observed loads are always ``n * sbar`` (docs/model.md section 1), so a
router that evaluates a rate function of the load on every job indexes a
list by job count (:class:`MarginalTable`) instead of calling numpy per job.
The capped marginal cost (:func:`marginal_cost`) is also what the fluid
twins of GMSR and DGD-LB read of a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ..rates import RateFamily

#: Default cap (seconds) on the marginal cost 1/mu_j'(x) where mu_j'(x) -> 0.
#: A backend whose marginal rate is below 1/COST_CAP looks saturated.
COST_CAP = 1.0e4


class MarginalTable:
    """``f(n * sbar)`` by job count ``n``, computed once per ``n`` and per backend.

    ``function`` is vectorised (it takes an array of loads); the list grows
    on demand, doubling, one numpy call per growth.
    """

    __slots__ = ("function", "mean_size", "values")

    def __init__(self, function: Callable[[np.ndarray], npt.ArrayLike], mean_size: float):
        self.function = function
        self.mean_size = mean_size
        self.values: list[float] = []

    def __getitem__(self, n: int) -> float:
        values = self.values
        if n >= len(values):
            grow = max(n + 1, 2 * len(values), 64)
            with np.errstate(all="ignore"):
                new = self.function(np.arange(len(values), grow) * self.mean_size)
            values.extend(np.asarray(new, dtype=float).tolist())
        return values[n]


def marginal_rate_table(rate: RateFamily, mean_size: float, sign: float = 1.0) -> MarginalTable:
    """``sign * mu'(n sbar)``: the marginal rate (may be +inf at n = 0, e.g. ``power`` with a < 1)."""
    return MarginalTable(lambda x: sign * rate.derivative(x), mean_size)


def discrete_marginal_rate_table(rate: RateFamily, mean_size: float, sign: float = 1.0) -> MarginalTable:
    """``sign * (mu((n+1) sbar) - mu(n sbar)) / sbar``: the rate one more job adds, per work unit."""
    return MarginalTable(lambda x: sign * (rate.value(x + mean_size) - rate.value(x)) / mean_size, mean_size)


def marginal_cost(derivative: npt.ArrayLike, cap: float) -> np.ndarray:
    """``min(1/mu'(x), cap)``: the marginal serving cost in seconds, finite where ``mu' -> 0``.

    ``1/mu'`` is the derivative of the steady-state load ``mu^{-1}(Lambda)``
    with respect to the flow ``Lambda`` (docs/model.md section 2), i.e. the
    extra load, hence the extra latency per unit of flow, that one more unit
    of flow causes. Saturated backends (``mu' = 0``, e.g. ``servers`` beyond
    its knee or ``constant`` when busy) have an infinite cost; the cap keeps
    arithmetic on it free of inf and NaN while still making them the most
    expensive choice.
    """
    d = np.asarray(derivative, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(d * cap <= 1.0, cap, 1.0 / d)


def marginal_cost_table(rate: RateFamily, mean_size: float, cap: float) -> MarginalTable:
    """``min(1/mu'(n sbar), cap)`` by job count."""
    return MarginalTable(lambda x: marginal_cost(rate.derivative(x), cap), mean_size)


class TableMatrix:
    """Every backend's :class:`MarginalTable` side by side: ``f_j(n_j * sbar)`` for a whole fleet in one numpy call.

    For routers that read every backend from :meth:`~lbsim.view.View.jobs_array`;
    the values are the tables' own (the same floats the per-backend lists give).
    """

    __slots__ = ("matrix", "rows", "tables")

    def __init__(self, tables: list[MarginalTable]):
        self.tables = tables
        self.rows = np.arange(len(tables))
        self.matrix = np.empty((len(tables), 0))

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        try:
            return self.matrix[self.rows, counts]
        except IndexError:  # a load never seen before: grow every table to it
            top = int(counts.max())
            for table in self.tables:
                table[top]
            width = min(len(table.values) for table in self.tables)
            self.matrix = np.array([table.values[:width] for table in self.tables])
            return self.matrix[self.rows, counts]
