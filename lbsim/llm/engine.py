"""The engine of one ``llm`` backend: G data-parallel ranks x B slots stepping behind a barrier.

A step k = 1, 2, ... runs in this order (docs/llm.md, "The step"):

1. the step time is computed from the loads at the start of the step; the clock advances by it;
2. every active request emits one token (``L_g`` grows by the active requests on g);
3. requests that have now emitted all their output tokens complete at the new clock;
4. the step's statistics are taken, after completions and before admission:
   imbalance ``G * max_g L_g - sum_g L_g``, idle rate ``mean_g (1 - L_g / max_h L_h)``,
   power ``P_g``, energy ``+= sum_g P_g * duration``;
5. the admission policy fills free slots; the next step starts at once if anything is active.

Admission also runs when an idle engine receives requests (:meth:`LLMEngine.arrive`);
an engine with nothing active schedules no step. With a KV capacity, a step
whose growth would overflow a rank first sends that rank's most recently
admitted requests back to the head of the pool, their generated tokens lost
(recompute preemption).

The engine keeps no event queue: it knows when its current step ends
(:attr:`LLMEngine.next_event_time`) and :meth:`LLMEngine.advance` plays every
step ending by a given time, so it fits lbsim's lazy backends (``catch_up``,
``next_done``). Per-step work is a few numpy operations on arrays of length
G: a request's resident length is ``slot_base + step`` and its completion
step is known at admission, so no per-request work is done between its
admission and its completion.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lbsim.errors import ScenarioError
from lbsim.llm.admission import AdmissionPolicy, Candidates, RankState
from lbsim.llm.params import LLMParams
from lbsim.llm.request import LLMRequest
from lbsim.llm.steps import StepLog

INF = math.inf


class _Rows(Sequence[np.ndarray]):
    """Per-rank arrays of the active requests, computed when a policy reads them."""

    def __init__(self, engine: LLMEngine, remaining: bool):
        self._engine = engine
        self._remaining = remaining

    def __len__(self) -> int:
        return self._engine.workers

    def __getitem__(self, rank: int) -> np.ndarray:  # type: ignore[override]
        engine = self._engine
        occupied = engine._occupied[rank]
        if self._remaining:
            return np.maximum(engine._slot_estimate[rank, occupied] - engine.step, 0)
        return engine._slot_base[rank, occupied] + engine.step

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[g] for g in range(len(self)))


class LLMEngine:
    """One engine. Feed it with :meth:`arrive`, play it with :meth:`advance`.

    ``rng`` is the admission policy's own stream; ``steps`` the statistics
    recorder (a fresh full :class:`~lbsim.llm.steps.StepLog` by default).
    """

    def __init__(
        self,
        params: LLMParams,
        rng: np.random.Generator | None = None,
        name: str = "llm",
        steps: StepLog | None = None,
    ):
        self.params = params
        self.name = name
        self.workers = G = params.workers
        self.slots = B = params.slots
        self.reveal = params.look_ahead
        self.policy = params.admission.build(G, B, rng if rng is not None else np.random.default_rng(0))
        self.on_arrival = params.dispatch == "on_arrival"
        self.step_time = params.step_time
        self.power_model = params.power
        self.kv_capacity = params.kv_capacity
        self.kv_limit = params.kv_limit
        self.log = steps if steps is not None else StepLog(name)

        # Per rank.
        self.loads = np.zeros(G, np.int64)  # L_g: resident tokens
        self.active = np.zeros(G, np.int64)  # n_g
        self.queued = np.zeros(G, np.int64)  # on_arrival: requests bound to g and waiting
        self.queued_tokens = np.zeros(G, np.int64)
        self._admitted_prompt = np.zeros(G, np.int64)  # prompt tokens admitted for the next step
        # Per slot: a request's resident length is base + step, its estimated finish step `estimate`.
        self._occupied = np.zeros((G, B), bool)
        self._slot_base = np.zeros((G, B), np.int64)
        self._slot_estimate = np.zeros((G, B), np.int64)
        self._slot_order = np.zeros((G, B), np.int64)  # admission order, for preemption
        self._slot_request: list[list[LLMRequest | None]] = [[None] * B for _ in range(G)]
        self._free_slots = [list(range(B - 1, -1, -1)) for _ in range(G)]
        self._finishing: dict[int, list[LLMRequest]] = {}  # step -> requests whose last token it emits
        self._awaiting_first: list[LLMRequest] = []

        self.pool: deque[LLMRequest] = deque()
        self.queues: list[deque[LLMRequest]] = [deque() for _ in range(G)]
        self.active_total = 0
        self.waiting_tokens = 0  # prompt tokens of the pool and the queues

        self.step = 0  # steps completed
        self.now = 0.0  # the last time the engine was played to
        self.next_event_time = INF  # end of the step in progress
        self._duration = 0.0
        self._own = np.zeros(G)
        self._order = 0

        self.tokens_emitted = 0  # every token emitted, including those later lost to preemption
        self.tokens_lost = 0
        self.preemptions = 0
        self.admitted = 0
        self.completed = 0

    # -- live quantities (telemetry) ---------------------------------------------------
    @property
    def pool_length(self) -> int:
        """Requests waiting: the pool, or (``on_arrival``) every rank's queue."""
        return len(self.pool) + int(self.queued.sum())

    @property
    def jobs(self) -> int:
        """Requests present: waiting + active."""
        return self.pool_length + self.active_total

    @property
    def resident_tokens(self) -> int:
        """``sum_g L_g``."""
        return int(self.loads.sum())

    @property
    def free_slots(self) -> int:
        return self.workers * self.slots - self.active_total

    @property
    def busy(self) -> bool:
        """A step is in progress."""
        return self.next_event_time < INF

    # -- driving ------------------------------------------------------------------------
    def arrive(self, request: LLMRequest, now: float) -> None:
        """A request reaches the engine at ``now`` (call :meth:`advance` up to ``now`` first)."""
        self.arrive_many((request,), now)

    def arrive_many(self, requests: Iterable[LLMRequest], now: float) -> None:
        """Several requests at the same instant, in order; an idle engine admits once, after all of them."""
        if now < self.now:
            raise ValueError(f"arrival at {now} is before the engine's clock {self.now}")
        if self.next_event_time <= now:
            raise RuntimeError("advance(now) must be called before arrive(request, now)")
        self.now = now
        estimates = type(self.policy).estimate is not AdmissionPolicy.estimate
        for request in requests:
            self._check_fits(request)
            if estimates:
                request.output_estimate = self.policy.estimate(request.output)
            request._finish_step = -1
            if self.on_arrival:
                rank = self.policy.assign(self._state(), request.prompt, now)
                if not 0 <= rank < self.workers:
                    raise RuntimeError(f"admission policy '{self.policy.name}' assigned rank {rank} of {self.workers}")
                request.rank = rank
                self.queues[rank].append(request)
                self.queued[rank] += 1
                self.queued_tokens[rank] += request.prompt
            else:
                self.pool.append(request)
            self.waiting_tokens += request.prompt
        if self.next_event_time == INF:
            if self._admit(now):
                self.log.admitted_after(self.step, now)
            self._start_step(now)

    def advance(self, until: float) -> list[LLMRequest]:
        """Play every step ending at or before ``until``; the requests completed, in completion order."""
        done: list[LLMRequest] = []
        while self.next_event_time <= until and self.next_event_time < INF:
            self._end_step(done)
        if until > self.now and until < INF:
            self.now = until
        return done

    def run(self) -> list[LLMRequest]:
        """Play until nothing is active (the pool may still hold requests no policy admits)."""
        return self.advance(INF)

    # -- the step ----------------------------------------------------------------------
    def _end_step(self, done: list[LLMRequest]) -> None:
        t = self.next_event_time
        duration = self._duration
        self.now = t
        self.step = k = self.step + 1
        # 2. every active request emits a token
        emitted = self.active_total
        self.loads += self.active
        self.tokens_emitted += emitted
        if self._awaiting_first:
            for request in self._awaiting_first:
                if request.t_first_token is None and request._finish_step >= 0:
                    request.t_first_token = t
            self._awaiting_first = []
        # 3. completions
        finishing = self._finishing.pop(k, None)
        if finishing:
            for request in finishing:
                if request._finish_step == k:  # else preempted since
                    self._release(request)
                    request._finish_step = -1
                    request.t_done = t
                    done.append(request)
                    self.completed += 1
        # 4. statistics, after completions and before admission
        loads = self.loads
        top = int(loads.max())
        total = int(loads.sum())
        power = float(self.power_model.power(loads, self._own, duration).sum())
        self.log.record(
            t=t,
            step=k,
            duration=duration,
            load_max=top,
            load_sum=total,
            workers=self.workers,
            barrier_idle=self.workers * duration - float(self._own.sum()),
            active=self.active_total,
            free_slots=self.workers * self.slots - self.active_total,
            pool=self.pool_length,
            power=power,
            tokens=emitted,
        )
        # 5. admission, then the next step
        self.next_event_time = INF
        if self._admit(t):
            self.log.admitted_after(k, t)
        self._start_step(t)

    def _start_step(self, t: float) -> None:
        if self.kv_capacity is not None and self.active_total:
            self._preempt()
        if not self.active_total:
            self.next_event_time = INF
            return
        own = self.step_time.own_times(self.loads, self.active, self._admitted_prompt)
        self._own = own
        self._duration = duration = float(own.max())
        self._admitted_prompt[:] = 0
        self.next_event_time = t + duration

    # -- admission ---------------------------------------------------------------------
    def _state(self) -> RankState:
        kv_room = None
        if self.kv_limit is not None:
            kv_room = np.maximum(self.kv_limit - self.loads, 0)
        return RankState(
            loads=self.loads.copy(),
            active=self.active.copy(),
            free=self.slots - self.active,
            queued=self.queued.copy(),
            queued_tokens=self.queued_tokens.copy(),
            lengths=_Rows(self, remaining=False),
            remaining=_Rows(self, remaining=True),
            kv_room=kv_room,
        )

    def _fits(self, rank: int, prompt: int) -> bool:
        return self.kv_limit is None or int(self.loads[rank]) + prompt <= self.kv_limit

    def _admit(self, t: float) -> bool:
        """Fill free slots; True if anything was admitted."""
        if self.active_total >= self.workers * self.slots:
            return False
        if self.on_arrival:
            return self._admit_queues(t)
        if not self.pool:
            return False
        state = self._state()
        pool = self.pool
        count = min(self.reveal, len(pool))
        head = [pool.popleft() for _ in range(count)]
        candidates = Candidates(
            np.fromiter((r.prompt for r in head), np.int64, count),
            np.fromiter((r.output_estimate for r in head), np.int64, count),
        )
        pairs = self.policy.admit(state, candidates)
        taken = [False] * count
        free = state.free.tolist()
        placed = False
        for index, rank in pairs:
            if not (0 <= index < count and 0 <= rank < self.workers) or taken[index] or free[rank] <= 0:
                pool.extendleft(reversed(head))
                raise RuntimeError(
                    f"admission policy '{self.policy.name}' broke its contract with pair ({index}, {rank}): "
                    "each candidate at most once, at most free[g] per rank"
                )
            request = head[index]
            if not self._fits(rank, request.prompt):
                continue  # refused: stays in the pool
            taken[index] = True
            free[rank] -= 1
            self._place(request, rank, t)
            placed = True
        if placed:
            pool.extendleft(reversed([r for r, took in zip(head, taken) if not took]))
        else:
            pool.extendleft(reversed(head))
        return placed

    def _admit_queues(self, t: float) -> bool:
        placed = False
        for rank in np.flatnonzero(self.queued).tolist():
            queue = self.queues[rank]
            while queue and self.active[rank] < self.slots and self._fits(rank, queue[0].prompt):
                request = queue.popleft()
                self.queued[rank] -= 1
                self.queued_tokens[rank] -= request.prompt
                self._place(request, rank, t)
                placed = True
        return placed

    def _place(self, request: LLMRequest, rank: int, t: float) -> None:
        slot = self._free_slots[rank].pop()
        k = self.step
        self._slot_request[rank][slot] = request
        self._occupied[rank, slot] = True
        self._slot_base[rank, slot] = request.prompt - k
        self._slot_estimate[rank, slot] = k + request.output_estimate
        self._slot_order[rank, slot] = self._order
        self._order += 1
        request.rank = rank
        request._slot = slot
        request._admit_step = k
        request._finish_step = finish = k + request.output
        self._finishing.setdefault(finish, []).append(request)
        if request.t_admit is None:
            request.t_admit = t
        self.loads[rank] += request.prompt
        self.active[rank] += 1
        self._admitted_prompt[rank] += request.prompt
        self.active_total += 1
        self.waiting_tokens -= request.prompt
        self.admitted += 1
        self._awaiting_first.append(request)

    def _release(self, request: LLMRequest) -> None:
        rank, slot = request.rank, request._slot
        self.loads[rank] -= self._slot_base[rank, slot] + self.step
        self.active[rank] -= 1
        self.active_total -= 1
        self._occupied[rank, slot] = False
        self._slot_request[rank][slot] = None
        self._free_slots[rank].append(slot)

    # -- KV capacity ---------------------------------------------------------------------
    def _preempt(self) -> None:
        """Before a step: while a rank's growth would overflow its KV cache, send back its latest admission."""
        capacity = self.kv_capacity
        assert capacity is not None
        over = np.flatnonzero(self.loads + self.active > capacity)
        for rank in over.tolist():
            sent_back: list[LLMRequest] = []
            while int(self.loads[rank] + self.active[rank]) > capacity:
                order = np.where(self._occupied[rank], self._slot_order[rank], -1)
                request = self._slot_request[rank][int(order.argmax())]
                assert request is not None
                self.tokens_lost += self.step - request._admit_step
                if request._admit_step == self.step:
                    self._admitted_prompt[rank] -= request.prompt
                self._release(request)
                request._finish_step = -1
                request.preemptions += 1
                self.preemptions += 1
                sent_back.append(request)
            # Latest first, each to the head: the earliest sent back ends first in line.
            for request in sent_back:
                self.waiting_tokens += request.prompt
                if self.on_arrival:
                    self.queues[rank].appendleft(request)
                    self.queued[rank] += 1
                    self.queued_tokens[rank] += request.prompt
                else:
                    self.pool.appendleft(request)

    def _check_fits(self, request: LLMRequest) -> None:
        if request.prompt < 1 or request.output < 1:
            raise ScenarioError("jobs.tokens", f"request {request.request_id}: prompt and output must be >= 1 token")
        if self.kv_capacity is None:
            return
        assert self.kv_limit is not None
        if request.prompt > self.kv_limit or request.prompt + request.output > self.kv_capacity:
            raise ScenarioError(
                "kv_capacity",
                f"request {request.request_id} (prompt {request.prompt}, output {request.output}) can never fit "
                f"a rank's KV cache ({self.kv_capacity} tokens, admission up to {self.kv_limit})",
            )
