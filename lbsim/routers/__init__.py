"""Routers, one module per router with its fluid twin beside it; importing this package registers them all.

Every module of the package is imported (:func:`discover`), so a router in a
new file here appears in ``lbsim routers``, in scenarios and in ``lbsim
fluid`` (if it declares a fluid twin) with no list to edit.
"""

import importlib
import pkgutil

from ..view import View
from .base import (
    ROUTERS,
    ProbeInbox,
    ProbeReply,
    Router,
    RouterContext,
    SplitRouter,
    make_router,
    parameter_table,
    register,
    validate_params,
)
from .fluid_base import FLUID_ROUTERS, FluidRouter, TieRouter, fluid_twin


def discover() -> list[str]:
    """Import every module of this package (registering its routers); return their names, sorted.

    Idempotent: a module already imported is not imported again.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


discover()

__all__ = [
    "FLUID_ROUTERS",
    "ROUTERS",
    "FluidRouter",
    "ProbeInbox",
    "ProbeReply",
    "Router",
    "RouterContext",
    "SplitRouter",
    "TieRouter",
    "View",
    "discover",
    "fluid_twin",
    "make_router",
    "parameter_table",
    "register",
    "validate_params",
]
