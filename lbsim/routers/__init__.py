"""Routers, one module per family; importing this package registers them all."""

from . import baselines, basic, dgdlb, gmsr, prequal, weighted  # noqa: F401  (registration side effects)
from .base import ROUTERS, ProbeReply, Router, RouterContext, make_router, parameter_table, register, validate_params

__all__ = [
    "ROUTERS",
    "ProbeReply",
    "Router",
    "RouterContext",
    "make_router",
    "parameter_table",
    "register",
    "validate_params",
]
