"""Prequal: asynchronous reusable probes and the hot-cold lexicographic rule.

Wydrowski, Kleinberg, Rumble, Archer, "Load is not what you should balance:
Introducing Prequal", NSDI 2024, arXiv:2312.10172. Prequal balances what a
query will *experience* (requests in flight and latency at each server),
learned by probing, rather than load or CPU. In lbsim:

* **Probes.** Each query at frontend ``i`` sends ``r_probe`` probes to
  distinct uniformly random backends of ``N(i)`` (Floyd's sampling, O(r_probe));
  a fractional ``r_probe`` is rounded deterministically per frontend, so
  exactly ``floor(k * r_probe)`` probes leave after its ``k`` first queries. A probe
  travels ``d_ij`` to the backend, reads its RIF (jobs present) and its
  latency estimate there (:mod:`lbsim.engine.probing`: median latency of
  recent jobs that arrived at about the current RIF), and travels ``d_ij``
  back. Probes are asynchronous: a query never waits for its own probes, it
  uses the replies already in the pool. Optional idle probing: every
  ``idle_probe_interval`` s, a frontend that sent no probe since the last
  round sends one, so the pool does not go stale when queries are rare.
* **Pool** (per frontend, at most ``pool_size`` = 16 entries, one per backend:
  a newer reply from a backend replaces the older one). The oldest entry
  (earliest ``t_answered``) is evicted on overflow; entries whose information
  is older than ``max_age`` are dropped. Each entry may be used
  ``b_reuse = max(1, (1 + delta) / ((1 - m/n) r_probe - r_remove))`` times
  (paper section 4; ``m`` the pool size when the reply lands, ``n = |N(i)|``:
  ``m/n`` is the chance a new probe only refreshes an entry already in the
  pool), randomly rounded so its mean is exact; when the denominator is
  ``<= 0`` no finite budget keeps the pool from draining, so reuse is
  unlimited (the formula's limit) and entries leave by removal, age or
  eviction. Using an entry adds 1 to its RIF (the query just sent there).
  Each query then removes ``r_remove`` entries (rounded the same way),
  alternately the oldest and the worst (the one the selection rule likes
  least: the hottest by RIF if any is hot, else the slowest).
* **Selection (HCL).** An entry is *hot* if its RIF exceeds the ``q_rif``
  quantile of the RIFs in the last ``rif_window`` probe replies of this
  frontend. Among cold entries take the lowest latency (unknown latency
  last, then lowest RIF); if all are hot, the lowest RIF. Ties are broken
  at random. With fewer than 2 entries, a uniformly random neighbour.

Per query the cost is O(r_probe + pool_size) (plus an O(rif_window) list
shift in C per probe reply); nothing scales with the number of backends.

**max_age.** The paper uses 1 s for queries taking tens of milliseconds.
lbsim has no fixed time scale, so by default ``max_age = max_age_services *
T`` with ``T`` the mean over backends of ``sbar / mu_j(sbar)``, the time one
job of mean size takes alone on a backend (which, unlike ``sbar``, stays
put as ``job_scale -> 0`` for rate families with ``mu(0+) = 0``);
``max_age`` in seconds overrides it.

Prequal ignores network distance (as in the paper: servers in one
datacenter); it reads no telemetry, only its own probes, so it behaves the
same under every telemetry mode.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from fractions import Fraction
from functools import partial

from pydantic import BaseModel, ConfigDict, Field

from ..engine.probing import LatencyByRif
from .base import ProbeReply, Router, register

INF = math.inf


class PrequalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    r_probe: float = Field(3.0, ge=0, description="probes sent per query (fractional: exact long-run rate)")
    r_remove: float = Field(1.0, ge=0, description="pool entries removed per query, alternately oldest and worst")
    pool_size: int = Field(16, ge=2, description="probe pool capacity per frontend (oldest evicted on overflow)")
    delta: float = Field(1.0, ge=0, description="reuse slack: b_reuse = max(1, (1+delta)/((1-m/n) r_probe - r_remove))")
    q_rif: float = Field(0.84, gt=0, le=1, description="hot if RIF exceeds this quantile of recently probed RIFs")
    rif_window: int = Field(64, ge=1, description="recent probe replies per frontend the RIF quantile is taken over")
    max_age: float | None = Field(None, gt=0, description="seconds a pool entry stays usable (default: scaled)")
    max_age_services: float = Field(
        10.0, gt=0, description="default max_age in units of the mean lone-job service time sbar/mu_j(sbar)"
    )
    latency_window: int = Field(16, ge=1, description="backend side: recent latencies kept per RIF bucket")
    idle_probe_interval: float | None = Field(
        None, gt=0, description="seconds between idle probes of a frontend that sent none (default: off)"
    )


class PoolEntry:
    """A probe reply in a frontend's pool, with what this frontend has done with it since."""

    __slots__ = ("backend", "rif", "latency", "t_answered", "uses_left")

    def __init__(self, backend: int, rif: int, latency: float, t_answered: float, uses_left: float):
        self.backend = backend
        self.rif = rif
        self.latency = latency  # NaN: the backend had no latency history yet
        self.t_answered = t_answered
        self.uses_left = uses_left

    def __repr__(self) -> str:
        return f"PoolEntry(backend={self.backend}, rif={self.rif}, latency={self.latency:.4g}, uses_left={self.uses_left})"


@register
class Prequal(Router):
    """Prequal: probe r_probe random backends per query, pick from the probe pool by hot-cold RIF/latency.

    Wydrowski et al., "Load is not what you should balance: Introducing
    Prequal", NSDI 2024 (arXiv:2312.10172). See the module docstring for the
    pool rules (reuse budget, removal, expiry) and the defaults.
    """

    name = "prequal"
    Params = PrequalParams

    def __init__(self, params: PrequalParams, ctx):
        super().__init__(params, ctx)
        F = ctx.num_frontends
        self.pools: list[list[PoolEntry]] = [[] for _ in range(F)]
        # Fractional rates are exact rationals p/q; after k queries exactly floor(k p/q) probes
        # (removals) have been made, in integer arithmetic so no rounding drifts over long runs.
        self._probe_rate = _rational(params.r_probe)
        self._remove_rate = _rational(params.r_remove)
        self._queries = [0] * F
        self._remove_worst_next = [False] * F  # removals alternate: oldest first, then worst
        self._rif_fifo: list[deque[int]] = [deque() for _ in range(F)]
        self._rif_sorted: list[list[int]] = [[] for _ in range(F)]
        self._last_probe = [-INF] * F
        self._on_reply = [partial(self.receive, i) for i in range(F)]
        self.probes_sent = 0
        self.max_age = params.max_age if params.max_age is not None else params.max_age_services * self.service_time()
        window = params.latency_window
        self.backend_observer = lambda _j: LatencyByRif(window)
        if params.idle_probe_interval is not None:
            self.tick_interval = params.idle_probe_interval

    def service_time(self) -> float:
        """T = mean over usable backends of sbar / mu_j(sbar): one mean-size job's time alone."""
        sbar = self.ctx.mean_size
        times = [sbar / float(mu.value(sbar)) for mu in self.ctx.rates if float(mu.value(sbar)) > 0.0]
        return sum(times) / len(times)

    # -- the query path ---------------------------------------------------------------
    def route(self, frontend, job, view):
        now = self.ctx.now()
        queries = self._queries[frontend]
        self._queries[frontend] = queries + 1
        num, den = self._probe_rate
        count = (queries + 1) * num // den - queries * num // den
        if count:
            self.send_probes(frontend, count, now)

        pool = self.pools[frontend]
        cutoff = now - self.max_age
        for entry in pool:
            if entry.t_answered < cutoff:
                pool[:] = [e for e in pool if e.t_answered >= cutoff]
                break

        if len(pool) < 2:
            backend = self.choice(self.neighbours[frontend])
        else:
            threshold = self.hot_threshold(frontend)
            entry = self.select(pool, threshold)
            backend = entry.backend
            entry.rif += 1
            entry.uses_left -= 1
            if entry.uses_left <= 0:
                pool.remove(entry)

        num, den = self._remove_rate
        for _ in range((queries + 1) * num // den - queries * num // den):
            if not pool:
                break
            worst = self._remove_worst_next[frontend]
            self._remove_worst_next[frontend] = not worst
            pool.remove(self.worst(pool, self.hot_threshold(frontend)) if worst else self.oldest(pool))
        return backend

    # -- probes -----------------------------------------------------------------------
    def send_probes(self, frontend: int, count: int, now: float) -> None:
        """Probe ``count`` distinct uniformly random neighbours (all of them if there are fewer)."""
        candidates = self.neighbours[frontend]
        n = len(candidates)
        if count >= n:
            targets = candidates
        else:
            # Floyd's algorithm: count distinct indices in O(count) draws, independent of n.
            chosen: list[int] = []
            for top in range(n - count, n):
                k = int(self.uniform() * (top + 1))
                chosen.append(top if k in chosen else k)
            targets = [candidates[k] for k in chosen]
        probe, on_reply = self.ctx.probe, self._on_reply[frontend]
        for backend in targets:
            probe(frontend, backend, on_reply)
        self.probes_sent += len(targets)
        self._last_probe[frontend] = now

    def tick(self, now, view):
        """Idle probing: a frontend that sent no probe for an interval sends one."""
        interval = self.params.idle_probe_interval
        for frontend in range(self.ctx.num_frontends):
            if self._last_probe[frontend] <= now - interval:
                self.send_probes(frontend, 1, now)

    def receive(self, frontend: int, reply: ProbeReply) -> None:
        """A probe reply lands at ``frontend``: record its RIF, put it in the pool."""
        fifo, ordered = self._rif_fifo[frontend], self._rif_sorted[frontend]
        fifo.append(reply.rif)
        insort(ordered, reply.rif)
        if len(fifo) > self.params.rif_window:
            del ordered[bisect_left(ordered, fifo.popleft())]

        pool = self.pools[frontend]
        for entry in pool:
            if entry.backend == reply.backend:
                if entry.t_answered >= reply.t_answered:
                    return  # overtaken on the way (jitter): the pool already has fresher news
                pool.remove(entry)
                break
        uses = self.reuse_budget(len(pool), len(self.neighbours[frontend]))
        if uses != INF:
            whole = math.floor(uses)
            uses = whole + (1 if self.uniform() < uses - whole else 0)
        pool.append(PoolEntry(reply.backend, reply.rif, reply.latency, reply.t_answered, uses))
        if len(pool) > self.params.pool_size:
            pool.remove(self.oldest(pool))

    def reuse_budget(self, pool_size: int, neighbours: int) -> float:
        """b_reuse = max(1, (1+delta) / ((1 - m/n) r_probe - r_remove)), before random rounding.

        ``inf`` when the denominator is <= 0 (see the module docstring).
        """
        p = self.params
        denominator = (1.0 - pool_size / neighbours) * p.r_probe - p.r_remove
        if denominator <= 0.0:
            return INF
        return max(1.0, (1.0 + p.delta) / denominator)

    # -- the hot-cold rule --------------------------------------------------------------
    def hot_threshold(self, frontend: int) -> float:
        """The q_rif quantile (the smallest value with at least q_rif of the window at or below it)."""
        ordered = self._rif_sorted[frontend]
        if not ordered:
            return INF
        k = math.ceil(self.params.q_rif * len(ordered)) - 1
        return ordered[min(max(k, 0), len(ordered) - 1)]

    @staticmethod
    def preference(entry: PoolEntry, threshold: float) -> tuple:
        """The selection order, smallest first: cold by latency (unknown last) then RIF; then hot by RIF."""
        if entry.rif > threshold:
            return (1, entry.rif, 0.0)
        latency = entry.latency
        return (0, latency if latency == latency else INF, entry.rif)

    def select(self, pool: list[PoolEntry], threshold: float) -> PoolEntry:
        """The entry HCL picks (ties at random)."""
        return self._extreme(pool, threshold, min)

    def worst(self, pool: list[PoolEntry], threshold: float) -> PoolEntry:
        """The entry HCL likes least (ties at random)."""
        return self._extreme(pool, threshold, max)

    def _extreme(self, pool, threshold, pick) -> PoolEntry:
        preference = self.preference
        keys = [preference(e, threshold) for e in pool]
        best = pick(keys)
        ties = [e for e, k in zip(pool, keys) if k == best]
        return ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]

    @staticmethod
    def oldest(pool: list[PoolEntry]) -> PoolEntry:
        """The entry with the oldest information (earliest t_answered; the first received on a tie)."""
        oldest = pool[0]
        for entry in pool:
            if entry.t_answered < oldest.t_answered:
                oldest = entry
        return oldest


def _rational(rate: float) -> tuple[int, int]:
    """``rate`` as a fraction p/q (``0.3`` is 3/10, not the binary float nearest to it)."""
    f = Fraction(rate).limit_denominator(1_000_000)
    return f.numerator, f.denominator
