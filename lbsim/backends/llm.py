"""The backend model ``llm``: a data-parallel LLM inference engine behind the routers.

G ranks of B batch slots step together behind a barrier (docs/llm.md); the
step loop is :class:`lbsim.llm.engine.LLMEngine`. This module adapts it to the
backend contract (:mod:`lbsim.backends.base`): a job becomes a request of its
``prompt`` and ``output`` tokens, completions happen only at step ends, and
``next_done`` is the end of the step in progress (a step may complete
nothing: ``catch_up`` then only plays it). The engine evolves on its own
between arrivals, so it is played forward lazily like the ``rate`` model, or
(``lazy = False``) a kernel event is scheduled at every step end.

Telemetry: besides the job count (pool + active), LLM-aware routers read the
resident plus waiting tokens, the free slots and the pool length
(:class:`~lbsim.backends.base.EngineState`), kept in a history exactly like
the job count so that a view never shows fresher state than its mode allows.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel
from simpy.core import NORMAL

from ..errors import ScenarioError
from ..events import Wakeup
from ..jobs import Job
from ..llm.engine import LLMEngine
from ..llm.equivalent import equivalent_rate
from ..llm.figures import engine_figures, jobs_frame, merge_sums
from ..llm.params import LLMParams
from ..llm.request import LLMRequest
from ..llm.steps import StepLog
from ..rates import RateFamily
from .base import BackendContext, BackendModel, EngineState, FleetOutputs, Workload, prune, register_backend

if TYPE_CHECKING:
    pass


INF = float("inf")


@register_backend
class LLMBackend(BackendModel):
    """A data-parallel LLM engine: G ranks x B slots stepping behind a barrier, an admission policy (docs/llm.md)."""

    __slots__ = ("_lazy", "_state_prune_at", "_version", "engine", "requests", "state", "state_t")

    name: ClassVar[str] = "llm"
    Params = LLMParams  # type: ignore[assignment]
    examples: ClassVar[tuple[dict[str, Any], ...]] = (
        {"workers": 2, "slots": 3, "step_time": {"kind": "barrier", "base": 0.02, "per_token": 2e-5}},
        {
            "workers": 3,
            "slots": 2,
            "dispatch": "on_arrival",
            "admission": {"name": "vllm_dp"},
            "step_time": {"kind": "affine", "preset": "h100_llama8b"},
        },
        {
            "workers": 2,
            "slots": 4,
            "admission": {"name": "jsq"},
            "kv_capacity": 3000,
            "step_time": {"kind": "barrier", "base": 0.02, "per_token": 2e-5},
        },
    )

    example_jobs: ClassVar[dict[str, Any]] = {
        "tokens": {
            "kind": "independent",
            "prompt": {"size": "uniform", "mean": 200},
            "output": {"size": "exponential", "mean": 20},
        }
    }

    def __init__(self, index: int, params: LLMParams, context: BackendContext):  # type: ignore[override]
        super().__init__(index, params, context)
        rng = context.streams[index] if context.streams else np.random.default_rng(index)
        sample = context.step_sample_interval
        self.engine = LLMEngine(params, rng, name=str(index), steps=StepLog(str(index), sample))
        self.requests: list[LLMRequest] = []  # every request received, for the jobs table
        # History of the LLM-facing state, beside the job count's (same window).
        self.state_t = [-INF]
        self.state = [EngineState(0.0, params.workers * params.slots, 0)]
        self._state_prune_at = 8  # (pruned as the job count's history is: when it has doubled)
        self._version = 0
        self._lazy = context.lazy

    # -- the contract -----------------------------------------------------------------
    def arrive(self, job: Job) -> None:
        now = self.env._now
        self.catch_up(now)
        job.t_backend_arrival = now
        if self.observer is not None:
            self.observer.arrived(job, now, self.jobs)
        request = LLMRequest(job.job_id, job.prompt, job.output, now, payload=job)
        self.requests.append(request)
        self.engine.arrive(request, now)
        self.jobs += 1
        self.record(now)
        self._record_state(now)
        self._next()

    def catch_up(self, now: float) -> None:
        engine = self.engine
        played = self.next_done <= now
        while self.next_done <= now:
            t = self.next_done
            done = engine.advance(t)  # exactly the step ending at t
            self.jobs -= len(done)
            # A step's tokens are served at its end; those lost to preemption are served again later.
            self.served = (engine.tokens_emitted - engine.tokens_lost) * self.context.job_scale
            if done:
                self.record(t)
            self._record_state(t)
            self.next_done = engine.next_event_time
            for request in done:
                job = request.payload
                if self.observer is not None:
                    self.observer.finished(job, t)
                self.context.on_done(job, t)
        if played and not self._lazy:
            self._schedule()  # the next step's end (the event that fired, or a read, played the last one)

    def _next(self) -> None:
        if self.engine.next_event_time != self.next_done:
            self.next_done = self.engine.next_event_time
            if not self._lazy:
                self._schedule()

    def _schedule(self) -> None:
        self._version += 1
        if self.next_done < INF:
            self.env.schedule(Wakeup(self._step_ends, self._version), NORMAL, self.next_done - self.env._now)

    def _step_ends(self, event: Wakeup) -> None:
        if event.payload == self._version:
            self.catch_up(self.next_done)

    def _record_state(self, t: float) -> None:
        window = self.context.history_window
        if window is None:  # no telemetry reads the past: the present is all there is to keep
            self.state_t[-1], self.state[-1] = t, self._state()
            return
        self.state_t.append(t)
        self.state.append(self._state())
        if len(self.state_t) >= self._state_prune_at:
            prune(self.state_t, self.state, t - window)
            self._state_prune_at = max(8, 2 * len(self.state_t))

    def _state(self) -> EngineState:
        e = self.engine
        return EngineState(float(e.resident_tokens + e.waiting_tokens), e.free_slots, e.pool_length)

    def engine_state_at(self, t: float) -> EngineState:
        if self.next_done <= t:
            self.catch_up(t)
        return self.state[bisect_right(self.state_t, t) - 1]

    # -- what the model tells the rest ----------------------------------------------------
    @classmethod
    def parse_params(cls, table: Mapping[str, Any], key: str) -> BaseModel:
        try:
            return LLMParams.from_spec(table, key)  # type: ignore[return-value]
        except ScenarioError as err:
            raise ScenarioError(err.key.lstrip("."), err.message) from None

    @classmethod
    def params_table(cls, params: BaseModel) -> dict[str, Any]:
        return params.spec()  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def rate_function(cls, params: LLMParams, workload: Workload) -> RateFamily:  # type: ignore[override]
        """The engine's token throughput at load x (x/sbar requests of the workload's mean resident length)."""
        return equivalent_rate(
            params, workload.mean_length, workload.mean_prompt, workload.mean_output, workload.mean_size
        )

    @classmethod
    def load_limit(cls, params: LLMParams, workload: Workload) -> float:  # type: ignore[override]
        """Every slot full: the fluid rate stops growing at G * B requests (the curve alone would not)."""
        return params.workers * params.slots * workload.mean_size

    @classmethod
    def check_scenario(cls, params: BaseModel, scenario: Any, key: str) -> None:
        if scenario.jobs.tokens is None:
            raise ScenarioError("jobs.tokens", f"required: {key} is an llm backend, whose requests are in tokens")

    @classmethod
    def fleet_outputs(
        cls, backends: Sequence[BackendModel], warmup: float, horizon: float = float("inf")
    ) -> FleetOutputs:
        """The engines' jobs columns, their steps, and the figures of both modes over the measured jobs.

        Columns: rank, t_admit, t_first_token, ttft, tpot, pool_wait and
        preemptions. In a whole system ``ttft`` runs from the request's arrival
        at its frontend to its first token's arrival back there (both network
        hops included); ``pool_wait`` from its arrival at the engine to
        admission. The figures cover the jobs that arrived in [``warmup``,
        ``horizon``); the step sums, the whole run (the drain included).
        """
        import pandas as pd  # (lazy: the CLI starts without pandas)

        engines = [b for b in backends if isinstance(b, LLMBackend)]
        requests = [r for b in engines for r in b.requests]
        frame = jobs_frame(requests).rename(columns={"request_id": "job_id"})
        jobs = [r.payload for r in requests]
        arrival = np.array([job.t_arrival for job in jobs], dtype=np.float64)
        back = np.array([job.return_delay for job in jobs], dtype=np.float64)
        frame["ttft"] = frame["t_first_token"] + back - arrival
        figures = engine_figures(
            merge_sums([b.engine.log.sums for b in engines]),
            frame[(arrival >= warmup) & (arrival < horizon)],
            sum(b.engine.preemptions for b in engines),
        )
        steps = pd.concat([b.engine.log.frame().assign(backend=np.int32(b.index)) for b in engines], ignore_index=True)
        columns = ["job_id", "rank", "t_admit", "t_first_token", "ttft", "tpot", "pool_wait", "preemptions"]
        return FleetOutputs(frame[columns], {"rank": -1, "preemptions": 0}, {"steps": steps}, figures)
