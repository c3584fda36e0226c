"""The backend-model contract and its registry.

A backend model is the server behind one entry of ``[[backends]]``: it takes
jobs (:meth:`BackendModel.arrive`), finishes them (``context.on_done``), and
answers the engine, the telemetry views and Prequal's probes about its state.
Today's backend, jobs sharing a load-dependent rate ``mu_j(x_j)``, is the
model ``rate`` (:mod:`lbsim.backends.rate`), and the default; a scenario picks
another with ``model = "NAME"`` in its ``[[backends]]`` table, and the other
keys of that table are the model's ``Params``, validated when the scenario is
loaded.

A model is one class: a ``name``, a ``Params`` pydantic model, ``examples``
(parameter sets the conformance suite in ``tests/test_backends.py`` runs
through every invariant of docs/model.md section 4), the members below, and
``@register_backend``. What the engine relies on, and nothing more:

* ``jobs``: n_j, the jobs present (in service or waiting); ``index``: j;
* ``arrive(job)``: a job reaches the backend at ``context.env.now``; the model
  sets ``job.t_backend_arrival`` and later calls ``context.on_done(job, t)``;
* ``next_done`` and ``catch_up(now)``: the time of the model's next
  completion, and playing every completion due by ``now`` forward. With
  ``context.lazy`` the model schedules no completion events: the engine calls
  ``catch_up`` whenever it looks at the backend (arrival, telemetry read,
  probe, sample, end of run). Without it, the model schedules its own
  completions on the kernel so that ``on_done`` runs on time (routers that
  listen for responses). Both must give the same event times to the last bit;
* the telemetry history: ``history_t`` / ``history_n``, the times at which
  n_j changed and its values (kept by :meth:`record`, pruned to
  ``context.history_window``), read by the delayed and periodic views through
  :meth:`jobs_at`;
* ``observer``: optional per-job hooks a router attaches (Prequal's latency at
  RIF), called as ``arrived(job, now, jobs)`` and ``finished(job, now)``;
* ``set_multiplier(m)``: scale the model's speed from now on (antagonist load),
  for models with ``supports_antagonist``;
* ``served`` and :meth:`work_served`: the work units served since t = 0,
  whether or not the jobs have finished (the summary's ``served`` and the
  time series' ``served`` column, docs/model.md section 3). A model adds to
  ``served`` where it plays its service forward.

A model also says what the fluid model, the optimum and the routers that know
rates may assume of it: :meth:`rate_function` gives its fluid rate ``mu(x)``
(a :class:`~lbsim.rates.RateFamily`) or ``None``, and ``load_limit`` bounds
the load its rate counts (``max_load``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ScenarioError
from ..registry import Registry, field_rows, first_paragraph, from_params, validate_strictly

if TYPE_CHECKING:
    from ..jobs import Job
    from ..rates import RateFamily

INF = math.inf


@dataclass(frozen=True)
class Workload:
    """What the jobs are like, as far as a model's fluid rate function depends on it."""

    mean_size: float  #: sbar, work units per job
    mean_prompt: float = 0.0  #: tokens (jobs with tokens only)
    mean_output: float = 1.0  #: tokens
    mean_length: float = 0.0  #: mean resident tokens of an active request (llm.equivalent.mean_resident_length)


@dataclass
class FleetOutputs:
    """A model's additions to a run's outputs (:meth:`BackendModel.fleet_outputs`)."""

    #: columns for the jobs these backends served, with ``job_id`` (None: no columns)
    job_columns: Any = None
    #: values of those columns for jobs other backends served
    fill: dict[str, Any] = field(default_factory=dict)
    #: output tables by name (``steps``), each with a ``backend`` column
    tables: dict[str, Any] = field(default_factory=dict)
    #: summary figures
    figures: dict[str, Any] = field(default_factory=dict)


class EngineState(NamedTuple):
    """What an LLM-aware router may know of a backend beyond its job count (as stale as the telemetry)."""

    tokens: float  #: resident plus waiting tokens (a rate backend: its load x_j = n_j * sbar)
    free_slots: int  #: batch slots free (a rate backend: 0)
    pool_length: int  #: requests waiting for a slot (a rate backend: 0)


BACKENDS = Registry("backend model", "name")
DEFAULT_MODEL = "rate"
#: class decorator: make a backend model available by its ``name`` (scenarios, ``lbsim backends``)
register_backend = BACKENDS.register


class BackendParams(BaseModel):
    """Base of every model's ``Params``: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


@dataclass
class BackendContext:
    """What the engine gives every backend it builds."""

    env: Any  #: the kernel (a SimPy environment): ``now``, ``schedule``
    mean_size: float  #: sbar, the mean job size
    on_done: Callable[[Job, float], None]  #: to call when a job's service ends
    history_window: float | None  #: how far back telemetry reads (None: keep no history)
    lazy: bool = True  #: completions played forward on demand instead of scheduled
    #: one random stream per backend (by index), for models that draw (an admission policy's ties, estimates)
    streams: Sequence[np.random.Generator] = ()
    #: models that log steps (llm): one row per sample_interval (with running sums) instead of per step
    step_sample_interval: float | None = None
    #: tables a model may share between its backends (e.g. mu(n * sbar) by n), keyed by the model
    shared: dict[Any, Any] = field(default_factory=dict)
    #: work units per token of a token workload (a job's size is ``job_scale * output``): an engine's served work
    job_scale: float = 1.0


class BackendModel:
    """Base class of backend models: the telemetry history, and the contract's defaults."""

    __slots__ = (
        "_prune_at", "context", "env", "history_n", "history_t", "index", "jobs", "next_done", "observer", "served",
    )  # fmt: skip

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = BackendParams
    #: parameter sets the conformance suite runs (every model declares at least one)
    examples: ClassVar[tuple[dict[str, Any], ...]] = ()
    #: the ``[jobs]`` keys the examples need (an llm backend's requests are in tokens)
    example_jobs: ClassVar[dict[str, Any]] = {}
    #: whether :meth:`set_multiplier` (antagonist load) is supported
    supports_antagonist: ClassVar[bool] = False

    def __init__(self, index: int, params: BaseModel, context: BackendContext):
        self.index = index
        self.context = context
        self.env = context.env
        self.jobs = 0  # n_j: jobs present, in service or waiting
        self.next_done = INF  # time of the next completion (INF: none pending)
        #: optional per-job hooks ``arrived(job, now, jobs)`` / ``finished(job, now)`` and
        #: ``estimate(jobs)``: the latency-at-RIF tracker Prequal's probes read
        self.observer: Any = None
        # Telemetry history: (time, jobs) at every change, pruned to the longest delay.
        self.history_t = [-INF]
        self.history_n = [0]
        self._prune_at = 8
        #: work units served up to the model's last event (jobs finished or not)
        self.served = 0.0

    # -- what a model implements ------------------------------------------------------
    def arrive(self, job: Job) -> None:
        """A job reaches the backend now."""
        raise NotImplementedError

    def catch_up(self, now: float) -> None:
        """Play forward every completion due by ``now``."""
        raise NotImplementedError

    def set_multiplier(self, multiplier: float) -> None:
        """Scale the backend's speed from now on (antagonist load)."""
        raise NotImplementedError(f"backend model {self.name!r} does not support antagonists")

    @classmethod
    def rate_function(cls, params: BaseModel, workload: Workload) -> RateFamily | None:
        """The fluid rate ``mu(x)`` (work units per second at load x), or None if the model has none."""
        return None

    @classmethod
    def load_limit(cls, params: BaseModel, workload: Workload) -> float:
        """The largest load the fluid rate counts: the fluid departure rate is ``mu(min(x, limit))``."""
        return INF

    @classmethod
    def parse_params(cls, table: Mapping[str, Any], key: str) -> BaseModel:
        """The model's parameters from its keys in a ``[[backends]]`` table; errors name ``key.param``."""
        try:
            return validate_strictly(cls.Params, table, key)  # finite numbers, strict types
        except ValidationError as exc:
            for error in exc.errors():  # a validator that names its own key (make_rate's "service.c") wins
                inner = (error.get("ctx") or {}).get("error")
                if isinstance(inner, ScenarioError):
                    field = ".".join(str(part) for part in error["loc"])
                    same = not field or inner.key.split(".")[0] == field.split(".")[0]
                    where = inner.key if same else f"{field}.{inner.key}"
                    raise ScenarioError(f"{key}.{where}" if key else where, inner.message) from None
        try:
            return from_params(cls.Params, table, key, f"backend model '{cls.name}'")
        except ScenarioError as err:
            raise ScenarioError(err.key.lstrip("."), err.message) from None

    @classmethod
    def params_table(cls, params: BaseModel) -> dict[str, Any]:
        """The parameters as the TOML table they are built from (for ``Scenario.to_dict``)."""
        data: dict[str, Any] = {}
        for name, value in params.model_dump(mode="python", exclude_none=True, serialize_as_any=True).items():
            original = getattr(params, name)
            kind = getattr(original, "kind", None)
            data[name] = {"kind": kind, **value} if isinstance(original, BaseModel) and kind else value
        return data

    @classmethod
    def check_scenario(cls, params: BaseModel, scenario: Any, key: str) -> None:
        """Checks that need the whole scenario, run when it is loaded (raise ScenarioError naming ``key``...)."""

    def engine_state_at(self, t: float) -> EngineState:
        """The LLM-facing state at time ``t`` (within the history window); a rate backend's tokens are its load."""
        if self.context.history_window is None:  # no history kept: only the present is asked for
            self.catch_up(t)
            return EngineState(self.jobs * self.context.mean_size, 0, 0)
        return EngineState(self.jobs_at(t) * self.context.mean_size, 0, 0)

    @classmethod
    def fleet_outputs(
        cls, backends: Sequence[BackendModel], warmup: float, horizon: float = float("inf")
    ) -> FleetOutputs:
        """What the model adds to a run's outputs, over every backend of this model in it; figures
        measure the jobs that arrived in [``warmup``, ``horizon``) (later ones arrived in the drain)."""
        return FleetOutputs()

    # -- provided ---------------------------------------------------------------------
    @property
    def load(self) -> float:
        """x_j = n_j * sbar."""
        return self.jobs * self.context.mean_size

    def work_served(self, t: float) -> float:
        """Work units served in [0, t], caught up to ``t`` first: ``served`` plus what the jobs got since.

        The default is for models whose service advances only at their events
        (an engine's tokens at step ends); a model that serves continuously
        between events adds the work of the open interval.
        """
        if self.next_done <= t:
            self.catch_up(t)
        return self.served

    def jobs_at(self, t: float) -> int:
        """n_j as it was at time t (t within the history window; caught up to t first)."""
        if self.next_done <= t:
            self.catch_up(t)
        return self.history_n[bisect_right(self.history_t, t) - 1]

    def sojourn_estimate(self) -> float:
        """What the backend answers a probe: its observer's sojourn estimate at its current jobs (NaN without one)."""
        return self.observer.estimate(self.jobs) if self.observer is not None else float("nan")

    def record(self, now: float) -> None:
        """Append n_j at ``now`` to the telemetry history (call it at every change of ``jobs``)."""
        self.history_t.append(now)
        self.history_n.append(self.jobs)
        if len(self.history_t) >= self._prune_at:
            self._prune(now)

    def _prune(self, now: float) -> None:
        if self.context.history_window is not None:
            prune(self.history_t, self.history_n, now - self.context.history_window)
        self._prune_at = max(8, 2 * len(self.history_t))

    @classmethod
    def describe(cls) -> str:
        return first_paragraph(cls)


def prune(times: list[float], values: list[Any], oldest: float) -> None:
    """Drop a history's entries before the last one at or before ``oldest`` (``now`` - the longest delay).

    That last entry stays: it is the state a frontend with the longest delay still sees.
    """
    k = bisect_right(times, oldest) - 1
    if k > 0:
        del times[:k]
        del values[:k]


def backend_class(name: str, key: str = "model") -> type[BackendModel]:
    from . import BACKENDS as registry  # noqa: F401  (importing the package registers every model)

    model: type[BackendModel] = BACKENDS.lookup(name, key)
    return model


def validate_params(name: str, params: Mapping[str, Any], key: str = "") -> BaseModel:
    """A model's parameters, checked; errors name the key relative to the backend's table."""
    cls = backend_class(name, f"{key}.model" if key else "model")
    return cls.parse_params(params, key)


def parameter_table() -> list[dict[str, Any]]:
    """Every registered backend model with its parameters and defaults (``lbsim backends``)."""
    from . import BACKENDS as registry  # noqa: F401

    return [
        {"model": name, "description": first_paragraph(cls), "params": field_rows(cls.Params)}
        for name, cls in sorted(BACKENDS.items())
    ]
