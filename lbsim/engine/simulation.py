"""The SimPy model: frontends, network, backends and telemetry wired together.

The path of one job, in the order it happens (each step one method below):

1. :meth:`Simulation._arrive`: frontend i's Poisson stream fires; the job
   gets its size, the router picks backend j from the view of the telemetry;
2. the request travels d_ij (plus jitter) and :meth:`Backend.arrive` admits it;
3. the backend serves it (``backend.py``) and calls :meth:`Simulation._done`;
4. the response travels d_ij back; the job is recorded with its
   ``t_response`` and, if the router listens, :meth:`Simulation._respond`
   tells it when the response lands.

Everything runs on SimPy's kernel (:class:`~lbsim.engine.kernel.Kernel`, a
SimPy environment with a tighter run loop) with callbacks on lightweight
events, not one process per job: a job costs one heap event (its arrival;
completions are played forward lazily, see ``backend.py``) plus one per
network hop with a nonzero delay.
"""

from __future__ import annotations

import gc
import itertools
import math
import time
from collections.abc import Callable, Sequence
from heapq import heappush
from typing import cast

import numpy as np
from simpy.core import NORMAL, URGENT

from ..backends import BackendContext, BackendModel
from ..events import Wakeup
from ..jobs import Job
from ..rates import RateFamily
from ..routers.base import ProbeInbox, ProbeReply, Router, RouterContext, make_router, router_class
from ..scenario import Scenario
from .kernel import Kernel
from .records import JobRecords, LatencyRecords, SampleRecords, SplitRecords, TokenJobRecords
from .telemetry import LocalView, make_view

#: Subsystems that draw random numbers, each from its own spawned stream
#: (docs/model.md invariant 4). The order is part of the reproducibility contract:
#: a stream added later goes at the end, so that the earlier ones keep their draws.
STREAMS = ("arrivals", "sizes", "router", "network", "antagonist", "backends")

_new = object.__new__
_tuple_new = tuple.__new__
BATCH = 4096  # random draws are made in numpy batches: one numpy call per job would dominate


def spawn_streams(seed: int, frontends: int, backends: int) -> dict[str, list[np.random.Generator]]:
    """One generator per subsystem (and per frontend / backend where they are independent)."""
    children = dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))
    per = {"arrivals": frontends, "sizes": frontends, "antagonist": backends, "backends": backends}
    return {
        name: [np.random.default_rng(s) for s in ss.spawn(per[name])] if name in per else [np.random.default_rng(ss)]
        for name, ss in children.items()
    }


class ArrivalStream:
    """Frontend i's arrivals: Poisson of rate lambda_i / sbar, times a piecewise-constant schedule.

    Arrival times are unit-rate Poisson points mapped through the inverse of the
    cumulative intensity (the time-change theorem), so the same seed gives the
    same jobs whatever the schedule does later, and times are exact. With
    token workloads (``jobs.tokens``) each job also carries its prompt and
    output tokens, drawn from the sizes stream; its size is then
    ``job_scale * output`` (docs/llm.md).
    """

    def __init__(
        self, frontend: int, job_rate: float, schedule, arrival_rng, size_rng, sample_size, sample_tokens=None
    ):
        self.frontend = frontend
        self.job_rate = job_rate
        self.arrival_rng = arrival_rng
        self.size_rng = size_rng
        self.sample_size = sample_size
        #: ``(rng, n) -> (prompts, outputs, sizes)`` for token workloads, else None
        self.sample_tokens = sample_tokens
        self.pending_size = 0.0  # size of the job whose arrival is scheduled
        self._operational = 0.0  # cumulative unit-rate time of the last arrival drawn
        self.times: list[float] = []  # the next arrival times and sizes, last first
        self.sizes: list[float] = []
        #: the (prompt, output) of the next jobs, last first, with token workloads: unlike times and
        #: sizes, a job's tokens are taken when it arrives (the batches stay aligned: a refill comes
        #: after the last job of a batch has taken its own)
        self.tokens: list[tuple[int, int]] = []
        # Breakpoints of M(t) = integral of the multiplier m(s) ds (m = 1 before the first).
        steps = [(0.0, 1.0)] + [(t, m) for t, m in (schedule or []) if t > 0.0]
        if schedule and schedule[0][0] == 0.0:
            steps[0] = (0.0, schedule[0][1])
        self._starts = np.array([t for t, _ in steps])
        self._multipliers = np.array([m for _, m in steps])
        widths = np.diff(self._starts)
        self._cumulative = np.concatenate([[0.0], np.cumsum(widths * self._multipliers[:-1])])

    def refill(self) -> None:
        gaps = self.arrival_rng.exponential(1.0, BATCH)
        operational = self._operational + np.cumsum(gaps)
        self._operational = float(operational[-1])
        self.times = self._invert(operational / self.job_rate)[::-1].tolist()
        if self.sample_tokens is None:
            self.sizes = self.sample_size(self.size_rng, BATCH)[::-1].tolist()
        else:
            prompts, outputs, sizes = self.sample_tokens(self.size_rng, BATCH)
            self.sizes = sizes[::-1].tolist()
            self.tokens = list(zip(prompts[::-1].tolist(), outputs[::-1].tolist()))

    def _invert(self, m: np.ndarray) -> np.ndarray:
        """t with M(t) = m, the earliest such t (flat stretches of M have m(t) = 0)."""
        k = np.searchsorted(self._cumulative, m, side="right") - 1
        rate = self._multipliers[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self._starts[k] + (m - self._cumulative[k]) / rate
        return np.where(rate > 0, t, np.inf)

    def next(self) -> tuple[float, float]:
        """(arrival time, size) of the next job."""
        if not self.times:
            self.refill()
        return self.times.pop(), self.sizes.pop()


class TraceStream(ArrivalStream):
    """Frontend i's arrivals read from a trace (``frontends[].trace``): times, prompts and outputs as given."""

    def __init__(self, frontend: int, trace: tuple[np.ndarray, np.ndarray, np.ndarray], job_scale: float):
        super().__init__(frontend, 1.0, None, None, None, None, sample_tokens=lambda rng, n: None)
        times, prompts, outputs = trace
        self.times = times[::-1].tolist()
        self.sizes = (outputs * job_scale)[::-1].tolist()
        self.tokens = list(zip(prompts[::-1].tolist(), outputs[::-1].tolist()))

    def refill(self) -> None:  # the trace is over: no more arrivals
        self.times, self.sizes, self.tokens = [math.inf], [0.0], [(0, 0)]


def multiplier_at(schedule: Sequence[tuple[float, float]], t: float) -> float:
    """A piecewise-constant multiplier's value at ``t`` (1 before its first breakpoint)."""
    value = 1.0
    for start, m in schedule:
        if start <= t:
            value = m
    return value


def mean_multiplier(schedule: Sequence[tuple[float, float]] | None, start: float, end: float) -> float:
    """Time average over ``[start, end]`` of a piecewise-constant multiplier (1 before its first breakpoint)."""
    if not schedule:
        return 1.0
    if end <= start:  # an empty window: the multiplier in force at start
        return multiplier_at(schedule, start)
    breaks = [start] + [t for t, _ in schedule if start < t < end] + [end]
    area = sum((b - a) * multiplier_at(schedule, a) for a, b in itertools.pairwise(breaks))
    return area / (end - start)


def combine_schedules(*schedules: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
    """The product of piecewise-constant multipliers (each 1 before its first breakpoint)."""
    given = [s for s in schedules if s]
    if len(given) <= 1:
        return given[0] if given else None
    times = sorted({t for s in given for t, _ in s})
    return [(t, math.prod(multiplier_at(s, t) for s in given)) for t in times]


class Simulation:
    """One run of one scenario with one router and one seed."""

    def __init__(
        self,
        scenario: Scenario,
        router: str | None = None,
        seed: int | None = None,
        lazy: bool | None = None,
        **router_params,
    ):
        self.scenario = scenario
        sim = scenario.simulation
        if sim.mode == "saturated":
            raise ValueError("a saturated scenario has no frontends to simulate: use lbsim.simulate (run_saturated)")
        self.seed = sim.seed if seed is None else int(seed)
        self.horizon = sim.horizon
        self.mean_size = scenario.mean_size
        F, B = scenario.num_frontends, scenario.num_backends
        self.env = env = Kernel()
        streams = spawn_streams(self.seed, F, B)

        latency = scenario.latency
        self.delay = latency.tolist()
        self.connect = scenario.connect.tolist()
        self.view = make_view(
            scenario.network.telemetry, [], latency, self.mean_size, env, scenario.network.period, scenario.connect
        )

        router_name = router or scenario.router.name
        params = dict(scenario.router.params) if router_name == scenario.router.name else {}
        params.update(router_params)
        ctx = RouterContext(
            num_frontends=F,
            num_backends=B,
            delay=latency,
            connect=scenario.connect,
            rates=self._rates(router_name),
            mean_size=self.mean_size,
            demand=scenario.demand,
            rng=streams["router"][0],
            now=lambda: env._now,
            probe=self.probe,
            scenario=scenario,
            event_id=lambda: env.event_id,
        )
        self.router: Router = make_router(router_name, params, ctx)
        if not self.router.scans_backends:
            self.view.vectorised = False  # its arrays would be kept for no one
        #: tells a view that keeps arrays a backend changed outside its own events (None: no view needs it)
        self._touch = self.view.touch if self.view.vectorised else None
        self.route = self.router.route
        # Responses are events only when someone listens for them; then
        # backends must also complete jobs on time (eager), not on demand.
        #: the view itself when there is no telemetry (it counts what each frontend has outstanding)
        self.local_view = self.view if isinstance(self.view, LocalView) else None
        self.response_events = self.local_view is not None or type(self.router).on_response is not Router.on_response
        if lazy and self.response_events:
            raise ValueError("lazy completions would deliver responses late: this run needs completion events")
        lazy = not self.response_events if lazy is None else lazy
        #: The drain (docs/model.md section 3.3): after the horizon the run goes on as before, arrivals
        #: and all, until every job that arrived before the horizon has been served; the later arrivals
        #: are not measured. Without it the summary drops the jobs still in the system at the horizon.
        self.drain_limit = sim.drain_seconds if sim.drain else None
        #: arrivals and router ticks go on until here; samples stop at the horizon
        self.arrivals_until = self.horizon + (self.drain_limit or 0.0)
        self.max_jobs_in_system = sim.max_jobs_in_system
        if not sim.record_jobs:
            until = math.inf if sim.drain else sim.horizon
            self.records: JobRecords | LatencyRecords = LatencyRecords(sim.warmup, sim.horizon, until)
        else:
            self.records = TokenJobRecords() if scenario.jobs.tokens is not None else JobRecords()
        on_done = self._done if self.response_events else self.records.add
        record_steps = sim.record_steps or ("all" if sim.mode == "saturated" else "sampled")
        context = BackendContext(
            env,
            self.mean_size,
            on_done,
            self.view.history_window,
            lazy,
            streams=streams["backends"],
            step_sample_interval=sim.sample_interval if record_steps == "sampled" else None,
            job_scale=sim.job_scale,
        )
        self.backends: list[BackendModel] = [
            spec.model_class(j, spec.params, context) for j, spec in enumerate(scenario.backends)
        ]
        self.view.backends.extend(self.backends)
        if self.router.backend_observer is not None:
            for b in self.backends:
                b.observer = self.router.backend_observer(b.index)

        self.jitter = None
        if (jitter := scenario.network.jitter_distribution) is not None:
            dist, mean = jitter
            rng = streams["network"][0]

            def draw(n: int) -> np.ndarray:
                return dist.sample(rng, n, mean)

            self.jitter = _Buffered(draw)

        size = scenario.jobs.distribution
        size_mean, scale = scenario.jobs.mean, scenario.simulation.job_scale
        workload = scenario.jobs.token_workload
        self.with_tokens = workload is not None
        sample_tokens = None
        if workload is not None:

            def sample_tokens(rng, n, workload=workload):
                prompts, outputs = workload.sample(rng, n)
                return prompts, outputs, outputs * scale

        self.streams = [
            TraceStream(i, f.arrivals, scale)
            if f.arrivals is not None
            else ArrivalStream(
                i,
                f.demand / self.mean_size,
                combine_schedules(sim.rate_schedule, f.rate_schedule),
                streams["arrivals"][i],
                streams["sizes"][i],
                lambda rng, n: size.sample(rng, n, size_mean) * scale,
                sample_tokens,
            )
            for i, f in enumerate(scenario.frontends)
        ]
        self.antagonist_rngs = streams["antagonist"]
        self.network_extras = self.local_view is not None or self.jitter is not None

        self.samples = SampleRecords()
        self.splits = SplitRecords(scenario.connect) if self.router.split() is not None else None
        #: work every backend had served by the warm-up and by the horizon (the summary's ``served``)
        self.served_warmup = [0.0] * B
        self.served_end = [0.0] * B
        self.arrived = 0  # also the next job's id
        self.to_backends = 0  # requests on the network, not yet at their backend
        #: how the run ended ("complete", "job_limit", "drain_limit"); when the clock stopped (the horizon
        #: or the job limit's sample) and when the run ended (after the drain); where the jobs were then
        self.status = "complete"
        self.t_stop = self.t_end = self.horizon
        self.at_stop: dict[str, int] = {}
        self.wall_seconds = float("nan")
        # Every arrival event gets this one tuple as its callbacks: the kernel only
        # iterates over them, and a new list and bound method per job cost 3%.
        self._arrive_callbacks = (self._arrive,)
        self._reach_callbacks = (self._reach_backend,)
        self._respond_callbacks = (self._respond,)
        self._probe_arrives_callbacks = (self._probe_arrives,)
        self._probe_returns_callbacks = (self._probe_returns,)

    def _rates(self, router: str) -> list[RateFamily]:
        """mu_j for the router's context: all of them for a router that reads them (or a one-line error)."""
        if router_class(router).uses_rates:
            return self.scenario.rate_functions(f"router '{router}'")
        # Index-aligned with the backends; a router that does not declare uses_rates reads none of them
        # (it would find None for a backend model without mu).
        return cast("list[RateFamily]", list(self.scenario.service_rates))

    # -- the path of a job ------------------------------------------------------------
    def _arrive(self, event: Wakeup) -> None:
        stream: ArrivalStream = event.payload
        env = self.env
        now = env._now
        i = stream.frontend
        # Job(self.arrived, i, size, now), without __init__: calling a class with a
        # Python __init__ goes through C into a new frame, 2% of a job's cost.
        job = _new(Job)
        job.job_id = self.arrived
        job.frontend = i
        job.size = stream.pending_size
        job.t_arrival = now
        if self.with_tokens:
            job.prompt, job.output = stream.tokens.pop()
        self.arrived += 1
        j = self.route(i, job, self.view)
        if not self.connect[i][j]:
            raise RuntimeError(f"router {self.router.name!r} sent a job from frontend {i} to forbidden backend {j}")
        job.backend = j
        delay = job.return_delay = self.delay[i][j]
        if self.network_extras:
            delay = self._extras(job, delay)
        if delay > 0.0:
            self.to_backends += 1
            # The job is its own event (lbsim.jobs); env.schedule inlined, with its own now + delay
            job.callbacks = self._reach_callbacks
            heappush(env._queue, (now + delay, NORMAL, next(env._eid), job))  # type: ignore[misc]
        else:
            self.backends[j].arrive(job)
            if self._touch is not None:
                self._touch(j)
        # The next arrival reuses this event: one is pending per frontend at a time.
        try:
            t = stream.times.pop()
        except IndexError:  # once in BATCH arrivals (and a try costs nothing until it catches)
            stream.refill()
            t = stream.times.pop()
        stream.pending_size = stream.sizes.pop()
        if t < self.arrivals_until:
            event.callbacks = self._arrive_callbacks
            # env.schedule inlined, at the absolute time t (no now + (t - now) rounding)
            heappush(env._queue, (t, NORMAL, next(env._eid), event))  # type: ignore[misc]

    def _extras(self, job: Job, delay: float) -> float:
        """What only some runs need on a job's way out: local telemetry counts and jitter."""
        if (view := self.local_view) is not None:
            view.outstanding[job.frontend][job.backend] += 1
            view.outstanding_work[job.frontend][job.backend] += job.size
        if self.jitter is not None:  # both directions drawn now, in arrival order: reproducible
            delay += self.jitter.next()
            job.return_delay += self.jitter.next()
        return delay

    def _reach_backend(self, job: Job) -> None:
        self.to_backends -= 1
        self.backends[job.backend].arrive(job)
        if self._touch is not None:
            self._touch(job.backend)

    def _done(self, job: Job, now: float) -> None:
        """A backend finished a job and someone listens for its response."""
        self.records.add(job, now)
        job.callbacks = self._respond_callbacks  # the job is its own event again, on its way back
        self.env.schedule(job, NORMAL, job.return_delay)

    def _respond(self, job: Job) -> None:
        if (view := self.local_view) is not None:
            view.outstanding[job.frontend][job.backend] -= 1
            view.outstanding_work[job.frontend][job.backend] -= job.size
        self.router.on_response(job.frontend, job)

    # -- probes (Prequal) -------------------------------------------------------------
    def probe(self, frontend: int, backend: int, deliver: Callable[[ProbeReply], None] | ProbeInbox) -> None:
        """Send a probe that travels d_ij to the backend, reads its state there, and d_ij back.

        The reply is delivered by calling ``deliver`` when it lands, or put
        in ``deliver`` if it is a :class:`ProbeInbox`: then the way back is
        no event, and a probe costs one kernel event instead of two. One
        event object carries a probe both ways (rescheduled when it reaches
        the backend, as an arrival event is), queued as ``env.schedule``
        would queue it.
        """
        env = self.env
        now = env._now
        there = back = self.delay[frontend][backend]
        if self.jitter is not None:  # both hops drawn now, in order: reproducible
            there, back = there + self.jitter.next(), there + self.jitter.next()
        event = _new(Wakeup)  # Wakeup(self._probe_arrives, ...), without __init__
        event.callbacks = self._probe_arrives_callbacks
        event.payload = (frontend, backend, back, now, deliver)
        event._ok = True
        heappush(env._queue, (now + there, NORMAL, next(env._eid), event))  # type: ignore[misc]

    def _probe_arrives(self, event: Wakeup) -> None:
        frontend, backend, back, t_sent, deliver = event.payload
        env = self.env
        now = env._now
        b = self.backends[backend]
        if b.next_done <= now:
            b.catch_up(now)
        # ProbeReply(...) without its Python __new__
        reply = _tuple_new(ProbeReply, (backend, b.jobs, b.sojourn_estimate(), t_sent, now))
        # the id the return event takes in either case, so that same-instant order is the kernel's
        event_id = next(env._eid)
        if deliver.__class__ is ProbeInbox:
            heappush(deliver, (now + back, event_id, frontend, reply))  # type: ignore[arg-type]
            return
        event.payload = (deliver, reply)
        event.callbacks = self._probe_returns_callbacks
        heappush(env._queue, (now + back, NORMAL, event_id, event))  # type: ignore[misc]

    @staticmethod
    def _probe_returns(event: Wakeup) -> None:
        on_reply, reply = event.payload
        on_reply(reply)

    # -- periodic activities ----------------------------------------------------------
    def _every(
        self, interval: float, action: Callable[[float], None], until: float, start: float = 0.0, priority=NORMAL
    ) -> None:
        """Call ``action(t)`` at start, start + interval, ... < until (absolute times: no drift)."""
        count = [0]

        def fire(event):
            action(self.env._now)
            count[0] += 1
            t_next = start + count[0] * interval
            if t_next < until:
                event.callbacks = [fire]
                self.env.schedule(event, priority, t_next - self.env._now)

        self.env.schedule(Wakeup(fire), priority, start - self.env._now)

    def _sample(self, t: float) -> None:
        for b in self.backends:
            b.catch_up(t)
        self.samples.add(t, self.backends)
        if self.max_jobs_in_system is not None and self.in_system() > self.max_jobs_in_system:
            raise _JobLimit(t)
        if self.splits is not None and (split := self.router.split()) is not None:
            self.splits.add(t, split)
        if self._progress is not None:
            self._progress.update(t - self._progress.n)

    def _served_at_warmup(self, event: Wakeup) -> None:
        self.served_warmup = [b.work_served(self.env._now) for b in self.backends]

    def _start_antagonists(self) -> None:
        for backend, spec, rng in zip(self.backends, self.scenario.backends, self.antagonist_rngs):
            ant = spec.antagonist
            if ant is None:
                continue
            if ant.schedule is not None:
                for t, m in ant.schedule:
                    self.env.schedule(Wakeup(lambda _e, b=backend, m=m: self._set_multiplier(b, m)), URGENT, t)
            elif ant.levels is not None and ant.hold is not None:  # (the table requires both)
                self._switching(backend, ant.levels, ant.hold, rng)

    def _set_multiplier(self, backend: BackendModel, multiplier: float) -> None:
        backend.set_multiplier(multiplier)
        if self._touch is not None:  # its next completion may have come closer
            self._touch(backend.index)

    def _switching(self, backend: BackendModel, levels: list[float], hold: float, rng: np.random.Generator) -> None:
        """A multiplier that jumps between levels after exponential holding times (a CTMC)."""
        state = [int(rng.integers(len(levels)))]
        self._set_multiplier(backend, levels[state[0]])

        def switch(event):
            other = int(rng.integers(len(levels) - 1))
            state[0] = other + (other >= state[0])
            self._set_multiplier(backend, levels[state[0]])
            event.callbacks = [switch]
            self.env.schedule(event, URGENT, rng.exponential(hold))

        self.env.schedule(Wakeup(switch), URGENT, rng.exponential(hold))

    def in_system(self) -> int:
        """Jobs on their way to a backend or at one (backends caught up to now)."""
        return self.to_backends + sum(b.jobs for b in self.backends)

    def _catch_up(self, t: float) -> None:
        last = math.nextafter(t, -math.inf)  # as with events: nothing at the end itself
        for b in self.backends:
            b.catch_up(last)

    def _drain(self, limit: float) -> None:
        """Run on after the horizon until every job that arrived before it has been served.

        Everything goes on as in a longer run (arrivals, ticks, antagonists), so each of these jobs
        finishes exactly when it would have; the clock advances a sample interval at a time, and
        jobs still unserved at ``limit`` are reported as ``jobs_undrained``.
        """
        step = self.scenario.simulation.sample_interval
        window = self.at_stop["arrived"]
        k = 0
        while self.records.served_before(window) < window:
            if self.t_end >= limit:
                self.status = "drain_limit"
                return
            k += 1
            self.t_end = min(self.horizon + k * step, limit)  # absolute times: no drift
            self.env.run_until(self.t_end)
            self._catch_up(self.t_end)

    # -- running ------------------------------------------------------------------------
    def run(self, progress: bool = False):
        from .result import Result

        self._progress = None
        if progress:
            from tqdm.auto import tqdm

            self._progress = tqdm(total=self.horizon, unit="s", desc="simulating", leave=False, disable=None)
        started = time.perf_counter()
        for stream in self.streams:
            t, stream.pending_size = stream.next()
            if t < self.arrivals_until:
                self.env.schedule(Wakeup(self._arrive, stream), NORMAL, t)
        self._start_antagonists()
        if warmup := self.scenario.simulation.warmup:
            self.env.schedule(Wakeup(self._served_at_warmup), NORMAL, warmup)
        self._every(self.scenario.simulation.sample_interval, self._sample, self.horizon)
        if self.router.tick_interval:
            interval = self.router.tick_interval
            self._every(interval, lambda t: self.router.tick(t, self.view), self.arrivals_until, start=interval)
        # A run allocates millions of short-lived objects but no reference cycles
        # (jobs, events and heap entries are freed by reference counting), so the
        # cyclic collector would only rescan the live ones over and over.
        collecting = gc.isenabled()
        gc.disable()
        try:
            try:
                self.env.run_until(self.horizon)
            except _JobLimit as stop:  # (its sample has caught the backends up)
                self.status, self.t_stop, self.t_end = "job_limit", stop.t, stop.t
            else:
                self._catch_up(self.horizon)
            self.at_stop = {
                "arrived": self.arrived,
                "to_backends": self.to_backends,
                "at_backends": sum(b.jobs for b in self.backends),
                "recorded": len(self.records),
            }
            self.served_end = [b.work_served(self.t_stop) for b in self.backends]
            if self.drain_limit is not None and self.status == "complete":
                self._drain(self.horizon + self.drain_limit)
        finally:
            if collecting:
                gc.enable()
        self.wall_seconds = time.perf_counter() - started
        if self._progress is not None:
            self._progress.close()
        return Result.from_simulation(self)


class _JobLimit(Exception):
    """Raised from a sample when the jobs in the system exceed ``simulation.max_jobs_in_system``."""

    def __init__(self, t: float):
        self.t = t


class _Buffered:
    """Draws from a numpy sampler in batches, served one at a time."""

    def __init__(self, sampler: Callable[[int], np.ndarray]):
        self.sampler = sampler
        self._values: list[float] = []

    def next(self) -> float:
        if not self._values:
            self._values = self.sampler(BATCH)[::-1].tolist()
        return self._values.pop()
