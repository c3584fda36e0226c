"""Prequal: asynchronous reusable probes and the hot-cold lexicographic rule.

Wydrowski, Kleinberg, Rumble, Archer, "Load is not what you should balance:
Introducing Prequal", NSDI 2024, arXiv:2312.10172. Prequal balances what a
query will *experience* (requests in flight and latency at each server),
learned by probing, rather than load or CPU. In lbsim:

* **Probes.** Each query at frontend ``i`` sends ``r_probe`` probes to
  distinct uniformly random backends of ``N(i)`` (Floyd's sampling,
  O(r_probe)); a fractional ``r_probe`` is rounded deterministically per
  frontend, so exactly ``floor(k * r_probe)`` probes leave after its ``k``
  first queries. A probe travels ``d_ij`` to the backend, reads its RIF (jobs present) and its
  sojourn estimate there (:class:`SojournByRif`, below: median sojourn of
  recent jobs that arrived at about the current RIF), and travels ``d_ij``
  back. Probes are asynchronous: a query never waits for its own probes, it
  uses the replies already in the pool. A reply waits in the router's
  :class:`~lbsim.routers.base.ProbeInbox` from its landing to the router's
  next action (query or idle probe), which takes every landed reply first,
  in landing order: nothing sees a reply in between, so results are those
  of delivering it when it lands, for one kernel event per probe, not two.
  Optional idle probing: every ``idle_probe_interval`` s, a frontend that
  sent no probe since the last round sends one, so the pool does not go
  stale when queries are rare.
* **Pool** (per frontend, at most ``pool_size`` = 16 entries, one per backend:
  a newer reply from a backend replaces the older one). The oldest entry
  (earliest ``t_answered``) is evicted on overflow; entries whose information
  is older than ``max_age`` are dropped. Each entry may be used
  ``b_reuse = max(1, (1 + delta) / ((1 - m/n) r_probe - r_remove))`` times
  (``m`` the pool size when the reply lands, ``n = |N(i)|``:
  ``m/n`` is the chance a new probe only refreshes an entry already in the
  pool), randomly rounded so its mean is exact; when the denominator is
  ``<= 0`` no finite budget keeps the pool from draining, so reuse is
  unlimited (the formula's limit) and entries leave by removal, age or
  eviction (with few backends, ``n`` near ``pool_size``, that is the usual
  case). Using an entry adds 1 to its RIF (the query just sent there).
  Each query then removes ``r_remove`` entries (rounded the same way),
  alternately the oldest and the worst (the one the selection rule likes
  least: the hottest by RIF if any is hot, else the slowest).
* **Selection (HCL).** An entry is *hot* if its RIF exceeds the ``q_rif``
  quantile of the RIFs in the last ``rif_window`` probe replies of this
  frontend. Among cold entries take the lowest sojourn estimate (then the lowest
  RIF); if all are hot, the lowest RIF. Ties are broken at random. With
  fewer than 2 entries, a uniformly random neighbour. An unknown estimate
  (NaN: the backend has completed nothing in the last ``sojourn_timeout``
  s, default ``max_age``) ranks first among the cold: the only way to learn
  a backend's sojourn is to send it a job, and ranking it last would lock
  out for good a backend that was once avoided.

Per query the cost is O(r_probe + pool_size) (plus an O(rif_window) list
shift in C per probe reply); nothing scales with the number of backends.

**max_age.** The 1 s of the specification suits a production service whose
queries take milliseconds; lbsim has no fixed time scale, so by default
``max_age = max_age_services * T`` with ``T`` the mean over backends of
``sbar / mu_j(sbar)``, the time one job of mean size takes alone on a
backend (which, unlike ``sbar``, stays put as ``job_scale -> 0`` for rate
families with ``mu(0+) = 0``); ``max_age`` in seconds overrides it. At high
load the pool turns over long before entries reach that age (every query
brings ``r_probe`` replies and removes ``r_remove`` entries); ``max_age``
matters when queries are sparse.

Prequal ignores network distance (as in the paper: servers in one
datacenter); it reads no telemetry, only its own probes, so it behaves the
same under every telemetry mode.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from .base import ProbeInbox, ProbeReply, Router, RouterContext, register

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View

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
    # named latency_* before 0.2 (Prequal's server-side "latency" is a job's sojourn): still accepted
    sojourn_window: int = Field(
        16,
        ge=1,
        validation_alias=AliasChoices("sojourn_window", "latency_window"),
        description="backend side: recent sojourns kept per RIF bucket",
    )
    sojourn_timeout: float | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("sojourn_timeout", "latency_timeout"),
        description="backend side: sojourn estimate unknown after this long without a completion (default: max_age)",
    )
    idle_probe_interval: float | None = Field(
        None, gt=0, description="seconds between idle probes of a frontend that sent none (default: off)"
    )


# A pool entry is a plain list, indexed by these (one is built per probe reply: an instance of a
# class costs five times as much). ORDER and RIF come first so that comparing two entries compares
# them by (sojourn estimate, RIF) first, the selection rule's order; BACKEND, unique in a pool,
# comes before the estimate, which may be NaN and so is never compared.
ORDER, RIF, T_ANSWERED, USES_LEFT, BACKEND, SOJOURN_ESTIMATE = range(6)


def pool_entry(backend: int, rif: int, sojourn_estimate: float, t_answered: float, uses_left: float) -> list:
    """A pool entry: a probe reply, with what its frontend has done with it since (RIF, uses left)."""
    # an unknown estimate (NaN) ranks first among the cold
    order = sojourn_estimate if sojourn_estimate == sojourn_estimate else -INF
    return [order, rif, t_answered, uses_left, backend, sojourn_estimate]


class PoolEntry(NamedTuple):
    """A pool entry as :meth:`Prequal.pool` shows it (the router itself keeps :func:`pool_entry` lists)."""

    backend: int
    rif: int  # the RIF answered, plus one for each query this frontend has sent there since
    sojourn_estimate: float  # NaN: unknown
    t_answered: float
    uses_left: float


@register
class Prequal(Router):
    """Prequal: probe r_probe random backends per query, pick from the probe pool by hot-cold RIF/sojourn.

    Wydrowski et al., "Load is not what you should balance: Introducing
    Prequal", NSDI 2024 (arXiv:2312.10172). See the module docstring for the
    pool rules (reuse budget, removal, expiry) and the defaults.
    """

    name = "prequal"
    uses_rates = True
    Params = PrequalParams
    params: PrequalParams

    def __init__(self, params: PrequalParams, ctx: RouterContext):
        super().__init__(params, ctx)
        F = ctx.num_frontends
        # Each pool maps backend -> entry (one entry per backend), in the order the replies landed.
        self.pools: list[dict[int, list]] = [{} for _ in range(F)]
        # A lower bound of the t_answered in each pool: no entry can be stale while it is >= now - max_age,
        # so a query scans its pool for stale entries only when the bound says one may be.
        self._oldest_bound = [INF] * F
        # Fractional rates are exact rationals p/q; after k queries exactly floor(k p/q) probes
        # (removals) have been made, in integer arithmetic so no rounding drifts over long runs.
        self._probe_rate = _rational(params.r_probe)
        self._remove_rate = _rational(params.r_remove)
        self._queries = [0] * F
        self._remove_worst_next = [False] * F  # removals alternate: oldest first, then worst
        self._rif_fifo: list[deque[int]] = [deque() for _ in range(F)]
        self._rif_sorted: list[list[int]] = [[] for _ in range(F)]
        self._last_probe = [-INF] * F
        # Replies wait here until the router next acts (route, tick): one inbox for all frontends,
        # since they share one random stream and each reply may draw from it (its reuse budget).
        self.inbox = ProbeInbox()
        self.probes_sent = 0
        # parameters read per probe reply, as plain attributes (a pydantic model's are slower)
        self._rif_window = params.rif_window
        self._pool_size = params.pool_size
        self._budget_terms = (params.r_probe, params.r_remove, params.delta)
        self._neighbour_counts = [len(nb) for nb in self.neighbours]
        # Where the hot threshold sits in the sorted RIF window, by the window's length (hot_threshold).
        q = params.q_rif
        self._quantile_index = [0] + [min(max(math.ceil(q * n) - 1, 0), n - 1) for n in range(1, params.rif_window + 1)]
        # b_reuse by pool size m = 0..pool_size, per frontend: None (unlimited) or (whole part, fraction).
        self._reuses = [
            [_whole_and_fraction(self.reuse_budget(m, n)) for m in range(params.pool_size + 1)] if n else []
            for n in self._neighbour_counts
        ]
        # what a reply needs of its frontend, in one tuple (one lookup per reply)
        self._frontend_state = list(zip(self._rif_fifo, self._rif_sorted, self.pools, self._reuses))
        self.max_age = params.max_age if params.max_age is not None else params.max_age_services * self.service_time()
        window = params.sojourn_window
        timeout = params.sojourn_timeout if params.sojourn_timeout is not None else self.max_age
        self.backend_observer = lambda _j: SojournByRif(window, timeout, ctx.now)
        if params.idle_probe_interval is not None:
            self.tick_interval = params.idle_probe_interval

    def service_time(self) -> float:
        """T = mean over usable backends of sbar / mu_j(sbar): one mean-size job's time alone."""
        sbar = self.ctx.mean_size
        times = [sbar / float(mu.value(sbar)) for mu in self.ctx.rates if float(mu.value(sbar)) > 0.0]
        return sum(times) / len(times)

    def pool(self, frontend: int) -> dict[int, PoolEntry]:
        """The pool of ``frontend``, backend -> entry, in the order the replies landed (a copy, for reading).

        Replies that have landed by now are taken from the inbox first (early,
        which changes nothing: its next action would take them, in that order).
        """
        if self.inbox:
            self.take_replies(self.ctx.now())
        return {
            b: PoolEntry(b, e[RIF], e[SOJOURN_ESTIMATE], e[T_ANSWERED], e[USES_LEFT])
            for b, e in self.pools[frontend].items()
        }

    # -- the query path ---------------------------------------------------------------
    def route(self, frontend: int, job: Job, view: View) -> int:
        now = self.ctx.now()
        inbox = self.inbox
        if inbox and inbox[0][0] <= now:
            self.take_replies(now)
        queries = self._queries[frontend]
        self._queries[frontend] = queries + 1
        num, den = self._probe_rate
        count = (queries + 1) * num // den - queries * num // den
        if count:
            self.send_probes(frontend, count, now)

        pool = self.pools[frontend]
        cutoff = now - self.max_age
        if self._oldest_bound[frontend] < cutoff:
            for stale in [b for b, e in pool.items() if e[T_ANSWERED] < cutoff]:
                del pool[stale]
            self._oldest_bound[frontend] = min([e[T_ANSWERED] for e in pool.values()], default=INF)

        ordered = self._rif_sorted[frontend]  # the RIF window changes only when replies land
        threshold = ordered[self._quantile_index[len(ordered)]] if ordered else INF
        if len(pool) < 2:
            backend = self.choice(self.neighbours[frontend])
        else:
            entry = self.select(pool, threshold)
            backend = entry[BACKEND]
            entry[RIF] += 1
            entry[USES_LEFT] -= 1
            if entry[USES_LEFT] <= 0:
                del pool[backend]

        num, den = self._remove_rate
        for _ in range((queries + 1) * num // den - queries * num // den):
            if not pool:
                break
            worst = self._remove_worst_next[frontend]
            self._remove_worst_next[frontend] = not worst
            del pool[(self.worst(pool, threshold) if worst else min(pool.values(), key=_T_ANSWERED))[BACKEND]]
        return backend

    # -- probes -----------------------------------------------------------------------
    def send_probes(self, frontend: int, count: int, now: float) -> None:
        """Probe ``count`` distinct uniformly random neighbours (all of them if there are fewer).

        The targets are :meth:`Router.sample`'s (Floyd's algorithm), with its
        draws taken from the batch in place while the batch lasts.
        """
        candidates = self.neighbours[frontend]
        n = len(candidates)
        uniforms = self._uniforms
        probe, inbox = self.ctx.probe, self.inbox
        if count < n and len(uniforms) >= count:
            # Floyd's draws in place, each target probed as it is drawn (probing draws nothing here)
            chosen: list[int] = []
            for top in range(n - count, n):
                k = int(uniforms.pop() * (top + 1))
                if k in chosen:
                    k = top
                chosen.append(k)
                probe(frontend, candidates[k], inbox)
        else:  # all neighbours, or the batch runs out on the way: sample() refills it at the same draw
            for backend in self.sample(candidates, count):
                probe(frontend, backend, inbox)
        self.probes_sent += min(count, n)
        self._last_probe[frontend] = now

    def tick(self, now: float, view: View) -> None:
        """Idle probing: a frontend that sent no probe for an interval sends one."""
        interval = self.params.idle_probe_interval
        assert interval is not None  # tick runs only with idle probing on
        if self.inbox:
            self.take_replies(now)
        for frontend in range(self.ctx.num_frontends):
            if self._last_probe[frontend] <= now - interval:
                self.send_probes(frontend, 1, now)

    def take_replies(self, now: float) -> None:
        """Receive every reply that has landed before the event being processed, in the order they landed."""
        pop_landed, receive, event_id = self.inbox.pop_landed, self.receive, self.ctx.event_id
        while (landed := pop_landed(now, event_id)) is not None:
            receive(landed[2], landed[3])

    def receive(self, frontend: int, reply: ProbeReply) -> None:
        """A probe reply lands at ``frontend``: record its RIF, put it in the pool."""
        backend, rif, sojourn_estimate, _, t_answered = reply
        fifo, ordered, pool, reuses_by_size = self._frontend_state[frontend]
        fifo.append(rif)
        insort(ordered, rif)
        if len(fifo) > self._rif_window:
            del ordered[bisect_left(ordered, fifo.popleft())]

        known = pool.get(backend)
        if known is not None:
            if known[T_ANSWERED] >= t_answered:
                return  # overtaken on the way (jitter): the pool already has fresher news
            del pool[backend]
        reuses = reuses_by_size[len(pool)]  # draw_reuses(len(pool), n), from the table
        if reuses is None:
            uses: float = INF
        else:
            uniforms = self._uniforms
            uses = reuses[0] + ((uniforms.pop() if uniforms else self.uniform()) < reuses[1])
        pool[backend] = [
            sojourn_estimate if sojourn_estimate == sojourn_estimate else -INF,  # pool_entry(), inlined
            rif,
            t_answered,
            uses,
            backend,
            sojourn_estimate,
        ]
        if t_answered < self._oldest_bound[frontend]:
            self._oldest_bound[frontend] = t_answered
        if len(pool) > self._pool_size:
            del pool[min(pool.values(), key=_T_ANSWERED)[BACKEND]]

    def reuse_budget(self, pool_size: int, neighbours: int) -> float:
        """b_reuse = max(1, (1+delta) / ((1 - m/n) r_probe - r_remove)), before random rounding.

        ``inf`` when the denominator is <= 0 (see the module docstring).
        """
        r_probe, r_remove, delta = self._budget_terms
        denominator = (1.0 - pool_size / neighbours) * r_probe - r_remove
        if denominator <= 0.0:
            return INF
        return max(1.0, (1.0 + delta) / denominator)

    def draw_reuses(self, pool_size: int, neighbours: int) -> float:
        """b_reuse randomly rounded (floor or ceiling, with the mean exact) with the router's RNG."""
        budget = self.reuse_budget(pool_size, neighbours)
        if budget == INF:
            return INF
        whole = int(budget)
        return whole + (self.uniform() < budget - whole)

    # -- the hot-cold rule --------------------------------------------------------------
    def hot_threshold(self, frontend: int) -> float:
        """The q_rif quantile (the smallest value with at least q_rif of the window at or below it)."""
        ordered = self._rif_sorted[frontend]
        return ordered[self._quantile_index[len(ordered)]] if ordered else INF

    def select(self, pool: dict[int, list], threshold: float) -> list:
        """The entry HCL picks: the cold one with the lowest (sojourn estimate, RIF), else the lowest RIF.

        Ties are broken at random.
        """
        entries = pool.values()
        best = min(entries)  # entries compare by (order, RIF) first
        if best[RIF] > threshold:  # the best overall is hot: look among the cold only
            cold = [e for e in entries if e[RIF] <= threshold]
            if not cold:
                rif = min(entries, key=_RIF)[RIF]
                ties = [e for e in entries if e[RIF] == rif]
                return ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]
            best = min(cold)
        # every entry tied with the best is as cold as it is
        order, rif = best[ORDER], best[RIF]
        ties = [e for e in entries if e[RIF] == rif and e[ORDER] == order]
        return ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]

    def worst(self, pool: dict[int, list], threshold: float) -> list:
        """The entry HCL likes least: the hot one with the highest RIF, else the slowest (ties at random)."""
        entries = pool.values()
        rif = max(entries, key=_RIF)[RIF]
        if rif > threshold:  # some are hot: the highest RIF (hot, as its ties are)
            ties = [e for e in entries if e[RIF] == rif]
        else:
            worst = max(entries)  # entries compare by (order, RIF) first
            order, rif = worst[ORDER], worst[RIF]
            ties = [e for e in entries if e[RIF] == rif and e[ORDER] == order]
        return ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]

    @staticmethod
    def oldest(pool: dict[int, list]) -> list:
        """The entry with the oldest information (earliest t_answered; the first received on a tie)."""
        return min(pool.values(), key=_T_ANSWERED)


_RIF = itemgetter(RIF)
_T_ANSWERED = itemgetter(T_ANSWERED)


def _whole_and_fraction(budget: float) -> tuple[int, float] | None:
    """A reuse budget split as draw_reuses rounds it: None if unlimited, else (int(b), b - int(b))."""
    if budget == INF:
        return None
    whole = int(budget)
    return whole, budget - whole


def _rational(rate: float) -> tuple[int, int]:
    """``rate`` as a fraction p/q (``0.3`` is 3/10, not the binary float nearest to it)."""
    f = Fraction(rate).limit_denominator(1_000_000)
    return f.numerator, f.denominator


# -- the backend side: sojourn at RIF -----------------------------------------------------------
#: RIFs below this have a bucket each (must be a power of two >= 4)
EXACT_BELOW = 8
#: buckets per doubling above EXACT_BELOW
PER_DOUBLING = 4
_SHIFT = PER_DOUBLING.bit_length() - 1  # log2(PER_DOUBLING)
_EXACT_EXP = EXACT_BELOW.bit_length() - 1


def rif_bucket(rif: int) -> int:
    """The bucket of a RIF: itself below :data:`EXACT_BELOW`, then 4 log-spaced buckets per doubling."""
    if rif < EXACT_BELOW:
        return rif
    e = rif.bit_length() - 1  # 2**e <= rif < 2**(e+1)
    return EXACT_BELOW + PER_DOUBLING * (e - _EXACT_EXP) + ((rif >> (e - _SHIFT)) & (PER_DOUBLING - 1))


#: rif_bucket(rif) for the RIFs below _TABLED, looked up twice per job and once per probe
_TABLED = 4096
_BUCKETS = [rif_bucket(rif) for rif in range(_TABLED)]


def bucket_range(bucket: int) -> tuple[int, int]:
    """The RIFs ``[low, high]`` a bucket holds (for documentation and tests)."""
    if bucket < EXACT_BELOW:
        return bucket, bucket
    e, sub = divmod(bucket - EXACT_BELOW, PER_DOUBLING)
    e += _EXACT_EXP
    width = 1 << (e - _SHIFT)
    low = (1 << e) + sub * width
    return low, low + width - 1


def median(values) -> float:
    s = sorted(values)
    n = len(s)
    h = n // 2
    return s[h] if n % 2 else 0.5 * (s[h - 1] + s[h])


class SojournByRif:
    """One backend's sojourn-at-RIF history (Prequal): ``window`` recent sojourns per RIF bucket.

    What a backend answers a probe: the median sojourn of recent jobs at its
    current RIF (the paper calls it the server's latency; in lbsim latency is
    the response time at the frontend, network included). With a ``clock``, a backend that has completed
    nothing for ``timeout`` seconds answers NaN (**Idle backends**, below).

    Prequal (Wydrowski, Kleinberg, Rumble, Archer, "Load is not what you should
    balance: Introducing Prequal", NSDI 2024, arXiv:2312.10172) has
    each server answer a probe with its requests in flight (RIF) and an estimate
    of the time a query would spend there now: the median of recently
    completed queries that arrived when the RIF was about what it is now. Sojourn
    grows with RIF at a rate that differs from server to server (capacity,
    antagonist load), so keying the history by RIF gives an estimate that is
    current for the server's present state, not an average over whatever states
    it went through.

    This class is that tracker, attached to one backend by the engine
    (``Backend.observer``, from :attr:`Prequal.backend_observer`). Its hooks:

    * ``arrived(job, now, rif)``: ``rif`` is the number of jobs present before
      this one; the job is tagged with its bucket;
    * ``finished(job, now)``: the job's sojourn (the paper's server-side
      latency, ``now - t_backend_arrival``) joins the window of its arrival bucket;
    * ``estimate(rif)``: the median of the window of ``rif``'s bucket.

    **Bucketing.** RIFs below 8 have a bucket each; above, buckets are 4 per
    doubling (8-9, 10-11, 12-13, 14-15, 16-19, ..., 28-31, 32-39, ...), a width of
    12.5-25% of the RIF. Small job sizes (``job_scale`` -> 0) make RIFs large, and
    exact buckets would then each see few jobs and answer from stale data; a
    relative width keeps "about the current RIF" meaning the same at any scale.

    **Windows.** Each bucket keeps the sojourns of its last ``window`` jobs
    (a deque), so memory is bounded by the number of buckets (logarithmic in the
    largest RIF) times ``window``, plus one tag per job present. The median is
    cached per bucket until the bucket changes. Windows are bounded by count,
    not age: a median of few samples is noisy (sojourns of exponential jobs
    vary by 100%), and choosing the lowest of 16 noisy medians picks the luckiest
    noise, not the fastest backend; ageing samples out by time emptied the
    windows of busy backends and made Prequal clearly worse in our runs.

    **Idle backends.** A backend that completed no job for ``timeout`` seconds
    answers NaN (unknown), whatever its history. Its history describes a state
    it may have left (antagonist load that has gone), and a router that avoids
    it sends none of the jobs that would refresh that history: without this
    rule a backend that was slow once is locked out for good.

    **Fallback.** A bucket without sojourns answers with the median of the
    nearest bucket that has some (on a tie, the higher one), scaled by
    ``(rif + 1) / (rif' + 1)`` with ``rif'`` the middle of that bucket: sojourn
    per request in flight, counting the new one, as in a queue where each job
    waits for those ahead of it. A plain nearest-bucket answer is optimistic
    for a backend whose RIF climbs past what it has seen (it answers with the
    sojourn of a lower RIF) and such a backend attracts yet more queries. For
    concave rates (LLM batching) sojourn grows more slowly than RIF, so the
    scaled answer errs on the pessimistic side. A backend that has completed
    nothing answers NaN.
    """

    __slots__ = ("_known", "_medians", "_tags", "_windows", "clock", "last_done", "timeout", "window")

    def __init__(self, window: int = 16, timeout: float = math.inf, clock: Callable[[], float] | None = None):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.window = window
        self.timeout = timeout
        self.clock = clock if timeout < math.inf else None
        self.last_done = -math.inf
        self._windows: dict[int, deque[float]] = {}
        self._medians: dict[int, float] = {}  # cache, dropped for a bucket when its window changes
        self._known: list[int] = []  # sorted buckets that have sojourns
        self._tags: dict[int, int] = {}  # job_id -> bucket at its arrival, for the jobs present

    # -- observer hooks (called by the backend) -----------------------------------------
    def arrived(self, job: Job, now: float, rif: int) -> None:
        self._tags[job.job_id] = _BUCKETS[rif] if rif < _TABLED else rif_bucket(rif)

    def finished(self, job: Job, now: float) -> None:
        bucket = self._tags.pop(job.job_id)
        values = self._windows.get(bucket)
        if values is None:  # add(), inlined: this runs once per job
            values = self._windows[bucket] = deque(maxlen=self.window)
            insort(self._known, bucket)
        values.append(now - job.t_backend_arrival)
        self._medians.pop(bucket, None)
        self.last_done = now

    def estimate(self, rif: int) -> float:
        """The median recent sojourn at about ``rif`` (else scaled from the nearest bucket; NaN if unknown)."""
        if self.clock is not None and self.clock() - self.last_done > self.timeout:
            return math.nan
        bucket = _BUCKETS[rif] if rif < _TABLED else rif_bucket(rif)
        cached = self._medians.get(bucket)
        if cached is not None:
            return cached
        if bucket in self._windows:
            return self._median(bucket)
        nearest = self._nearest(bucket)
        if nearest is None:
            return math.nan
        low, high = bucket_range(nearest)
        return self._median(nearest) * (rif + 1) / (0.5 * (low + high) + 1)

    def add(self, bucket: int, sojourn: float) -> None:
        values = self._windows.get(bucket)
        if values is None:
            values = self._windows[bucket] = deque(maxlen=self.window)
            insort(self._known, bucket)
        values.append(sojourn)
        self._medians.pop(bucket, None)

    def sojourns(self, rif: int) -> list[float]:
        """The window of ``rif``'s bucket, oldest first (empty if none)."""
        return list(self._windows.get(rif_bucket(rif), ()))

    # -- internals ------------------------------------------------------------------------
    def _median(self, bucket: int) -> float:
        cached = self._medians.get(bucket)
        if cached is None:
            cached = self._medians[bucket] = median(self._windows[bucket])
        return cached

    def _nearest(self, bucket: int) -> int | None:
        known = self._known
        if not known:
            return None
        k = bisect_left(known, bucket)  # known[k] > bucket: the bucket itself has no data
        if k == len(known):
            return known[-1]
        if k == 0:
            return known[0]
        below, above = known[k - 1], known[k]
        return above if above - bucket <= bucket - below else below
