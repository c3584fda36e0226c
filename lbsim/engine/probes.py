"""Probes without kernel events: answered when their backend next changes, delivered before the next router call.

A probe (Prequal, docs/routers.md) leaves frontend ``i`` at ``t_sent``,
reaches backend ``j`` at ``t_answered = t_sent + d_ij`` (plus jitter), reads
the backend's jobs and sojourn estimate there, and lands back at
``t_landed = t_answered + d_ij`` (plus jitter). Two kernel events per probe
would carry it (three probes per job made 8 events per job); neither is
needed to get the same answers at the same moments:

* **Answering.** The backend's state is constant between its changes (an
  arrival, a completion), and every change is announced to its observer
  first. The backend's observer is wrapped (:class:`Answering`) so that each
  announcement first answers the probes that reached the backend before
  the change, from the state before it: the jobs present (counted by the
  wrapper) and the sojourn estimate as of ``t_answered``. A probe whose
  backend has not changed since is answered when it is delivered, after
  playing the backend's completions forward to ``t_answered``.
* **Delivery.** A router learns of a reply only when it routes or ticks, so
  replies wait in a heap and are handed over, in landing order, just before
  the router's next call (:meth:`LazyProbes.route`, :meth:`LazyProbes.tick`).

**Same-instant order.** SimPy orders events of equal time by priority,
then by the order they were scheduled; the two-event path it replaces
scheduled a probe's arrival when the probe left and its reply when the
probe arrived. The rules below reproduce that order, so a run is the same
to the bit (``tests/test_prequal.py`` compares with the two-event path):

* replies land in the order ``(t_landed, t_answered, send order)``;
* a probe reaching a backend at the instant a job does reads the state
  before the job if it left before the job did (a query's probes leave
  before the query itself), and after it if the job arrived without
  crossing the network (zero delay: the job reaches its backend inside its
  arrival event, before any probe sent at that instant arrives);
* a completion at the very instant a probe arrives is seen by the probe
  (it played completions forward up to and including its instant);
* a reply landing at the instant of a router call comes first if it left
  the backend before the event of that call was scheduled (at the
  frontend's previous arrival, or at the previous tick).

What is left is the coincidence of two independent instants in the last
bit (a probe leaving a backend at exactly the instant the frontend's
previous job arrived): it has probability zero with Poisson arrivals, and
the rule then puts the reply after the call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

from ..routers.base import ProbeReply

if TYPE_CHECKING:
    from .simulation import Simulation

_tuple_new = tuple.__new__

#: backend models whose every change of ``jobs`` is announced to the observer first (arrive/finish hooks)
ANNOUNCING_MODELS = ("rate", "llm")

# A probe's record: a list, filled in when the backend answers; its first five items are the reply's fields.
BACKEND, RIF, ESTIMATE, T_SENT, T_ANSWERED, POSITION, ON_REPLY = range(7)


class Answering:
    """A backend's observer, wrapped: before each change of the backend, answer the probes that arrived before it.

    ``estimate_at(rif, t)`` of the wrapped observer gives the sojourn
    estimate as the backend would have answered at time ``t`` with ``rif``
    jobs present.
    """

    __slots__ = ("_arrived", "_estimate_at", "_finished", "backend", "inner", "jobs", "pending", "probes")

    def __init__(self, inner: Any, backend: Any, probes: LazyProbes):
        self.inner = inner
        self._arrived, self._finished, self._estimate_at = inner.arrived, inner.finished, inner.estimate_at
        self.backend = backend
        self.probes = probes
        self.jobs = backend.jobs  # n_j, counted from the announcements
        self.pending: list[tuple[float, int, list]] = []  # heap of (t_answered, send order, record)

    def arrived(self, job: Any, now: float, rif: int) -> None:
        pending = self.pending
        if pending and pending[0][0] <= now:
            # A job that crossed the network left at its arrival's send position: probes sent
            # before it (its own query's among them) come first. One that did not arrived
            # inside the arrival event, scheduled at the frontend's previous arrival.
            barrier = job.job_id + 0.75 if job.t_arrival < now else self.probes.direct_barrier
            self.answer_before(now, barrier)
        self.jobs += 1
        self._arrived(job, now, rif)

    def finished(self, job: Any, now: float) -> None:
        pending = self.pending
        if pending and pending[0][0] < now:
            self.answer_before(now, -math.inf)
        self.jobs -= 1
        self._finished(job, now)

    def answer_before(self, now: float, barrier: float) -> None:
        """Answer from the present state the probes that arrived before ``now`` (at ``now``: sent before barrier)."""
        pending, estimate_at, rif = self.pending, self._estimate_at, self.jobs
        while pending:
            t_answered, _, record = pending[0]
            if t_answered > now or (t_answered == now and not record[POSITION] < barrier):
                return
            heappop(pending)
            record[RIF] = rif
            record[ESTIMATE] = estimate_at(rif, t_answered)

    def answer(self, record: list) -> None:
        """Answer a probe whose backend has not changed since it arrived."""
        self.backend.catch_up(record[T_ANSWERED])  # completions due by then announce themselves
        # Every probe still pending from before then has seen no change since it arrived either.
        self.answer_before(record[T_ANSWERED], math.inf)

    # -- the rest of the observer's interface goes to the wrapped one --------------------
    def estimate(self, rif: int) -> float:
        return self.inner.estimate(rif)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class LazyProbes:
    """The probe path of a simulation, without a kernel event per message (see the module docstring)."""

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.env = sim.env
        self.router = sim.router
        self.router_route = sim.router.route
        F = sim.scenario.num_frontends
        self.replies: list[tuple[float, float, int, list]] = []  # heap of (t_landed, t_answered, send order, record)
        self.sent = 0
        self.routing = -1  # the job being routed, -1 outside route()
        # Where the event of each frontend's next arrival was scheduled (after the previous job left),
        # and when: ties at one instant are settled by these (module docstring).
        self.event_position = [-1.0] * F
        self.last_route = [-math.inf] * F
        self.last_tick = -math.inf
        self.direct_barrier = -1.0
        self.answering = []
        for b in sim.backends:
            b.observer = Answering(b.observer, b, self)
            self.answering.append(b.observer)
        # read per probe, as plain attributes
        self.pending = [a.pending for a in self.answering]
        self.delay = sim.delay
        self.jitter = sim.jitter

    @staticmethod
    def supported(sim: Simulation) -> bool:
        """Exact for backend models that announce every change, with observers that answer as of an instant."""
        return all(b.name in ANNOUNCING_MODELS and hasattr(b.observer, "estimate_at") for b in sim.backends)

    def send(self, frontend: int, backend: int, on_reply: Callable[[ProbeReply], None]) -> None:
        """A probe leaves now: its arrival and its landing are known now (both hops' jitter drawn now, in order)."""
        t_sent = self.env._now
        there = back = self.delay[frontend][backend]
        jitter = self.jitter
        if jitter is not None:
            there, back = there + jitter.next(), there + jitter.next()
        t_answered = t_sent + there
        seq = self.sent
        self.sent = seq + 1
        # routing job k: k + 0.5, before job k leaves (k + 0.75); else after the last job's arrival event
        position = self.routing + 0.5 if self.routing >= 0 else self.sim.arrived - 0.1
        record = [backend, None, None, t_sent, t_answered, position, on_reply]
        heappush(self.pending[backend], (t_answered, seq, record))
        heappush(self.replies, (t_answered + back, t_answered, seq, record))

    def deliver(self, now: float, scheduled_at: float) -> None:
        """Hand over the replies landed before ``now`` (at ``now``: if they left before ``scheduled_at``)."""
        replies = self.replies
        while replies:
            t_landed, t_answered, _, record = replies[0]
            if t_landed > now or (t_landed == now and not t_answered < scheduled_at):
                return
            heappop(replies)
            if record[RIF] is None:
                self.answering[record[BACKEND]].answer(record)
            # ProbeReply(*record[:5]) without its Python __new__: a frame per reply saved
            record[ON_REPLY](_tuple_new(ProbeReply, record[:5]))

    def route(self, frontend: int, job: Any, view: Any) -> int:
        now = self.env._now
        replies = self.replies
        if replies and replies[0][0] <= now:
            self.deliver(now, self.last_route[frontend])
        self.routing = k = job.job_id
        self.direct_barrier = self.event_position[frontend]
        backend = self.router_route(frontend, job, view)
        self.routing = -1
        self.event_position[frontend] = k + 0.8  # the next arrival's event, scheduled after this job left
        self.last_route[frontend] = now
        return backend

    def tick(self, now: float, view: Any) -> None:
        replies = self.replies
        if replies and replies[0][0] <= now:
            self.deliver(now, self.last_tick)
        self.router.tick(now, view)
        self.last_tick = now
