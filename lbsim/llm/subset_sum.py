"""Exactly-k subset sum: the k items whose total comes closest to a capacity from below.

BF-IO's second phase (``docs/routers.md``, BF-IO) fills the last free slots of a
rank with the ``k`` waiting prompts whose total best fills the rank's margin
under the load envelope. That is the cardinality-constrained subset-sum
problem (Caprara, Kellerer, Pferschy, Pisinger, "Approximation algorithms for
knapsack problems with cardinality constraints", EJOR 123, 2000): NP-hard in
general, but here ``k`` is small (at most BF-IO's ``greedy_threshold``, 7 by
default) and the values are many and dense, so a depth-first branch and bound
finds an exact or near-exact fit after a few nodes.

The search (:func:`largest_fitting`) takes the values in decreasing order and
picks one item per level. At a node that has chosen ``j`` items of sum ``s``
from the first ``i`` positions, with ``r = k - j`` still to choose:

* *infeasible* if ``s`` plus the ``r`` smallest remaining values exceeds the
  capacity (they are the ``r`` smallest overall, the last positions): the
  values too large to be picked next are skipped by one bisection;
* *dominated* if ``s`` plus the ``r`` largest remaining values (positions
  ``i .. i + r - 1``) is no better than the best total found so far; if that
  total fits, it is the best of the branch, taken without branching;
* the last item (``r = 1``) is found by bisection: the largest remaining value
  at most ``capacity - s``;
* at one level, a value equal to the one just tried is skipped (it would
  produce the same totals).

The search stops when a total equals the capacity or after ``node_budget``
steps (a step: one position examined at one level, or one call); each costs
O(1) or one bisection, so one call costs ``O(n log n + node_budget * log n)``
(the sort first): bounded whatever the values. Past the
budget the best total found so far is returned, which may miss the optimum
(never the feasibility: a total is returned only if it fits).
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

#: default number of branch-and-bound nodes before the search returns its best so far
NODE_BUDGET = 4096


def smallest_total(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest values (ties: the earliest positions).

    Their total is the smallest total of any ``k`` items, so it is the answer
    to "the smallest total above the capacity" whenever no ``k`` items fit.
    """
    order = np.argsort(values, kind="stable")
    return np.sort(order[:k])


def largest_fitting(values: np.ndarray, k: int, capacity: int, node_budget: int = NODE_BUDGET) -> np.ndarray | None:
    """Positions of exactly ``k`` values whose total is the largest one ``<= capacity``.

    ``values`` are non-negative integers; returns ``None`` when no ``k``
    values fit (their ``k`` smallest exceed ``capacity``) or ``k`` exceeds
    their number. Among equal values the earliest positions (the pool's
    first-come order) are tried first. Exact unless ``node_budget`` steps run
    out (see the module docstring); even then the positions returned fit.
    """
    n = len(values)
    if k <= 0 or k > n:
        return None
    # decreasing values; a stable sort on the negated values keeps equal values in position order
    order = np.argsort(-values, kind="stable")
    descending = values[order].astype(np.int64)
    prefix = np.concatenate(([0], np.cumsum(descending))).tolist()
    if prefix[n] - prefix[n - k] > capacity:
        return None
    if prefix[k] <= capacity:
        return np.sort(order[:k])
    negated = (-descending).tolist()
    value_list = descending.tolist()
    # the k smallest fit: the search starts from them and only improves, so a budget cut still returns a fit
    best_total = prefix[n] - prefix[n - k]
    best: list[int] = list(range(n - k, n))
    chosen: list[int] = []
    nodes = 0

    def search(start: int, total: int, need: int) -> bool:
        """Extend ``chosen``; True once the search must stop (exact fit or budget spent)."""
        nonlocal best_total, best, nodes
        nodes += 1
        if need == 1:
            # the largest value at most capacity - total among positions >= start
            position = bisect_left(negated, total - capacity, lo=start)
            if position < n and total + value_list[position] > best_total:
                best_total = total + value_list[position]
                best = [*chosen, position]
            return best_total == capacity or nodes >= node_budget
        previous = -1
        smallest_rest = prefix[n] - prefix[n - need + 1]
        # skip the values too large to complete with the smallest ones (decreasing: they come first)
        first = bisect_left(negated, total + smallest_rest - capacity, lo=start)
        for position in range(first, n - need + 1):
            nodes += 1
            if nodes >= node_budget:
                return True
            value = value_list[position]
            if value == previous:
                continue
            previous = value
            largest = total + prefix[position + need] - prefix[position]
            if largest <= best_total:
                break  # every later position gives a total no larger
            if largest <= capacity:
                best_total = largest
                best = [*chosen, *range(position, position + need)]
                return best_total == capacity or nodes >= node_budget
            chosen.append(position)
            stop = search(position + 1, total + value, need - 1)
            chosen.pop()
            if stop:
                return True
        return nodes >= node_budget

    search(0, 0, k)
    return np.sort(order[np.asarray(best, dtype=np.int64)])
