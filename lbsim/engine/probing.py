"""What a backend answers a probe about latency: the median latency of recent jobs at its current RIF.

Prequal (Wydrowski, Kleinberg, Rumble, Archer, "Load is not what you should
balance: Introducing Prequal", NSDI 2024, arXiv:2312.10172) has
each server answer a probe with its requests in flight (RIF) and an estimate
of the latency a query would see now: the median latency of recently
completed queries that arrived when the RIF was about what it is now. Latency
grows with RIF at a rate that differs from server to server (capacity,
antagonist load), so keying the history by RIF gives a latency that is
current for the server's present state, not an average over whatever states
it went through.

:class:`LatencyByRif` is that tracker, attached to one backend by the engine
(``Backend.observer``). Its hooks:

* ``arrived(job, now, rif)``: ``rif`` is the number of jobs present before
  this one; the job is tagged with its bucket;
* ``finished(job, now)``: the job's server-side latency (its sojourn,
  ``now - t_backend_arrival``) joins the window of its arrival bucket;
* ``estimate(rif)``: the median of the window of ``rif``'s bucket.

**Bucketing.** RIFs below 8 have a bucket each; above, buckets are 4 per
doubling (8-9, 10-11, 12-13, 14-15, 16-19, ..., 28-31, 32-39, ...), a width of
12.5-25% of the RIF. Small job sizes (``job_scale`` -> 0) make RIFs large, and
exact buckets would then each see few jobs and answer from stale data; a
relative width keeps "about the current RIF" meaning the same at any scale.

**Windows.** Each bucket keeps the latencies of its last ``window`` jobs
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

**Fallback.** A bucket without latencies answers with the median of the
nearest bucket that has some (on a tie, the higher one), scaled by
``(rif + 1) / (rif' + 1)`` with ``rif'`` the middle of that bucket: latency
per request in flight, counting the new one, as in a queue where each job
waits for those ahead of it. A plain nearest-bucket answer is optimistic
for a backend whose RIF climbs past what it has seen (it answers with the
latency of a lower RIF) and such a backend attracts yet more queries. For
concave rates (LLM batching) latency grows more slowly than RIF, so the
scaled answer errs on the pessimistic side. A backend that has completed
nothing answers NaN.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable

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


class LatencyByRif:
    """One backend's latency-at-RIF history (Prequal): ``window`` recent latencies per RIF bucket.

    With a ``clock``, a backend that has completed nothing for ``timeout``
    seconds answers NaN (see the module docstring).
    """

    __slots__ = ("window", "timeout", "clock", "last_done", "_windows", "_medians", "_known", "_tags")

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
        self._known: list[int] = []  # sorted buckets that have latencies
        self._tags: dict[int, int] = {}  # job_id -> bucket at its arrival, for the jobs present

    # -- observer hooks (called by the backend) -----------------------------------------
    def arrived(self, job, now: float, rif: int) -> None:
        self._tags[job.job_id] = rif_bucket(rif)

    def finished(self, job, now: float) -> None:
        self.add(self._tags.pop(job.job_id), now - job.t_backend_arrival)
        self.last_done = now

    def estimate(self, rif: int) -> float:
        """The median recent latency at about ``rif`` (else scaled from the nearest bucket; NaN if unknown)."""
        if self.clock is not None and self.clock() - self.last_done > self.timeout:
            return math.nan
        bucket = rif_bucket(rif)
        if bucket in self._windows:
            return self._median(bucket)
        nearest = self._nearest(bucket)
        if nearest is None:
            return math.nan
        low, high = bucket_range(nearest)
        return self._median(nearest) * (rif + 1) / (0.5 * (low + high) + 1)

    def add(self, bucket: int, latency: float) -> None:
        values = self._windows.get(bucket)
        if values is None:
            values = self._windows[bucket] = deque(maxlen=self.window)
            insort(self._known, bucket)
        values.append(latency)
        self._medians.pop(bucket, None)

    def latencies(self, rif: int) -> list[float]:
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
