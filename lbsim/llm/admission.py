"""Admission policies: which waiting requests an engine admits, and on which rank (``admission``).

After every step (and at t = 0, or when an idle engine receives a request)
the engine asks its policy to fill free slots (docs/llm.md, "Admission").
Two dispatch modes:

* ``pool`` (default): waiting requests form one FIFO pool per engine; the
  policy sees the first ``reveal`` entries (:class:`Candidates`) and the
  ranks' state (:class:`RankState`) and returns ``(candidate, rank)`` pairs
  from :meth:`AdmissionPolicy.admit`.
* ``on_arrival``: a request is bound to a rank when it arrives
  (:meth:`AdmissionPolicy.assign`) and waits in that rank's FIFO queue, as
  vLLM's data-parallel front end does; ranks admit from their own queue.

The engine enforces the rules a policy may not break (a candidate at most
once, at most ``free[g]`` per rank) and refuses pairs whose prompt does not
fit below the KV watermark; refused candidates stay in the pool.

A new policy is one class plus one registry line::

    @register_admission
    class Greedy(AdmissionPolicy):
        \"\"\"Each candidate to the rank with the most free slots.\"\"\"
        name = "greedy"
        def admit(self, state, candidates): ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lbsim.registry import Registry, field_rows, from_params


@dataclass
class RankState:
    """Read-only snapshot of an engine's ranks handed to a policy; arrays of length G.

    ``lengths`` and ``remaining`` are computed on first access of a rank
    (most policies never read them).
    """

    loads: np.ndarray  # int64, L_g: resident tokens (prompt + generated so far) of active requests
    active: np.ndarray  # int64, active requests per rank
    free: np.ndarray  # int64, free slots = slots - active
    queued: np.ndarray  # int64, requests waiting in each rank's own queue (dispatch = "on_arrival")
    queued_tokens: np.ndarray  # int64, their prompt tokens
    lengths: Sequence[np.ndarray]  # per rank: resident tokens of each active request
    remaining: Sequence[np.ndarray]  # per rank: ESTIMATED remaining output tokens of each active request
    kv_room: np.ndarray | None = None  # int64, prompt tokens each rank may still admit (None: no KV limit)


@dataclass
class Candidates:
    """The first ``reveal`` pool entries, in pool order."""

    prompt: np.ndarray  # int64
    output_estimate: np.ndarray  # int64 estimated output lengths (true lengths when no noise)

    def __len__(self) -> int:
        return len(self.prompt)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdmissionPolicy:
    """Base class. Subclasses set ``name``, optionally ``Params`` and ``dispatch``, and implement
    :meth:`admit` (``dispatch = "pool"``) or :meth:`assign` (``dispatch = "on_arrival"``)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    dispatch: ClassVar[str] = "pool"

    def __init__(self, params: BaseModel, workers: int, slots: int, rng: np.random.Generator):
        self.params = params
        self.workers = workers
        self.slots = slots
        self.rng = rng

    def admit(self, state: RankState, candidates: Candidates) -> list[tuple[int, int]]:
        """pool dispatch: (candidate index, rank) pairs; each candidate at most once, at most free[g] per rank."""
        raise NotImplementedError(f"admission policy '{self.name}' dispatches on arrival, not from a pool")

    @classmethod
    def check_engine(cls, params: BaseModel, workers: int, slots: int, reveal: int) -> None:
        """Checks against the engine's shape, run when the scenario is loaded (raise ScenarioError naming the key)."""

    def estimate(self, output: int) -> int:
        """What the policy will believe of a request's output length (its estimate), drawn once, on arrival.

        Only policies that look ahead override it (bfio's noisy estimates); the
        default is the true length.
        """
        return output

    def assign(self, state: RankState, prompt: int, now: float) -> int:
        """on_arrival dispatch: the rank an arriving request is bound to."""
        raise NotImplementedError(f"admission policy '{self.name}' admits from a pool, not on arrival")

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


ADMISSIONS = Registry("admission policy", "name")


def register_admission(cls: type[AdmissionPolicy]) -> type[AdmissionPolicy]:
    """Class decorator: make a policy available as ``admission = { name = cls.name, ... }``."""
    if cls.dispatch not in ("pool", "on_arrival"):
        raise ValueError(f"admission policy '{cls.name}': dispatch must be 'pool' or 'on_arrival'")
    return ADMISSIONS.register(cls)


class AdmissionChoice(NamedTuple):
    """A validated ``admission`` table: the policy class and its parameters."""

    policy: type[AdmissionPolicy]
    params: BaseModel

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def dispatch(self) -> str:
        return self.policy.dispatch

    def build(self, workers: int, slots: int, rng: np.random.Generator) -> AdmissionPolicy:
        """A fresh policy for one engine."""
        return self.policy(self.params, workers, slots, rng)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump()}


def make_admission(spec: Mapping[str, Any] | AdmissionChoice, key: str = "admission") -> AdmissionChoice:
    """The policy of a table such as ``{ name = "round_robin", persistent = true }``; errors name the key."""
    if isinstance(spec, AdmissionChoice):
        return spec
    cls, params = ADMISSIONS.split(spec, key, '{ name = "fcfs" }')
    return AdmissionChoice(cls, from_params(cls.Params, params, key, cls.name))


def parameter_table() -> list[dict[str, Any]]:
    """Every registered policy with its dispatch, parameters, defaults and descriptions (``lbsim admissions``)."""
    return [
        {"admission": name, "dispatch": cls.dispatch, "description": cls.describe(), "params": field_rows(cls.Params)}
        for name, cls in sorted(ADMISSIONS.items())
    ]


# --------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------


@register_admission
class FCFS(AdmissionPolicy):
    """The first F pool entries (F the free slots), filling ranks in index order: rank 0's free slots first."""

    name = "fcfs"

    def admit(self, state: RankState, candidates: Candidates) -> list[tuple[int, int]]:
        ranks = np.repeat(np.arange(len(state.free)), state.free)
        count = min(len(ranks), len(candidates))
        return list(zip(range(count), ranks[:count].tolist()))


@register_admission
class JSQ(AdmissionPolicy):
    """Pool entries in FIFO order, each to the rank with a free slot and the fewest resident tokens.

    Prompts placed in the same call count; ties go to the lowest index.
    """

    name = "jsq"

    def admit(self, state: RankState, candidates: Candidates) -> list[tuple[int, int]]:
        loads = state.loads.tolist()
        free = state.free.tolist()
        pairs: list[tuple[int, int]] = []
        big = float("inf")
        for index, prompt in enumerate(candidates.prompt.tolist()):
            best, best_load = -1, big
            for rank, load in enumerate(loads):
                if free[rank] > 0 and load < best_load:
                    best, best_load = rank, load
            if best < 0:
                break
            pairs.append((index, best))
            loads[best] += prompt
            free[best] -= 1
        return pairs


class RoundRobinParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    persistent: bool = Field(False, description="keep the turn across calls instead of restarting at rank 0")


@register_admission
class RoundRobin(AdmissionPolicy):
    """Pool entries in FIFO order to ranks in turn (skipping full ones), from rank 0 at each call.

    With ``persistent = true`` the turn carries over from one call to the next.
    """

    name = "round_robin"
    Params = RoundRobinParams

    def __init__(self, params: BaseModel, workers: int, slots: int, rng: np.random.Generator):
        super().__init__(params, workers, slots, rng)
        self.turn = 0

    def admit(self, state: RankState, candidates: Candidates) -> list[tuple[int, int]]:
        free = state.free.tolist()
        workers = len(free)
        turn = self.turn if self.params.persistent else 0  # type: ignore[attr-defined]
        pairs: list[tuple[int, int]] = []
        left = sum(free)
        for index in range(min(len(candidates), left)):
            while free[turn] <= 0:
                turn = (turn + 1) % workers
            pairs.append((index, turn))
            free[turn] -= 1
            turn = (turn + 1) % workers
        self.turn = turn
        return pairs


class VllmParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    publish_interval: float = Field(0.1, gt=0, description="seconds between publications of the ranks' counts")
    waiting_weight: float = Field(4.0, ge=0, description="weight of a waiting request against a running one")


@register_admission
class VllmDP(AdmissionPolicy):
    """On arrival, the rank with the least ``4 * waiting + running``, scanning from a rotating start.

    vLLM's data-parallel load balancer (``DPLBAsyncMPClient``, vLLM v1): the
    engines publish their waiting and running counts every
    ``publish_interval``; between publications the front end adds each
    request it sends to the chosen rank's waiting count. The scan starts one
    rank further at each request, so ties rotate.
    """

    name = "vllm_dp"
    Params = VllmParams
    dispatch = "on_arrival"

    def __init__(self, params: BaseModel, workers: int, slots: int, rng: np.random.Generator):
        super().__init__(params, workers, slots, rng)
        self.waiting = [0] * workers
        self.running = [0] * workers
        self.published_at = -float("inf")
        self.start = 0

    def assign(self, state: RankState, prompt: int, now: float) -> int:
        interval = self.params.publish_interval  # type: ignore[attr-defined]
        if now >= self.published_at + interval:
            self.waiting = state.queued.tolist()
            self.running = state.active.tolist()
            # Publications fall on the grid k * interval, as a periodic timer's would.
            self.published_at = (now // interval) * interval
        weight = self.params.waiting_weight  # type: ignore[attr-defined]
        workers = self.workers
        best, best_score = -1, float("inf")
        for offset in range(workers):
            rank = (self.start + offset) % workers
            score = weight * self.waiting[rank] + self.running[rank]
            if score < best_score:
                best, best_score = rank, score
        self.start = (self.start + 1) % workers
        self.waiting[best] += 1
        return best
