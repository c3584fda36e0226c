"""Best-fit admission for barrier-synchronised data-parallel decode: bestfit, BF-IO, its exact H = 0 program, BR-0.

Chen, Bu, Song, Lu, Ye, Zhou, "A Universal Load Balancing Principle and Its
Application to Large Language Model Serving", arXiv:2601.17855 (BF-IO and
BalanceRoute). In an engine of ``G`` data-parallel ranks that decode in
lockstep, a step lasts ``base + per_token * max_g L_g`` (``L_g`` the tokens
resident on rank ``g``), so ``G * max_g L_g - sum_g L_g`` is work the
barrier wastes: the *imbalance*. Requests are sticky (a KV cache does not
move), so the only lever is which waiting prompt enters which free slot.
The model and the engine are in ``docs/model.md``; the rules in
``docs/routers.md`` (BF-IO).

Every pool policy here is a pure function of the ranks' state and of the
first ``R`` waiting prompts (the candidates, in pool order); it returns the
admissions as ``(candidate index, rank)`` pairs, each candidate at most once
and at most ``free[g]`` on rank ``g``, and fills every free slot when the
candidates suffice (``min(sum(free), R)`` admissions). Ties go to the
earliest candidate and the lowest rank index, so results are deterministic.

* :func:`bestfit`: the least-loaded rank with a free slot takes the largest
  prompt that fits under the current maximum load, else the smallest prompt.
* :func:`bfio`: BF-IO with lookahead ``H``: a score ``F(S)`` of adding prompt
  mass ``S`` to a rank, computed against the projected load envelope of the
  next ``T = min(H, ...)`` steps; greedy while many slots are free, subset sum
  for the last ones. ``H = 0`` reads no output length at all.
* :func:`bfio_exact`: the ``H = 0`` admission as an integer program, solved
  exactly with HiGHS (``scipy.optimize.milp``): the yardstick of the others.
* :func:`br0`: BalanceRoute's prediction-free rule for on-arrival dispatch.
* :func:`estimate_outputs`: the noisy output-length estimates ``bfio`` uses
  when ``H > 0``.

Each policy has a pydantic parameter model with its defaults and ranges
(:class:`BestfitParams`, :class:`BfioParams`, :class:`BfioExactParams`,
:class:`Br0Params`).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .subset_sum import NODE_BUDGET, largest_fitting, smallest_total

Admissions = list[tuple[int, int]]


# -- parameters ------------------------------------------------------------------------
class BestfitParams(BaseModel):
    """``bestfit`` has no parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BfioParams(BaseModel):
    """Parameters of BF-IO; the defaults are those of the paper's released rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon: int = Field(0, ge=0, description="lookahead H in decode steps; 0 uses no output length at all")
    alpha: float = Field(1.0, gt=0, description="reward per token of prompt admitted, per step of the horizon")
    beta: float = Field(43.0, ge=0, description="penalty per token pushed above the load envelope, per step")
    decay: float = Field(0.86, gt=0, le=1, description="discount per step of the horizon")
    greedy_threshold: int = Field(
        7, ge=0, description="phase 1 (greedy) while more slots than this are free, phase 2 (subset sum) after"
    )
    candidates: int = Field(1024, ge=1, description="only the first this many waiting prompts are considered")
    noise_low: float = Field(0.0, ge=0, lt=1, description="output estimates are o * U[1 - noise_low, 1 + noise_high]")
    noise_high: float = Field(0.0, ge=0, description="see noise_low; both 0: the true output lengths")
    subset_nodes: int = Field(
        NODE_BUDGET, ge=1, description="node budget of one subset-sum search in phase 2 (bounds its cost)"
    )


class BfioExactParams(BaseModel):
    """Parameters of the exact ``H = 0`` admission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_limit: int = Field(
        128,
        ge=1,
        description="largest integer program solved: candidates x ranks with a free slot (binary variables); "
        "an empty engine of G ranks revealing 4G requests needs 4 G**2, and HiGHS proves optimality in about "
        "a second at G = 4 but not in minutes at G = 8",
    )
    time_limit: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="seconds HiGHS may take per admission before the run stops"
    )


class Br0Params(BaseModel):
    """``br0`` has no parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- bestfit ---------------------------------------------------------------------------
def bestfit(loads: np.ndarray, free: np.ndarray, prompts: np.ndarray) -> Admissions:
    """Best fit under the current maximum load.

    Repeatedly: the rank ``g`` with a free slot and the least load ``L_g``
    (ties: the lowest index) admits the largest candidate prompt ``p <=
    max_h L_h - L_g`` (the maximum over every rank, full ones included,
    updated after each admission); if none fits, the smallest candidate.
    Among equal prompts the earliest candidate goes first. Stops when no slot
    is free or no candidate is left. Cost ``O(A (log G + R))`` for ``A``
    admissions (a heap of ranks, a sorted list of prompts).
    """
    count = len(prompts)
    if count == 0:
        return []
    loads_now = [int(v) for v in loads]
    slots = [int(v) for v in free]
    maximum = max(loads_now)
    # a prompt p of candidate c is the key p * count + c: sorted by prompt, then pool order
    keys = sorted(int(p) * count + c for c, p in enumerate(prompts.tolist()))
    ranks = [(loads_now[g], g) for g in range(len(slots)) if slots[g] > 0]
    heapq.heapify(ranks)
    admissions: Admissions = []
    while ranks and keys:
        load, rank = heapq.heappop(ranks)
        gap = maximum - load
        position = bisect_left(keys, (gap + 1) * count) - 1
        if position >= 0:
            # the largest prompt that fits; among equal prompts, the earliest candidate
            position = bisect_left(keys, (keys[position] // count) * count)
        else:
            position = 0
        key = keys.pop(position)
        prompt, candidate = divmod(key, count)
        admissions.append((candidate, rank))
        load += prompt
        maximum = max(maximum, load)
        slots[rank] -= 1
        if slots[rank] > 0:
            heapq.heappush(ranks, (load, rank))
    return admissions


# -- BF-IO -----------------------------------------------------------------------------
class _Envelope:
    """Projected loads ``L_g(t)``, ``t = 0..T``, their envelope ``M_t`` and the score ``F``.

    ``L_g(0)`` is the current load; for ``t >= 1`` an active request whose
    estimated remaining output ``r`` satisfies ``r <= t`` has left (the +1
    token per step growth is ignored, as in the released rule). Prompts
    admitted now are added to every ``t``. Margins ``m_gt = max(M_t - L_g(t), 0)``.
    """

    def __init__(self, projected: np.ndarray, alpha: float, beta: float, decay: float):
        self.projected = projected  # (T + 1, G)
        self.envelope = projected.max(axis=1)
        self.weights = decay ** np.arange(projected.shape[0], dtype=np.float64)
        self.total_weight = float(self.weights.sum())
        self.alpha = alpha
        self.beta = beta

    def margins(self, rank: int) -> np.ndarray:
        return np.maximum(self.envelope - self.projected[:, rank], 0)

    def score(self, rank: int, mass: np.ndarray) -> np.ndarray:
        """``F(S) = alpha S sum_t decay^t - beta sum_{t: m_gt < S} decay^t (S - m_gt)`` for each ``S`` in ``mass``.

        The penalty is piecewise linear in ``S``: with the margins sorted,
        ``sum_{m_t < S} w_t (S - m_t) = S W_k - (wm)_k`` for the ``k`` margins
        below ``S`` (prefix sums ``W``, ``wm``): ``O(T log T + n log T)`` for ``n`` masses.
        """
        margins = self.margins(rank)
        order = np.argsort(margins, kind="stable")
        sorted_margins = margins[order]
        weights = self.weights[order]
        weight_below = np.concatenate(([0.0], np.cumsum(weights)))
        weighted_margin_below = np.concatenate(([0.0], np.cumsum(weights * sorted_margins)))
        mass = np.asarray(mass, dtype=np.float64)
        below = np.searchsorted(sorted_margins, mass, side="left")
        penalty = mass * weight_below[below] - weighted_margin_below[below]
        return self.alpha * self.total_weight * mass - self.beta * penalty

    def admit(self, rank: int, mass: int) -> None:
        column = self.projected[:, rank]
        column += mass
        np.maximum(self.envelope, column, out=self.envelope)


def _project(
    loads: np.ndarray, lengths: Sequence[np.ndarray], remaining: Sequence[np.ndarray], horizon: int, longest: int = 0
) -> np.ndarray:
    """``L_g(t)`` for ``t = 0..T``: ``L_g`` less the lengths of the requests whose remaining output is ``<= t``.

    ``T = min(horizon, max(longest, the longest remaining output))``; with
    ``horizon = 0`` neither ``lengths`` nor ``remaining`` is read.
    """
    ranks = len(loads)
    loads = np.asarray(loads, dtype=np.int64)
    if horizon == 0 or ranks == 0:
        return loads[None, :].copy()
    counts = [len(r) for r in remaining]
    left = np.concatenate([np.asarray(r, dtype=np.int64) for r in remaining])
    steps = max(0, min(horizon, max(longest, int(left.max()) if len(left) else 0)))
    if steps == 0:
        return loads[None, :].copy()
    rank_of = np.repeat(np.arange(ranks, dtype=np.int64), counts)
    size = np.concatenate([np.asarray(x, dtype=np.int64) for x in lengths])
    # the current load is known exactly, so nothing leaves at t = 0 whatever its estimate
    bins = rank_of * (steps + 2) + np.clip(left, 1, steps + 1)
    leaving = np.bincount(bins, weights=size, minlength=ranks * (steps + 2)).reshape(ranks, steps + 2)
    left_by = np.rint(np.cumsum(leaving, axis=1)[:, : steps + 1]).astype(np.int64)
    return loads[None, :] - left_by.T


def bfio(
    loads: np.ndarray,
    free: np.ndarray,
    prompts: np.ndarray,
    lengths: Sequence[np.ndarray] | None,
    remaining: Sequence[np.ndarray] | None,
    output_estimates: np.ndarray | None,
    horizon: int,
    alpha: float = 1.0,
    beta: float = 43.0,
    decay: float = 0.86,
    greedy_threshold: int = 7,
    candidates: int = 1024,
    subset_nodes: int = NODE_BUDGET,
) -> Admissions:
    """BF-IO admission with lookahead ``horizon`` (Chen et al., arXiv:2601.17855, the released rule).

    **Projection.** ``T = min(H, longest estimated remaining output)``, the
    longest taken over the active requests (``remaining``) and the candidates
    considered (``output_estimates``): the choice made here where the rule
    does not say which requests count. ``L_g(t)`` for ``t = 0..T`` as in
    :class:`_Envelope`, ``M_t = max_g L_g(t)``, ``m_gt = max(M_t - L_g(t), 0)``.
    With ``H = 0``, ``T = 0`` and ``lengths``, ``remaining`` and
    ``output_estimates`` are not read at all (they may be ``None``): only
    ``loads``. With ``H > 0`` they are required (``ValueError`` otherwise).

    **Score** of adding prompt mass ``S`` to rank ``g``:
    ``F(S) = alpha S sum_t decay^t - beta sum_{t: m_gt < S} decay^t (S - m_gt)``.

    **Phase 1** (while more than ``greedy_threshold`` slots are free in all):
    the rank with the most free slots (ties: the lowest current load, then the
    lowest index) admits the candidate of largest ``F`` (ties: the earliest).

    **Phase 2**: ranks with a free slot in a heap keyed by ``L_g(T)`` (ties:
    the lowest index). The popped rank, with ``k`` free slots and smallest
    margin ``c = min_t m_gt``, tries ``k' = k, k-1, ..., 1``: the ``k'``
    candidates whose total is the largest ``<= c``
    (:func:`~lbsim.llm.subset_sum.largest_fitting`, at most ``subset_nodes``
    nodes), else the ``k'`` smallest (the smallest total above ``c``); it
    keeps the subset of best ``F(total)`` and stops at the first ``k'`` whose
    total fits. If that best ``F`` is positive the subset is admitted, else
    the single candidate of largest ``F``; the rank goes back into the heap
    while it has free slots.

    Only the first ``candidates`` prompts are considered. Cost per admission:
    phase 1 ``O(n log T + G)``, phase 2 ``k`` subset searches of
    ``O(n log n + subset_nodes log n)`` each, ``n`` the candidates left.
    """
    count = min(len(prompts), candidates)
    ranks = len(loads)
    total_free = int(np.sum(free))
    if count == 0 or total_free == 0:
        return []
    prompts = np.asarray(prompts[:count], dtype=np.int64)
    if horizon > 0:
        if lengths is None or remaining is None or output_estimates is None:
            raise ValueError("bfio: a horizon > 0 needs lengths, remaining and output_estimates")
        projected = _project(loads, lengths, remaining, horizon, int(np.max(output_estimates[:count])))
    else:
        projected = _project(loads, (), (), 0)
    envelope = _Envelope(projected, alpha, beta, decay)
    slots = np.asarray(free, dtype=np.int64).copy()
    alive = np.arange(count)
    admissions: Admissions = []

    def admit(positions: np.ndarray, rank: int) -> None:
        nonlocal alive, total_free
        for candidate in alive[positions]:
            admissions.append((int(candidate), rank))
        envelope.admit(rank, int(prompts[alive[positions]].sum()))
        slots[rank] -= len(positions)
        total_free -= len(positions)
        alive = np.delete(alive, positions)

    # phase 1: greedy, the rank with the most free slots first
    while total_free > greedy_threshold and len(alive):
        most = slots.max()
        tied = np.flatnonzero(slots == most)
        rank = int(tied[np.argmin(envelope.projected[0, tied])])
        scores = envelope.score(rank, prompts[alive])
        admit(np.array([int(np.argmax(scores))]), rank)

    # phase 2: subset sum into the margins of the ranks lowest at the end of the horizon
    heap = [(int(envelope.projected[-1, g]), g) for g in range(ranks) if slots[g] > 0]
    heapq.heapify(heap)
    while heap and len(alive):
        _, rank = heapq.heappop(heap)
        capacity = int(envelope.margins(rank).min())
        values = prompts[alive]
        best_score = -np.inf
        best: np.ndarray | None = None
        for size in range(min(int(slots[rank]), len(alive)), 0, -1):
            fitting = largest_fitting(values, size, capacity, subset_nodes)
            subset = fitting if fitting is not None else smallest_total(values, size)
            score = float(envelope.score(rank, np.array([values[subset].sum()]))[0])
            if score > best_score:
                best_score, best = score, subset
            if fitting is not None:
                break
        if best is None or best_score <= 0:
            best = np.array([int(np.argmax(envelope.score(rank, values)))])
        admit(best, rank)
        if slots[rank] > 0:
            heapq.heappush(heap, (int(envelope.projected[-1, rank]), rank))
    return admissions


def estimate_outputs(
    outputs: np.ndarray, rng: np.random.Generator, noise_low: float = 0.0, noise_high: float = 0.0
) -> np.ndarray:
    """Output-length estimates ``max(1, round(o * U[1 - noise_low, 1 + noise_high]))``, one draw per request.

    One uniform is drawn per request whatever the noise, so runs that differ
    only in the noise level see the same draws (common random numbers); with
    both noises 0 the estimates are the true lengths.
    """
    outputs = np.asarray(outputs, dtype=np.int64)
    factor = (1.0 - noise_low) + (noise_low + noise_high) * rng.random(outputs.shape)
    return np.maximum(1, np.rint(outputs * factor)).astype(np.int64)


# -- exact H = 0 admission -------------------------------------------------------------
def bfio_exact(
    loads: np.ndarray, free: np.ndarray, prompts: np.ndarray, size_limit: int = 128, time_limit: float = 60.0
) -> Admissions:
    """The ``H = 0`` admission solved exactly as an integer program (HiGHS via ``scipy.optimize.milp``).

    With ``x_cg = 1`` when candidate ``c`` enters rank ``g``: minimise
    ``G M - sum_{c,g} p_c x_cg`` subject to ``L_g + sum_c p_c x_cg <= M``,
    ``sum_g x_cg <= 1``, ``sum_c x_cg <= free_g`` and ``sum_{c,g} x_cg =
    min(sum_g free_g, R)`` (every free slot filled when the candidates allow).
    Since ``sum_g L_g`` is fixed, the objective is the imbalance after the
    admission ``G max_g L'_g - sum_g L'_g`` up to a constant. Only ranks with
    a free slot get variables. Raises ``ValueError`` when ``R`` times the
    number of such ranks exceeds ``size_limit``, ``RuntimeError`` when HiGHS
    has not proved an optimum within ``time_limit`` seconds (the admission
    would not be exact).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp  # (lazy: a third of a second to import)

    loads = np.asarray(loads, dtype=np.int64)
    free = np.asarray(free, dtype=np.int64)
    prompts = np.asarray(prompts, dtype=np.int64)
    ranks = len(loads)
    open_ranks = np.flatnonzero(free > 0)
    count = len(prompts)
    admitted = min(int(free.sum()), count)
    if admitted == 0:
        return []
    width = len(open_ranks)
    size = count * width
    if size > size_limit:
        raise ValueError(
            f"bfio_exact: {count} candidates x {width} ranks with a free slot = {size} binary variables, "
            f"above size_limit = {size_limit}; raise size_limit or use bfio"
        )
    # variable c * width + j is x for candidate c and rank open_ranks[j]; the last one is M
    cost = np.concatenate((-np.repeat(prompts, width).astype(np.float64), [float(ranks)]))
    rows = []
    lower = []
    upper = []
    for j, rank in enumerate(open_ranks):  # L_g + admitted on g - M <= 0
        row = np.zeros(size + 1)
        row[j:size:width] = prompts
        row[-1] = -1.0
        rows.append(row)
        lower.append(-np.inf)
        upper.append(-float(loads[rank]))
    for c in range(count):  # each candidate at most once
        row = np.zeros(size + 1)
        row[c * width : (c + 1) * width] = 1.0
        rows.append(row)
        lower.append(0.0)
        upper.append(1.0)
    for j, rank in enumerate(open_ranks):  # at most free_g on rank g
        row = np.zeros(size + 1)
        row[j:size:width] = 1.0
        rows.append(row)
        lower.append(0.0)
        upper.append(float(free[rank]))
    row = np.ones(size + 1)  # every free slot filled when the candidates allow
    row[-1] = 0.0
    rows.append(row)
    lower.append(float(admitted))
    upper.append(float(admitted))
    constraints = LinearConstraint(np.array(rows), np.array(lower), np.array(upper))
    upper_x = np.ones(size)
    # Ranks in the same state (load and free slots: every rank at t = 0) are interchangeable.
    # Number each group's ranks by the first candidate they take: the k-th then takes no
    # candidate before the k-th, so x = 0 there. Every admission has such a copy (an optimum
    # is kept) and branch and bound is spared the mirror images of one assignment.
    groups: dict[tuple[int, int], int] = {}
    for j, rank in enumerate(open_ranks):
        k = groups.get((int(loads[rank]), int(free[rank])), 0)
        groups[(int(loads[rank]), int(free[rank]))] = k + 1
        upper_x[j : min(k, count) * width : width] = 0.0
    bounds = Bounds(np.full(size + 1, 0.0), np.concatenate((upper_x, [np.inf])))
    bounds.lb[-1] = float(loads.max())
    result = milp(
        cost,
        constraints=constraints,
        integrality=np.ones(size + 1, dtype=np.int64),
        bounds=bounds,
        options={"mip_rel_gap": 0.0, "time_limit": time_limit},
    )
    if result.x is None or not result.success:
        raise RuntimeError(
            f"bfio_exact: HiGHS proved no optimal admission of {count} candidates to {width} ranks within "
            f"{time_limit:g} s ({result.message}); reveal fewer requests or use bfio"
        )
    chosen = np.flatnonzero(np.rint(result.x[:size]) > 0.5)
    return [(int(k // width), int(open_ranks[k % width])) for k in chosen]


# -- BR-0 ------------------------------------------------------------------------------
def br0(loads_hat: np.ndarray, prompt: int) -> int:
    """BalanceRoute's prediction-free dispatch (BR-0) of one arriving request with ``prompt`` tokens.

    The rank maximising ``s - G max(s - m_g, 0)`` with ``s`` the prompt and
    ``m_g = max_h Lhat_h - Lhat_g`` its room under the envelope, ``Lhat_g``
    the resident plus queued tokens of rank ``g`` (Chen et al.,
    arXiv:2601.17855). Every rank where the prompt fits scores ``s``; among
    them, and whenever scores tie, the lowest index wins (the formula has no
    preference); when it fits nowhere the least-loaded rank wins.
    """
    loads_hat = np.asarray(loads_hat, dtype=np.int64)
    room = loads_hat.max() - loads_hat
    score = prompt - len(loads_hat) * np.maximum(prompt - room, 0)
    return int(np.argmax(score))


# -- the registered admission policies -----------------------------------------------------
# Thin wrappers: the rules above are pure functions of arrays; these read an
# engine's state (:class:`RankState`, :class:`Candidates`) and pass it on.
from .admission import AdmissionPolicy, Candidates, RankState, register_admission  # noqa: E402


@register_admission
class Bestfit(AdmissionPolicy):
    """The least-loaded rank with a free slot takes the largest prompt that fits under the current maximum load.

    If none fits, the smallest prompt (:func:`bestfit`).
    """

    name = "bestfit"
    Params = BestfitParams

    def admit(self, state: RankState, candidates: Candidates) -> Admissions:
        return bestfit(state.loads, state.free, candidates.prompt)


@register_admission
class BFIO(AdmissionPolicy):
    """BF-IO with lookahead H: admissions that keep the projected load envelope flat (:func:`bfio`).

    Chen et al., arXiv:2601.17855. ``H = 0`` reads no output length; ``H > 0``
    uses estimates ``o * U[1 - noise_low, 1 + noise_high]`` drawn once per
    request from the backend's stream.
    """

    name = "bfio"
    Params = BfioParams

    def estimate(self, output: int) -> int:
        p: BfioParams = self.params  # type: ignore[assignment]
        if p.noise_low == 0.0 and p.noise_high == 0.0:
            return output
        return int(estimate_outputs(np.array([output]), self.rng, p.noise_low, p.noise_high)[0])

    def admit(self, state: RankState, candidates: Candidates) -> Admissions:
        p: BfioParams = self.params  # type: ignore[assignment]
        ahead = p.horizon > 0
        return bfio(
            state.loads,
            state.free,
            candidates.prompt,
            state.lengths if ahead else None,
            state.remaining if ahead else None,
            candidates.output_estimate if ahead else None,
            p.horizon,
            alpha=p.alpha,
            beta=p.beta,
            decay=p.decay,
            greedy_threshold=p.greedy_threshold,
            candidates=p.candidates,
            subset_nodes=p.subset_nodes,
        )


@register_admission
class BFIOExact(AdmissionPolicy):
    """BF-IO's H = 0 admission solved exactly: fill every free slot, minimise G * M - admitted prompts (HiGHS)."""

    name = "bfio_exact"
    Params = BfioExactParams

    @classmethod
    def check_engine(cls, params: BaseModel, workers: int, slots: int, reveal: int) -> None:
        limit = params.size_limit  # type: ignore[attr-defined]
        if reveal * workers > limit:
            from ..errors import ScenarioError

            raise ScenarioError(
                "admission.size_limit",
                f"reveal x workers = {reveal * workers} binary variables exceed the limit {limit}: "
                "raise it (each admission then solves a larger integer program) or reveal fewer requests",
            )

    def admit(self, state: RankState, candidates: Candidates) -> Admissions:
        p: BfioExactParams = self.params  # type: ignore[assignment]
        return bfio_exact(state.loads, state.free, candidates.prompt, p.size_limit, p.time_limit)


@register_admission
class BR0(AdmissionPolicy):
    """BalanceRoute's prediction-free rule: on arrival, the rank maximising s - G * max(s - m_g, 0) (:func:`br0`).

    ``m_g = max_h Lhat_h - Lhat_g`` with ``Lhat`` resident plus queued tokens.
    """

    name = "br0"
    Params = Br0Params
    dispatch = "on_arrival"

    def assign(self, state: RankState, prompt: int, now: float) -> int:
        return br0(state.loads + state.queued_tokens, prompt)
