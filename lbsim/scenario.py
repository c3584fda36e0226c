"""Scenarios: the TOML schema, loading, ``--set`` overrides and validation.

A scenario is checked once, here, when it is loaded; the engine trusts what
it is given. Every error names the offending key and what is wrong with it
(``frontends[1].rate: must be > 0, got -2``) and is raised as
:class:`~lbsim.errors.ScenarioError`.
"""

from __future__ import annotations

import copy
import itertools
import math
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .backends import DEFAULT_MODEL, BackendModel, Workload, backend_class
from .distributions import DISTRIBUTIONS, Distribution, make_distribution
from .errors import ScenarioError, unknown
from .llm.tokens import TokenMoments, TokenWorkload, make_tokens, read_arrival_trace
from .rates import RateFamily
from .registry import check_finite, first_error

TELEMETRY_MODES = ("delayed", "periodic", "instant", "none")

#: the largest seed: the output tables (summary, runs.parquet) store seeds as int64
MAX_SEED = 2**63 - 1
#: the most time steps a run may take of a fixed period (samples, telemetry reports, router ticks):
#: more would record or compute for longer than anyone waits, so it is refused at load
MAX_TICKS = 10**8
#: the most jobs a run may expect to see arrive (at the peak of its rate schedules): more would
#: take days and fill memory long before the horizon (``rate = 1e300`` passes every other check)
MAX_JOBS = 10**9


class CapacityWarning(UserWarning):
    """The offered load reaches the capacity the frontends can use."""


class _Table(BaseModel):
    # strict: a TOML string, boolean or float is never read as a number, flag or integer
    # (``rate = "2.0"``, ``horizon = true``, ``record_jobs = "no"``); an integer is a float
    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, strict=True, allow_inf_nan=False
    )


def _pair(value: Any) -> Any:
    """A TOML array ``[t, m]`` as the tuple it is stored as (strict mode takes no list for a tuple)."""
    return tuple(value) if isinstance(value, list) else value


Schedule = list[Annotated[tuple[float, float], BeforeValidator(_pair)]]


def _check_schedule(schedule: Schedule | None, what: str) -> Schedule | None:
    """A piecewise-constant multiplier: ``[[t0, m0], [t1, m1], ...]``, m >= 0, times increasing."""
    if schedule is None:
        return None
    if not schedule:
        raise ValueError("must list at least one [time, multiplier] pair")
    times = [t for t, _ in schedule]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise ValueError("times must be strictly increasing")
    if times[0] < 0:
        raise ValueError(f"times must be >= 0, got {times[0]}")
    if any(m < 0 or not math.isfinite(m) for _, m in schedule):
        raise ValueError(f"{what} multipliers must be finite and >= 0")
    return [(float(t), float(m)) for t, m in schedule]


class SimulationTable(_Table):
    horizon: float = Field(2000.0, gt=0, description="seconds of simulated time")
    warmup: float = Field(200.0, ge=0, description="statistics ignore jobs that arrive before this")
    seed: int = Field(1, ge=0, le=MAX_SEED, description="master seed; every subsystem spawns its own stream")
    job_scale: float = Field(1.0, gt=0, description="jobs are job_scale * X, X of mean size_mean")
    sample_interval: float = Field(1.0, gt=0, description="period of the time series")
    rate_schedule: Schedule | None = Field(
        None, description="[[time, multiplier], ...]: multiplies every frontend's rate from that time on"
    )
    record_jobs: bool = Field(True, description="keep one record per job (jobs.parquet)")
    drain: bool = Field(
        True,
        description="after the horizon, run on (later arrivals unmeasured) until every job that arrived in the "
        "window is served, so that the summary measures all of them",
    )
    drain_limit: float | None = Field(
        None, gt=0, description="longest drain in seconds after the horizon (default: a quarter of the horizon)"
    )
    max_jobs_in_system: int | None = Field(
        None,
        gt=0,
        description="stop the run (status job_limit) when more jobs than this are in the system at a sample",
    )
    mode: Literal["open", "saturated"] = Field(
        "open",
        description="open: Poisson frontends; saturated: every request of jobs.tokens waits at t = 0 "
        "in the one llm backend",
    )
    record_steps: Literal["all", "sampled"] | None = Field(
        None,
        description="llm backends' steps.parquet: a row per step, or per sample_interval with running sums "
        "(default: all in saturated mode, sampled in open mode)",
    )

    #: the default drain_limit, as a fraction of the horizon (a stable system's tail is far shorter)
    DRAIN_FRACTION: ClassVar[float] = 0.25

    @property
    def drain_seconds(self) -> float:
        """How long the run may go on after the horizon: 0 without a drain."""
        if not self.drain:
            return 0.0
        return self.drain_limit if self.drain_limit is not None else self.DRAIN_FRACTION * self.horizon

    @field_validator("rate_schedule")
    @classmethod
    def _schedule(cls, v):
        return _check_schedule(v, "rate")

    @model_validator(mode="after")
    def _warmup_before_horizon(self):
        if self.warmup >= self.horizon:
            raise ScenarioError("warmup", f"must be < horizon ({self.horizon}), got {self.warmup}")
        return self


class JobsTable(_Table):
    """Job sizes: ``size`` names a distribution; its shape parameters sit beside it."""

    model_config = ConfigDict(extra="allow", frozen=True)
    size: str = Field("exponential", description="size distribution: " + ", ".join(sorted(DISTRIBUTIONS)))
    size_mean: float | None = Field(None, gt=0, description="mean size X in work units (default 1)")
    tokens: dict[str, Any] | None = Field(
        None,
        description="prompt and output tokens of each request, e.g. { kind = 'azure_conversation' }; "
        "a job's size is then its output tokens",
    )
    count: int | None = Field(
        None, ge=1, description="saturated mode: how many requests (default: a pairs file's rows)"
    )

    @cached_property
    def distribution(self) -> Distribution:
        return make_distribution(self.size, dict(self.model_extra or {}), "jobs")

    @cached_property
    def token_workload(self) -> TokenWorkload | None:
        return None if self.tokens is None else make_tokens(self.tokens, "jobs.tokens")

    @cached_property
    def token_moments(self) -> TokenMoments | None:
        return None if self.token_workload is None else self.token_workload.moments()

    @property
    def mean(self) -> float:
        if self.token_moments is not None:
            return self.token_moments.mean_output  # a job's size is its output tokens
        if self.size_mean is not None:
            return self.size_mean
        values = (self.model_extra or {}).get("values")
        return float(np.mean(values)) if self.size == "empirical" and values else 1.0


class FrontendTable(_Table):
    name: str | None = None
    rate: float | None = Field(None, gt=0, description="work units per second (required unless a trace is given)")
    trace: str | None = Field(
        None,
        description="CSV of arrivals (time,prompt,output) replacing the Poisson stream; path relative to the scenario",
    )
    rate_schedule: Schedule | None = Field(
        None, description="[[time, multiplier], ...]: multiplies this frontend's rate (demand that follows the sun)"
    )

    @field_validator("rate_schedule")
    @classmethod
    def _schedule(cls, v):
        return _check_schedule(v, "rate")

    @cached_property
    def arrivals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The trace's (times, prompts, outputs), or None."""
        return None if self.trace is None else read_arrival_trace(self.trace, "trace")

    @property
    def demand(self) -> float:
        """lambda_i: the rate, or a trace's output tokens per second over its span."""
        if self.rate is not None:
            return self.rate
        times, _, outputs = self.arrivals  # type: ignore[misc]
        return float(outputs.sum()) / float(times[-1]) if len(times) and times[-1] > 0 else 0.0


class AntagonistTable(_Table):
    """Load lbsim does not route that slows a backend: a multiplier on its rate mu_j.

    Either a piecewise-constant ``schedule`` or a random switch between ``levels``
    (a continuous-time Markov chain holding each level an exponential time of
    mean ``hold``), drawn from the antagonist's own RNG stream.
    """

    schedule: Schedule | None = None
    levels: list[float] | None = None
    hold: float | None = Field(None, gt=0)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v):
        return _check_schedule(v, "capacity")

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        if v is not None and (len(v) < 2 or any(m < 0 or not math.isfinite(m) for m in v)):
            raise ValueError("must list at least two finite multipliers >= 0")
        return v

    @property
    def lasting_multiplier(self) -> float:
        """The multiplier the antagonist leaves for good: a schedule's last, or the largest of the levels."""
        if self.schedule is not None:
            return self.schedule[-1][1]
        return max(self.levels or [0.0])

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.schedule is None) == (self.levels is None):
            raise ValueError("give either 'schedule' or 'levels' (with 'hold')")
        if self.levels is not None and self.hold is None:
            raise ScenarioError("hold", "required with 'levels'")
        return self


class BackendTable(_Table):
    """One ``[[backends]]`` table: a name, a backend ``model`` and the model's own keys.

    The model's keys (``discipline``, ``service``, ``max_load`` for the default
    model ``rate``) are validated by the model's ``Params`` when the scenario is
    loaded (:mod:`lbsim.backends`); :attr:`params` holds the result.
    """

    model_config = ConfigDict(extra="allow", frozen=True, arbitrary_types_allowed=True)
    name: str | None = None
    model: str = Field(DEFAULT_MODEL, description="backend model (lbsim backends lists them)")
    antagonist: AntagonistTable | None = None
    _params: BaseModel = PrivateAttr()

    @model_validator(mode="after")
    def _model_params(self):
        cls = backend_class(self.model)
        self._params = cls.parse_params(dict(self.model_extra or {}), "")
        if self.antagonist is not None and not cls.supports_antagonist:
            raise ScenarioError("antagonist", f"backend model '{self.model}' does not support antagonists")
        return self

    @property
    def params(self) -> BaseModel:
        """The model's parameters, validated."""
        return self._params

    @property
    def model_class(self) -> type[BackendModel]:
        return backend_class(self.model)

    def rate_function(self, workload: Workload) -> RateFamily | None:
        """mu_j, the model's fluid rate function, or None."""
        return self.model_class.rate_function(self._params, workload)

    # The rate model's keys, read as attributes by scripts written before backend models.
    @property
    def service(self) -> RateFamily | None:
        return getattr(self._params, "service", None)

    @property
    def discipline(self) -> str | None:
        return getattr(self._params, "discipline", None)

    @property
    def max_load(self) -> float | None:
        return getattr(self._params, "max_load", None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name} if self.name is not None else {}
        if self.model != DEFAULT_MODEL:
            data["model"] = self.model
        data.update(self.model_class.params_table(self._params))
        if self.antagonist is not None:
            data["antagonist"] = self.antagonist.model_dump(mode="python", exclude_none=True)
        return data


class JitterTable(_Table):
    """Extra one-way delay per traversal: a distribution ``kind`` of mean ``mean``, its shape parameters beside it."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str | None = Field(None, description="distribution (lbsim distributions lists them)")
    mean: float | None = Field(None, gt=0, description="mean extra delay (s)")

    @model_validator(mode="after")
    def _required(self):
        if self.kind is None:
            raise ScenarioError("kind", "missing (e.g. 'exponential')")
        if self.mean is None:
            raise ScenarioError("mean", "required: the mean extra delay (s), must be > 0")
        return self

    @cached_property
    def distribution(self) -> Distribution:
        """The shape, drawn with mean :attr:`mean` (errors name ``network.jitter.<param>``)."""
        DISTRIBUTIONS.lookup(self.kind, "network.jitter.kind")
        return make_distribution(str(self.kind), dict(self.model_extra or {}), "network.jitter", field="kind")


def _zero_one(value: Any) -> Any:
    """A 0/1 matrix is a common way to write a compatibility graph: integers 0 and 1 read as false and true
    (and nothing else does: strict mode still refuses 2, 0.0 or "yes")."""
    return bool(value) if type(value) is int and value in (0, 1) else value


class NetworkTable(_Table):
    delay: list[list[float]] | float = Field(0.0, description="F x B one-way delays d_ij (s), or one number for all")
    connect: list[list[Annotated[bool, BeforeValidator(_zero_one)]]] | None = Field(
        None, description="F x B: may frontend i use backend j (default all; true/false or 1/0)"
    )
    telemetry: Literal["delayed", "periodic", "instant", "none"] = "delayed"
    period: float = Field(1.0, gt=0, description="periodic telemetry: report interval (s)")
    jitter: JitterTable | None = Field(
        None, description="extra one-way delay per traversal, e.g. {kind='exponential', mean=0.002}"
    )

    old_keys: ClassVar[tuple[str, ...]] = ("latency",)  # accepted, and offered in "did you mean"
    #: the key the delays were given under: ``delay``, or ``latency`` (its name before 0.2, still accepted)
    _delay_key: str = PrivateAttr("delay")

    @model_validator(mode="wrap")
    @classmethod
    def _old_delay_key(cls, data: Any, handler: Any) -> NetworkTable:
        key = "delay"
        if isinstance(data, Mapping) and "latency" in data:
            if "delay" in data:
                raise ScenarioError("latency", "give the delays once, as 'delay' ('latency' is its old name)")
            data = {("delay" if k == "latency" else k): v for k, v in data.items()}
            key = "latency"
        table = handler(data)
        table._delay_key = key
        return table

    @property
    def delay_key(self) -> str:
        """``network.delay`` or ``network.latency``, as the scenario spelt it (for error messages)."""
        return f"network.{self._delay_key}"

    @property
    def latency(self) -> list[list[float]] | float:
        """The one-way delays under their old name (``delay``)."""
        return self.delay

    @cached_property
    def jitter_distribution(self) -> tuple[Distribution, float] | None:
        if self.jitter is None:
            return None
        return self.jitter.distribution, float(self.jitter.mean)  # type: ignore[arg-type]


class RouterTable(_Table):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "jsq"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Scenario(_Table):
    """A validated scenario. Build it with :func:`load_scenario` or :meth:`from_dict`."""

    simulation: SimulationTable = SimulationTable()
    jobs: JobsTable = JobsTable()
    frontends: list[FrontendTable] = Field(default_factory=list)
    backends: list[BackendTable] = Field(min_length=1)
    network: NetworkTable = NetworkTable()
    router: RouterTable = RouterTable()
    name: str = "scenario"
    description: str = ""

    # -- derived arrays the engine, the optimum and the fluid model share --------
    @property
    def num_frontends(self) -> int:
        return len(self.frontends)

    @property
    def num_backends(self) -> int:
        return len(self.backends)

    @cached_property
    def demand(self) -> np.ndarray:
        """lambda_i: work units per second offered at each frontend."""
        return np.array([f.demand for f in self.frontends], dtype=float)

    @cached_property
    def delay(self) -> np.ndarray:
        """d_ij: one-way delay (s), shape (F, B)."""
        lat = self.network.delay
        shape = (self.num_frontends, self.num_backends)
        return np.full(shape, float(lat)) if isinstance(lat, (int, float)) else np.array(lat, dtype=float)

    @property
    def latency(self) -> np.ndarray:
        """The one-way delays d_ij under their old name (:attr:`delay`)."""
        return self.delay

    @cached_property
    def connect(self) -> np.ndarray:
        """Which backends each frontend may use, shape (F, B) bool."""
        shape = (self.num_frontends, self.num_backends)
        c = self.network.connect
        return np.ones(shape, dtype=bool) if c is None else np.array(c, dtype=bool)

    @cached_property
    def service_rates(self) -> list[RateFamily | None]:
        """mu_j of every backend (None for a backend model with no fluid rate function)."""
        return [b.rate_function(self.workload) for b in self.backends]

    def rate_functions(self, needed_by: str) -> list[RateFamily]:
        """mu_j of every backend, for computations that need them all (raises naming the backend that has none)."""
        for j, (b, mu) in enumerate(zip(self.backends, self.service_rates)):
            if mu is None:
                raise ScenarioError(
                    f"backends[{j}].model",
                    f"backend model '{b.model}' has no fluid rate function mu(x): {needed_by} needs one",
                )
        return list(self.service_rates)  # type: ignore[arg-type]

    @cached_property
    def load_limits(self) -> np.ndarray:
        """The largest load each backend's fluid rate counts (inf: no limit)."""
        return np.array([b.model_class.load_limit(b.params, self.workload) for b in self.backends], dtype=float)

    def supremum(self, j: int) -> float:
        """The most backend j can serve: sup mu_j, or mu_j at its load limit (``max_load``, an engine's
        G * B requests) when it has one; inf for a model without a rate function."""
        mu = self.service_rates[j]
        if mu is None:
            return math.inf
        limit = float(self.load_limits[j])
        return float(mu.value(limit)) if math.isfinite(limit) else mu.supremum

    @cached_property
    def usable(self) -> np.ndarray:
        """Which backends keep a capacity > 0 for good, shape (B,) bool: sup mu_j > 0, and no
        antagonist that leaves the rate multiplied by 0 (a frontend needs one such backend)."""
        return np.array(
            [
                self.supremum(j) > 0 and (b.antagonist is None or b.antagonist.lasting_multiplier > 0)
                for j, b in enumerate(self.backends)
            ]
        )

    @cached_property
    def workload(self) -> Workload:
        """The jobs as the backend models' rate functions see them (sbar, and token means with jobs.tokens)."""
        m = self.jobs.token_moments
        if m is None:
            return Workload(self.mean_size)
        return Workload(self.mean_size, m.mean_prompt, m.mean_output, m.mean_length)

    @property
    def mean_size(self) -> float:
        """sbar = job_scale * size_mean: the mean job size."""
        return self.simulation.job_scale * self.jobs.mean

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        # One rule for every number of a scenario, whatever table it sits in (a rate
        # family's, a router's, a distribution's): finite, or named and refused here.
        check_finite(data, "")
        return data

    @model_validator(mode="after")
    def _cross_checks(self):
        self._check_mode()
        F, B = self.num_frontends, self.num_backends
        lat, key = self.network.delay, self.network.delay_key
        if not isinstance(lat, (int, float)):
            _check_matrix(lat, F, B, key)
            bad = [(i, j) for i, row in enumerate(lat) for j, d in enumerate(row) if not (d >= 0 and math.isfinite(d))]
            if bad:
                i, j = bad[0]
                raise ScenarioError(f"{key}[{i}][{j}]", f"must be finite and >= 0, got {lat[i][j]}")
        elif not (lat >= 0 and math.isfinite(lat)):
            raise ScenarioError(key, f"must be finite and >= 0, got {lat}")
        if self.network.connect is not None:
            _check_matrix(self.network.connect, F, B, "network.connect")
        connect, usable = self.connect, self.usable
        for i in range(F):
            if not (connect[i] & usable).any():
                raise ScenarioError(f"network.connect[{i}]", f"frontend {self.frontend_label(i)} has no usable backend")
        # Read now, so that bad size, token and jitter parameters are load errors, not mid-run ones.
        _ = self.jobs.distribution, self.jobs.token_moments, self.network.jitter_distribution
        for j, b in enumerate(self.backends):
            b.model_class.check_scenario(b.params, self, f"backends[{j}]")
        from .routers.base import router_class, validate_params

        params = validate_params(self.router.name, self.router.params)
        router = router_class(self.router.name)
        router.check_scenario(params, self)
        self._check_work(params)
        if router.uses_rates:
            self.rate_functions(f"router '{self.router.name}'")
        for name in ("frontends", "backends"):
            names = [x.name for x in getattr(self, name) if x.name is not None]
            if len(names) != len(set(names)):
                dup = next(n for n in names if names.count(n) > 1)
                raise ScenarioError(name, f"duplicate name '{dup}'")
        return self

    def _check_work(self, router_params: BaseModel) -> None:
        """Refuse a run that could never finish or never produce a result.

        A fixed period (the sampling interval, periodic telemetry's period, a
        router's tick ``*interval``) so short that the horizon holds more than
        :data:`MAX_TICKS` of them; and, in open mode, a frontend whose nearest
        usable backend is a round trip ``2 d_ij`` at least the statistics window
        ``horizon - warmup`` away, so that no job it sends could complete in it.
        """
        sim = self.simulation
        periods = [("simulation.sample_interval", sim.sample_interval)]
        if self.network.telemetry == "periodic":
            periods.append(("network.period", self.network.period))
        for name, value in router_params:
            if name.endswith("interval") and isinstance(value, float | int) and value > 0:
                periods.append((f"router.{name}", float(value)))
        for key, period in periods:
            if sim.horizon / period > MAX_TICKS:
                raise ScenarioError(
                    key,
                    f"{sim.horizon:g} s of horizon / {period:g} s = {sim.horizon / period:.3g} steps, more than "
                    f"{MAX_TICKS:.0e}: the run would never finish (lengthen it, or shorten simulation.horizon)",
                )
        if sim.mode != "open":
            return
        self._check_arrivals()
        window = sim.horizon + sim.drain_seconds - sim.warmup  # a job of the window may finish in the drain
        for i in range(self.num_frontends):
            reachable = np.flatnonzero(self.connect[i] & self.usable)
            j = int(reachable[np.argmin(self.delay[i, reachable])])
            if 2 * self.delay[i, j] >= window:
                key = self.network.delay_key
                if not isinstance(self.network.delay, (int, float)):
                    key += f"[{i}][{j}]"
                raise ScenarioError(
                    key,
                    f"frontend {self.frontend_label(i)}'s nearest backend is a round trip of "
                    f"{2 * self.delay[i, j]:g} s away, not shorter than horizon + drain - warmup = {window:g} s: "
                    f"no job would complete, got {self.delay[i, j]:g}",
                )

    def _check_arrivals(self) -> None:
        """Refuse more than :data:`MAX_JOBS` expected arrivals: ``sum_i lambda_i m_i / sbar * horizon``,
        with ``m_i`` the peak multiplier of frontend i's schedules (the scenario's times its own)."""
        if not self.mean_size > 0:
            return
        peak = max([1.0] + [m for _, m in self.simulation.rate_schedule or []])
        jobs_per_work = self.simulation.horizon / self.mean_size
        per_frontend = [
            f.demand * peak * max([1.0] + [m for _, m in f.rate_schedule or []]) * jobs_per_work for f in self.frontends
        ]
        expected = math.fsum(per_frontend)
        if expected > MAX_JOBS:
            i = int(np.argmax(per_frontend))
            key = f"frontends[{i}].rate" if self.frontends[i].rate is not None else "simulation.horizon"
            raise ScenarioError(
                key,
                f"about {expected:.3g} jobs would arrive over the horizon (rate / mean size {self.mean_size:g} * "
                f"horizon {self.simulation.horizon:g}), more than {MAX_JOBS:.0e}: the run would never finish "
                f"(lower the rate or the horizon, or raise simulation.job_scale), got {self.frontends[i].demand:g}",
            )

    def _check_mode(self) -> None:
        """What each mode needs: frontends (open), one llm backend and a finite workload (saturated)."""
        if self.simulation.mode == "saturated":
            if self.num_backends != 1 or self.backends[0].model != "llm":
                raise ScenarioError("simulation.mode", "saturated mode needs exactly one backend, of model 'llm'")
            if self.jobs.tokens is None:
                raise ScenarioError("jobs.tokens", "required in saturated mode")
            if self.jobs.count is None and self.jobs.tokens.get("kind") != "pairs":
                raise ScenarioError("jobs.count", "required in saturated mode (how many requests wait at t = 0)")
            return
        if not self.frontends:
            raise ScenarioError("frontends", "at least one frontend is required (in open mode)")
        for i, f in enumerate(self.frontends):
            if (f.rate is None) == (f.trace is None):
                raise ScenarioError(f"frontends[{i}].rate", "give either 'rate' or 'trace'")
            if f.trace is not None:
                if self.jobs.tokens is None:
                    raise ScenarioError(f"frontends[{i}].trace", "a trace of tokens needs jobs.tokens")
                _ = f.arrivals  # read and checked now, not mid-run

    def frontend_label(self, i: int) -> str:
        return self.frontends[i].name or str(i)

    def backend_label(self, j: int) -> str:
        return self.backends[j].name or str(j)

    def capacity_warning(self) -> str | None:
        """A warning when the offered load reaches the capacity the frontends can use."""
        if self.simulation.mode == "saturated":
            return None  # no arrivals: the work is all there at t = 0
        reachable = self.connect.any(axis=0)
        peak = max([1.0] + [m for _, m in self.simulation.rate_schedule or []])
        capacity = math.fsum(self.supremum(int(j)) for j in np.flatnonzero(reachable))
        offered = float(self.demand.sum()) * peak
        if offered >= capacity:
            return (
                f"total arrival rate {offered:g} reaches the usable capacity {capacity:g}: "
                "queues will grow without bound"
            )
        return None

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], overrides: Iterable[str] = ()) -> Scenario:
        if not isinstance(data, Mapping):
            raise ScenarioError("data", f"must be a table (a dict) of scenario keys, got {type(data).__name__}")
        table: dict[str, Any] = copy.deepcopy(dict(data))
        for item in _overrides(overrides):
            apply_override(table, item)
        try:
            return cls.model_validate(table)
        except ValidationError as exc:
            raise _first_error(exc, table) from None

    def replace(self, **sections: Any) -> Scenario:
        """A copy with some keys changed, given as dotted paths: ``replace(**{"simulation.seed": 3})``."""
        data = self.to_dict()
        for path, value in sections.items():
            _set_path(data, path.split("."), value)
        return Scenario.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as plain TOML-able data (what :meth:`from_dict` accepts)."""
        data = self.model_dump(mode="python", exclude_none=True)
        data["backends"] = [b.to_dict() for b in self.backends]
        if self.network.delay_key == "network.latency":  # keep the spelling it was given in
            data["network"]["latency"] = data["network"].pop("delay")
        return data


def _overrides(overrides: Iterable[str]) -> list[str]:
    """``key.path=value`` strings; one string alone would be read as a list of one-character overrides."""
    if isinstance(overrides, (str, bytes)) or not all(isinstance(item, str) for item in overrides):
        raise ScenarioError("overrides", f"must be a list of 'key.path=value' strings, got {overrides!r}")
    return list(overrides)


def _check_matrix(m: list, F: int, B: int, key: str) -> None:
    if len(m) != F:
        raise ScenarioError(key, f"must have one row per frontend ({F}), got {len(m)} rows")
    for i, row in enumerate(m):
        if len(row) != B:
            raise ScenarioError(f"{key}[{i}]", f"must have one entry per backend ({B}), got {len(row)}")


def _format_loc(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += ("." if key else "") + str(part)
    return key


def _first_error(exc: ValidationError, data: Mapping[str, Any]) -> ScenarioError:
    """Turn pydantic's report into one line naming the key (and the closest valid key)."""
    err = first_error(exc)
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    key = _format_loc(loc)
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ScenarioError):
        # A validator names its key relative to its table, sometimes starting with
        # the field it validates (make_rate's "service.c"): join without repeating it.
        inner, last = ctx_error.key, str(loc[-1]) if loc else ""
        if key and (inner == last or inner.startswith(last + ".")):
            return ScenarioError(key + inner[len(last) :], ctx_error.message)
        return ScenarioError(f"{key}.{inner}" if key and inner else key or inner, ctx_error.message)
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = [*parent.model_fields.keys(), *getattr(parent, "old_keys", ())] if parent else []
        return ScenarioError(key, unknown("key", str(loc[-1]), valid))
    if err["type"] == "missing":
        return ScenarioError(key, "required key is missing")
    value = err.get("input")
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = msg.replace("Input should be", "must be").replace("greater than", ">").replace(" or equal to ", "= ")
    msg = msg.replace("> =", ">=").replace("less than", "<")
    if not isinstance(value, (dict, list)) and err["type"] not in ("value_error",):
        msg += f", got {value!r}"
    return ScenarioError(key, msg)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that validates the table at ``loc`` (for key suggestions)."""
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args] + [a for x in args for a in getattr(x, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


# -- loading and overrides -------------------------------------------------------
def parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (number, bool, string, array, inline table) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(data: dict, parts: list[str], value: Any) -> None:
    node: Any = data
    walked = []
    for part in parts[:-1]:
        walked.append(part)
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise ScenarioError(".".join(walked), f"no element {part} (the list has {len(node)})") from None
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ScenarioError(".".join(walked), "is a value, not a table")
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ScenarioError(".".join(parts), f"no element {last} (the list has {len(node)})") from None
    else:
        node[last] = value


def apply_override(data: dict, item: str) -> None:
    """Apply ``key.path=value`` (list elements by index: ``frontends.0.rate=2``)."""
    if "=" not in item:
        raise ScenarioError(item, "an override must look like key.path=value")
    path, text = item.split("=", 1)
    parts = [p for p in path.strip().replace("[", ".").replace("]", "").split(".") if p]
    if not parts:
        raise ScenarioError(item, "empty key")
    _set_path(data, parts, parse_value(text.strip()))


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables; anything that keeps it from being read is one :class:`ScenarioError` naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ScenarioError(str(path), "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(str(path), "is a directory, not a TOML file") from None
    except PermissionError:
        raise ScenarioError(str(path), "permission denied") from None
    except OSError as exc:
        raise ScenarioError(str(path), f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), f"not a UTF-8 text file (byte {exc.start}): not TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ScenarioError(str(path), "not valid TOML: arrays or tables nested too deep") from None


def _resolve_files(data: dict[str, Any], folder: Path) -> None:
    """Make the files a scenario names (token pairs, arrival traces) absolute: they are relative to its folder."""
    tokens = (data.get("jobs") or {}).get("tokens")
    if isinstance(tokens, dict) and isinstance(tokens.get("file"), str):
        tokens["file"] = str(folder / tokens["file"])
    for frontend in data.get("frontends") or []:
        if isinstance(frontend, dict) and isinstance(frontend.get("trace"), str):
            frontend["trace"] = str(folder / frontend["trace"])


def load_scenario(path: str | Path, overrides: Iterable[str] = (), *, warn: bool = True) -> Scenario:
    """Load and validate a scenario file; ``overrides`` are ``key.path=value`` strings."""
    data = read_toml(path)
    overrides = _overrides(overrides)
    data.setdefault("name", Path(path).stem)
    for item in overrides:
        apply_override(data, item)
    _resolve_files(data, Path(path).resolve().parent)
    scenario = Scenario.from_dict(data)
    if warn and (message := scenario.capacity_warning()):
        warnings.warn(message, CapacityWarning, stacklevel=2)
    return scenario
