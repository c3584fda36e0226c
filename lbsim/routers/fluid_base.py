"""Fluid twins: a router's limit as ``job_scale -> 0``, a split ``(F, B)`` driven by delayed loads.

``lbsim fluid`` (:mod:`lbsim.fluid`) integrates the fluid model of a
scenario (docs/model.md section 2); what each router does in that model is
its *fluid twin*, one small class beside the router in the router's module,
attached with :func:`fluid_twin` (``GMSR.fluid is FluidGMSR``).
:data:`FLUID_ROUTERS` maps every router name that has a twin to it.

* static splits implement :meth:`FluidRouter.initial_split` only (``random``,
  ``round_robin``, ``nearest``, ``weighted``);
* argmin rules are :class:`TieRouter` s (``gmsr``, ``least_latency``,
  ``least_load``, ``jsq``);
* ticking routers implement :meth:`FluidRouter.tick` (``dgdlb``).

**Ties (differential inclusions).** An argmin router's fluid limit is a
differential inclusion: flow goes to the cheapest backends, and among tied
ones it is split so that they stay tied (a sliding mode, Filippov). We
regularise the argmin by water-filling within a band: with costs ``c_ij``,

    p_i = Proj_simplex(-(c_i - min_j c_ij) / eps),   eps = band * c_ref,

i.e. ``p_ij = max(0, (nu_i - c_ij) / eps)`` with ``nu_i`` set so the row sums
to 1 ("sparsemax", Martins and Astudillo, ICML 2016, the same Euclidean
projection as DGD-LB's, :mod:`lbsim.simplex`). Backends more than ``eps``
above the cheapest get nothing; exact ties get equal shares; near-ties share
by how close they are, which is what holds them together. ``c_ref`` is the
median cost over the usable edges at a reference state (every backend at the
load its capacity-proportional share of the demand gives it), so ``band`` is
dimensionless: "within a relative band of the best marginal rate" for GMSR.
A rest point satisfies ``c_ij + eps p_ij = nu_i`` on the used edges (and
``c_ij >= nu_i`` on the others) instead of equal costs: the optimality
conditions with an extra ``(eps/2) sum_ij lambda_i p_ij^2``, so it is
``O(band)`` away from the inclusion's rest point, and ``band -> 0`` recovers
the inclusion (``tests/test_fluid.py`` measures both, and the linear
convergence of whole trajectories). The price is stiffness: with an
undelayed loop the split reacts to its own effect at rate ``R ~ Lambda *
|dc/dx| / eps``, so the fluid model's default time step keeps ``R dt <= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import numpy as np

from ..simplex import SORT_BELOW, project_rows, support_bound
from .base import ROUTERS, Router, RouterContext, make_router

__all__ = ["BAND", "FLUID_ROUTERS", "FluidContext", "FluidRouter", "TieRouter", "fluid_twin", "tie_split"]

#: default tolerance band of the argmin routers (relative to the typical cost)
BAND = 1e-3


class FluidRates(Protocol):
    """``mu_j`` of every backend at once, vectorised over the last axis (backends)."""

    def value(self, x: np.ndarray) -> np.ndarray: ...

    def derivative(self, x: np.ndarray) -> np.ndarray: ...


class FluidContext(Protocol):
    """What a fluid twin may read of the scenario: its arrays, validated once (``lbsim.fluid.model.FluidModel``)."""

    @property
    def scenario(self) -> Any:
        """The Scenario."""
        ...

    @property
    def num_frontends(self) -> int:
        """F."""
        ...

    @property
    def num_backends(self) -> int:
        """B."""
        ...

    @property
    def demand(self) -> np.ndarray:
        """(F,) lambda_i."""
        ...

    @property
    def connect(self) -> np.ndarray:
        """(F, B) bool: may frontend i use backend j."""
        ...

    @property
    def allowed(self) -> np.ndarray | None:
        """The connect mask, or None when every edge is usable (no masking needed)."""
        ...

    @property
    def delay(self) -> np.ndarray:
        """(F, B) one-way delays d_ij."""
        ...

    @property
    def round_trip(self) -> np.ndarray:
        """(F, B) 2 d_ij."""
        ...

    @property
    def rates(self) -> FluidRates:
        """mu_j of every backend, vectorised."""
        ...

    @property
    def band(self) -> float:
        """The argmin routers' tolerance band (relative)."""
        ...

    @property
    def x0(self) -> np.ndarray:
        """(B,) initial loads."""
        ...

    @property
    def reference_load(self) -> np.ndarray:
        """(B,) loads under a capacity-proportional split."""
        ...

    @property
    def cost_at_zero(self) -> np.ndarray:
        """(B,) 1/mu_j'(0), the limit of x/mu_j(x) at 0."""
        ...


class FluidRouter:
    """A router's fluid analogue: a split ``(F, B)`` as a function of time and what frontends observe.

    What a frontend observes of backend ``j`` is a *signal* ``h_j(x_j)`` of its
    load (the load itself, or a marginal cost), read with the delay of the
    telemetry: ``h_j(x_j(t - d_ij))``. The integrator evaluates ``h`` once per
    stored state (B numbers) and interpolates the delayed signal, which is
    ``h`` of the interpolated load to second order in ``dt`` and costs
    ``F * B`` times less than evaluating ``h`` on every edge.

    * static routers implement :meth:`initial_split` only (the default: uniform over N(i));
    * ``continuous`` routers implement :meth:`split`, called at every stage
      with the observed signal (F, B);
    * ``tick_interval`` routers implement :meth:`tick`, called at
      ``k * tick_interval`` (k >= 1) as the discrete router's ``tick`` is.

    ``params`` is the discrete router's validated ``Params`` (the same
    defaults and checks); ``model`` holds the scenario's arrays.
    """

    continuous: bool = False
    tick_interval: float | None = None

    def __init__(self, name: str, params: Any, model: FluidContext):
        self.name = name
        self.params = params
        self.model = model

    @property
    def observes(self) -> bool:
        return self.continuous or self.tick_interval is not None

    def signal(self, x: np.ndarray) -> np.ndarray:
        """``h_j(x[..., j])``: what the router reads of a backend at load ``x`` (default: the load)."""
        return x

    def initial_split(self) -> np.ndarray:
        return self.model.connect / self.model.connect.sum(axis=1, keepdims=True)

    def split(self, t: float, observed: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def tick(self, t: float, observed: np.ndarray, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def stiffness(self) -> float:
        """The rate (1/s) at which the split reacts to its own effect without delay (0: it does not)."""
        return 0.0

    def discrete_router(self) -> Router:
        """The simulator's router itself, for the splits it computes once (weighted, dgdlb's init)."""
        model = self.model
        ctx = RouterContext(
            num_frontends=model.num_frontends,
            num_backends=model.num_backends,
            delay=model.delay,
            connect=model.connect,
            rates=model.scenario.service_rates,
            mean_size=model.scenario.mean_size,
            demand=model.scenario.demand,
            rng=np.random.default_rng(0),
            now=lambda: 0.0,
            probe=lambda *args: None,
            scenario=model.scenario,
        )
        return make_router(self.name, self.params.model_dump(), ctx)


def tie_split(
    cost: np.ndarray, allowed: np.ndarray | None, eps: float, support: np.ndarray | None = None
) -> np.ndarray:
    """The band-regularised argmin of each row of ``cost`` over ``allowed``: ``Proj_simplex(-(c - min c)/eps)``.

    ``allowed=None`` allows every entry. ``eps = 0`` is the plain argmin with
    exact ties shared equally (the limit of the band). ``support`` (optional)
    is the previous split's support, a warm start for the projection.
    """
    c = cost if allowed is None else np.where(allowed, cost, np.inf)
    best = c.min(axis=1, keepdims=True)
    if eps <= 0.0:
        tied = c <= best
        return tied / tied.sum(axis=1, keepdims=True)
    v = (best - c) / eps  # 0 at the best, -inf where not allowed
    lower = support_bound(v, support) if support is not None and v.shape[1] > SORT_BELOW else None
    return project_rows(v, lower)[0]


class TieRouter(FluidRouter):
    """``argmin_j offset_ij + h_j(xhat_ij)``, regularised by the tolerance band (module docstring)."""

    continuous = True
    #: add the round trip 2 d_ij to the cost
    network_aware: bool = False

    def __init__(self, name: str, params: Any, model: FluidContext):
        super().__init__(name, params, model)
        self.offset = model.round_trip if self.network_aware else None
        self.band = model.band
        costs = self.cost(np.broadcast_to(model.reference_load, model.connect.shape))[model.connect]
        costs = costs[np.isfinite(costs) & (costs > 0)]
        self.cost_scale = float(np.median(costs)) if len(costs) else 1.0
        self.eps = self.band * self.cost_scale
        self._support: np.ndarray | None = None

    def cost(self, xhat: np.ndarray) -> np.ndarray:
        """``offset_ij + h_j(xhat_ij)`` on loads (F, B)."""
        h = self.signal(xhat)
        return h + self.offset if self.offset is not None else h

    def initial_split(self) -> np.ndarray:
        return self.split(0.0, np.broadcast_to(self.signal(self.model.x0), self.model.connect.shape))

    def split(self, t: float, observed: np.ndarray) -> np.ndarray:
        cost = observed + self.offset if self.offset is not None else observed
        p = tie_split(cost, self.model.allowed, self.eps, self._support)
        self._support = p > 0.0
        return p

    def stiffness(self) -> float:
        """``Lambda * max |dc/dx| / eps`` over loads between 0 and twice the reference."""
        if self.eps <= 0.0:
            return math.inf
        model = self.model
        slopes = []
        for s in (0.0, 0.5, 1.0, 2.0):
            x = s * model.reference_load
            h = 1e-6 * np.maximum(model.reference_load, 1e-9)
            slope = np.abs(self.signal(x + h) - self.signal(x)) / h
            slopes.append(np.where(np.isfinite(slope), slope, 0.0).max())
        return float(model.demand.sum() * max(slopes) / self.eps)


T = TypeVar("T", bound=type[FluidRouter])


def fluid_twin(router: type[Router]) -> Callable[[T], T]:
    """Class decorator: ``cls`` is the fluid twin of ``router`` (sets ``router.fluid``).

    A router has at most one twin: declaring a second is an error. The twin is
    not inherited by subclasses of ``router`` (a subclass routes differently
    and declares its own).
    """

    def attach(cls: T) -> T:
        known = router.__dict__.get("fluid")
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"router '{router.name}' already has a fluid twin, {known.__module__}.{known.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} cannot be a second one"
            )
        router.fluid = cls
        return cls

    return attach


class FluidTwins(Mapping[str, type[FluidRouter]]):
    """Router name -> fluid twin, for every registered router that has one (a live view of ``ROUTERS``)."""

    def _twins(self) -> dict[str, type[FluidRouter]]:
        from . import ROUTERS as _registry  # noqa: F401  (importing the package registers every router)

        return {name: twin for name, cls in ROUTERS.items() if (twin := cls.__dict__.get("fluid")) is not None}

    def __getitem__(self, name: str) -> type[FluidRouter]:
        return self._twins()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._twins()))

    def __len__(self) -> int:
        return len(self._twins())

    def __repr__(self) -> str:
        return f"FLUID_ROUTERS({', '.join(self)})"


#: router name -> its fluid twin (:class:`FluidTwins`)
FLUID_ROUTERS: Mapping[str, type[FluidRouter]] = FluidTwins()
