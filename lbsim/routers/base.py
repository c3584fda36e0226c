"""The router interface and its registry.

A router is one small class: a ``Params`` model (documented parameters with
defaults, validated when the scenario is loaded) and a ``route`` method. It
may also have a periodic ``tick`` (DGD-LB), a ``split`` that is recorded in
``routing.parquet``, an ``on_response`` hook (client-local routers), and may
send probes through the network (Prequal) with ``ctx.probe``, their replies
delivered by a callback or, one kernel event cheaper, put in a
:class:`ProbeInbox`.

Routers see backends only through a :class:`~lbsim.view.View`,
which serves state exactly as stale as the telemetry mode allows.

A router with a fluid limit names its fluid twin (``fluid``, a
:class:`~lbsim.routers.fluid_base.FluidRouter` defined beside it, attached
with :func:`~lbsim.routers.fluid_base.fluid_twin`); ``lbsim fluid``
integrates that twin.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from heapq import heappop
from itertools import accumulate
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ScenarioError, unknown
from ..registry import Registry, field_rows, first_error, validate_strictly

if TYPE_CHECKING:
    from ..jobs import Job
    from ..rates import RateFamily
    from ..view import View
    from .fluid_base import FluidRouter

ROUTERS = Registry("router", "name")
#: class decorator: make a router available by its ``name`` (CLI, scenarios, docs)
register = ROUTERS.register


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeReply(NamedTuple):
    """What a backend answers to a probe (Prequal): its requests in flight and the sojourn a job would see there."""

    backend: int
    rif: int
    sojourn_estimate: float  # median recent sojourn at about the current RIF; NaN: unknown
    t_sent: float
    t_answered: float


class ProbeInbox(list):
    """Probe replies read at their backends and on their way back, for a router to take when it acts.

    A heap of ``(t_landed, event_id, frontend, reply)``. A probe sent to an
    inbox costs one kernel event (its arrival at the backend) instead of two:
    the way back is not an event, since nothing sees a reply between its
    landing and the router's next action. ``event_id`` is the kernel
    insertion id the return event would have had, so a reply landing at the
    very instant of an event counts as landed before it exactly when the
    return event would have come first (:meth:`pop_landed`; return events
    are NORMAL priority, as the arrivals and ticks a router acts in are).

    The router must take every landed reply, in heap order, before it acts
    and before it draws a random number (so its draws keep their order), with
    one inbox for all its frontends when they share a random stream.
    A first test that its head has ``t_landed <= now`` is cheaper than a call.
    """

    __slots__ = ()

    def pop_landed(self, now: float, event_id: Callable[[], int]) -> tuple[float, int, int, ProbeReply] | None:
        """Remove and return the first reply if it landed before the event being processed at ``now``, else None."""
        if self:
            head = self[0]
            t = head[0]
            if t < now or (t == now and head[1] < event_id()):
                return heappop(self)
        return None


@dataclass
class RouterContext:
    """What a router may know about the system it routes for (static facts, not state)."""

    num_frontends: int
    num_backends: int
    delay: np.ndarray  # (F, B) one-way delays d_ij
    connect: np.ndarray  # (F, B) bool
    rates: Sequence[RateFamily]  # mu_j, for routers that know the rate functions
    mean_size: float  # sbar
    demand: np.ndarray  # (F,) lambda_i, for routers that use it (weighted=optimal)
    rng: np.random.Generator  # the router's own stream
    now: Callable[[], float]
    # (frontend, backend, deliver): deliver is called with the reply when it lands, or is a ProbeInbox
    probe: Callable[[int, int, Callable[[ProbeReply], None] | ProbeInbox], None]
    scenario: Any = None  # the Scenario (for the optimum); routers should prefer the fields above
    #: the kernel insertion id of the event being processed (ProbeInbox.pop_landed)
    event_id: Callable[[], int] = lambda: -1

    @property
    def latency(self) -> np.ndarray:
        """The one-way delays d_ij under their name before 0.2 (:attr:`delay`), read-only, for scripts."""
        return self.delay

    @property
    def neighbours(self) -> list[list[int]]:
        """N(i): the backends frontend i may use, in index order."""
        return [list(np.flatnonzero(row)) for row in self.connect]


class Router:
    """Base class. Subclasses set ``name``, optionally ``Params``, and implement :meth:`route`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    #: whether the router reads the rate functions ``ctx.rates`` (then every backend must have one)
    uses_rates: ClassVar[bool] = False
    #: whether :meth:`route` reads every usable backend per job (then large fleets keep the view's arrays)
    scans_backends: ClassVar[bool] = False
    #: seconds between calls of :meth:`tick`, or None for routers without one
    tick_interval: float | None = None
    #: a factory ``(backend_index) -> observer`` attached to every backend, for routers
    #: whose probes ask backends for more than their job count (Prequal's sojourn at RIF)
    backend_observer: Callable[[int], Any] | None = None
    #: the router's fluid twin (``lbsim fluid``), or None; set by ``fluid_twin`` and not inherited
    fluid: ClassVar[type[FluidRouter] | None] = None

    _UNIFORM_BATCH = 4096

    def __init__(self, params: BaseModel, ctx: RouterContext) -> None:
        self.params = params
        self.ctx = ctx
        self.neighbours = [[int(j) for j in row] for row in ctx.neighbours]
        # For pick_least: each frontend's neighbours as an index array, None where it may use every backend.
        self._neighbour_index = [
            None if len(nb) == ctx.num_backends else np.array(nb, dtype=np.intp) for nb in self.neighbours
        ]
        self._uniforms: list[float] = []

    # -- what a router implements -------------------------------------------------
    def route(self, frontend: int, job: Job, view: View) -> int:
        """The backend for this job (must be one of ``self.neighbours[frontend]``)."""
        raise NotImplementedError

    def tick(self, now: float, view: View) -> None:
        """Called every ``tick_interval`` seconds when that is set."""

    def on_response(self, frontend: int, job: Job) -> None:
        """Called when a job's response reaches its frontend (only if a router overrides it)."""

    def split(self) -> np.ndarray | None:
        """The current routing probabilities (F, B), for routers that route by a split."""
        return None

    @classmethod
    def check_scenario(cls, params: BaseModel, scenario: Any) -> None:
        """Checks of the parameters that need the scenario (shapes...), run when it is loaded.

        Raise :class:`~lbsim.errors.ScenarioError` naming the key.
        """

    # -- helpers ------------------------------------------------------------------
    def uniform(self) -> float:
        """A U(0,1) draw from the router's own stream (drawn in batches: per-call numpy is slow)."""
        if not self._uniforms:
            self._uniforms = self.ctx.rng.random(self._UNIFORM_BATCH).tolist()
        return self._uniforms.pop()

    def choice(self, candidates: Sequence[int]) -> int:
        return candidates[int(self.uniform() * len(candidates))]

    def sample(self, candidates: Sequence[int], count: int) -> Sequence[int]:
        """``count`` distinct candidates uniformly at random (all if there are fewer).

        Floyd's algorithm: ``count`` draws, whatever the number of candidates.
        """
        n = len(candidates)
        if count >= n:
            return candidates
        chosen: list[int] = []
        for top in range(n - count, n):
            k = int(self.uniform() * (top + 1))
            chosen.append(top if k in chosen else k)
        return [candidates[k] for k in chosen]

    def pick_min(self, candidates: Sequence[int], values: Sequence[float]) -> int:
        """The candidate with the smallest value; ties broken uniformly at random."""
        best = min(values)
        ties = [c for c, v in zip(candidates, values) if v == best]
        return ties[0] if len(ties) == 1 else ties[int(self.uniform() * len(ties))]

    def pick_least(self, frontend: int, values: np.ndarray) -> int:
        """:meth:`pick_min` over ``frontend``'s neighbours of ``values``, an array over every backend.

        The same answer and the same draw as ``pick_min(neighbours, values[neighbours])``:
        the ties in index order, a uniform drawn only when there are several.
        """
        index = self._neighbour_index[frontend]
        if index is not None:
            values = values[index]
        k = int(values.argmin())  # (argmin is a quarter of min's numpy overhead)
        ties = (values == values[k]).nonzero()[0]
        candidates = self.neighbours[frontend]
        if len(ties) == 1:
            return candidates[k]
        return candidates[int(ties[int(self.uniform() * len(ties))])]

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


class SplitRouter(Router):
    """A router that samples each job's backend from a per-frontend split p_i (recorded).

    Subclasses install their split with :meth:`set_split` (once, or at every
    ``tick``); ``route`` samples it with one uniform draw and one bisection.
    """

    def set_split(self, p: np.ndarray) -> None:
        """Install a split (F, B); rows are renormalised over each frontend's neighbours."""
        p = np.where(self.ctx.connect, np.maximum(p, 0.0), 0.0)
        self._split = p / p.sum(axis=1, keepdims=True)
        # Cumulative weights over each frontend's neighbours: one bisect per job.
        self._cumulative = [list(accumulate(self._split[i, nb])) for i, nb in enumerate(self.neighbours)]

    def split(self) -> np.ndarray:
        return self._split

    def route(self, frontend: int, job: Job, view: View) -> int:
        cumulative = self._cumulative[frontend]
        k = bisect_right(cumulative, self.uniform() * cumulative[-1])
        return self.neighbours[frontend][min(k, len(cumulative) - 1)]


def router_class(name: str, key: str = "router.name") -> type[Router]:
    from . import ROUTERS as registry  # noqa: F401  (importing the package registers every router)

    router: type[Router] = ROUTERS.lookup(name, key)
    return router


def validate_params(name: str, params: dict[str, Any]) -> BaseModel:
    """Check a router's parameters; errors name the key (``router.step: must be > 0, got -1``)."""
    cls = router_class(name)
    try:
        return validate_strictly(cls.Params, params, "router")
    except ValidationError as exc:
        err = first_error(exc)
        inner = (err.get("ctx") or {}).get("error")
        if not err["loc"] and isinstance(inner, ScenarioError):  # a check across parameters names its key
            raise ScenarioError(f"router.{inner.key}", inner.message) from None
        field = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            raise ScenarioError(
                f"router.{field}", unknown(f"parameter of router '{name}'", field, cls.Params.model_fields)
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg.replace("Input should be", "must be").replace("greater than or equal to", ">=")
        msg = msg.replace("greater than", ">").replace("less than or equal to", "<=").replace("less than", "<")
        raise ScenarioError(f"router.{field}", f"{msg}, got {err.get('input')!r}") from None


def make_router(name: str, params: dict[str, Any], ctx: RouterContext) -> Router:
    cls = router_class(name)
    return cls(validate_params(name, params), ctx)


def parameter_table() -> list[dict[str, Any]]:
    """Every registered router with its parameters, defaults and descriptions (``lbsim routers``)."""
    from . import ROUTERS as registry  # noqa: F401

    return [
        {"router": name, "description": cls.describe(), "params": field_rows(cls.Params)}
        for name, cls in sorted(ROUTERS.items())
    ]
