"""What a backend answers a probe about latency: the median latency of recent jobs at its current RIF.

Prequal (Wydrowski, Kleinberg, Rumble, Archer, "Load is not what you should
balance: Introducing Prequal", NSDI 2024, arXiv:2312.10172, section 3) has
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

**Windows.** Each bucket keeps its last ``window`` latencies (a deque), so
memory is bounded by the number of buckets (logarithmic in the largest RIF)
times ``window``, plus one tag per job present. The median is cached per
bucket and recomputed only after the bucket changed.

**Fallback.** A bucket that has never seen a completed job answers with the
nearest bucket that has (on a tie, the higher one: the pessimistic answer,
so a backend in a state never seen is not mistaken for a fast one); a backend
that has completed nothing yet answers NaN, which routers treat as unknown.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

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
    """One backend's latency-at-RIF history (Prequal section 3): ``window`` recent latencies per RIF bucket."""

    __slots__ = ("window", "_windows", "_medians", "_known", "_tags")

    def __init__(self, window: int = 16):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._windows: dict[int, deque[float]] = {}
        self._medians: dict[int, float] = {}  # cache, cleared for a bucket when it changes
        self._known: list[int] = []  # sorted buckets that have at least one latency
        self._tags: dict[int, int] = {}  # job_id -> bucket at its arrival, for the jobs present

    # -- observer hooks (called by the backend) -----------------------------------------
    def arrived(self, job, now: float, rif: int) -> None:
        self._tags[job.job_id] = rif_bucket(rif)

    def finished(self, job, now: float) -> None:
        bucket = self._tags.pop(job.job_id)
        self.add(bucket, now - job.t_backend_arrival)

    def estimate(self, rif: int) -> float:
        """The median recent latency at about ``rif`` (nearest known bucket; NaN if none)."""
        bucket = rif_bucket(rif)
        cached = self._medians.get(bucket)
        if cached is not None:
            return cached
        values = self._windows.get(bucket)
        if values is None:
            return self._nearest(bucket)
        m = self._medians[bucket] = median(values)
        return m

    # -- internals ------------------------------------------------------------------------
    def add(self, bucket: int, latency: float) -> None:
        values = self._windows.get(bucket)
        if values is None:
            values = self._windows[bucket] = deque(maxlen=self.window)
            insort(self._known, bucket)
        values.append(latency)
        self._medians.pop(bucket, None)

    def _nearest(self, bucket: int) -> float:
        known = self._known
        if not known:
            return float("nan")
        k = bisect_left(known, bucket)  # known[k] > bucket here: the bucket itself has no data
        if k == len(known):
            nearest = known[-1]
        elif k == 0:
            nearest = known[0]
        else:
            below, above = known[k - 1], known[k]
            nearest = above if above - bucket <= bucket - below else below
        return self.estimate(bucket_range(nearest)[0])

    def latencies(self, rif: int) -> list[float]:
        """The window of ``rif``'s bucket, oldest first (empty if none)."""
        return list(self._windows.get(rif_bucket(rif), ()))
