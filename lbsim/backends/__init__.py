"""Backend models, one module each; importing this package registers every model in it.

Modules are found with :mod:`pkgutil`, so a model in a new file of this
package is registered (and listed by ``lbsim backends``) without an import list.
"""

import importlib
import pkgutil

from .base import (
    BACKENDS,
    DEFAULT_MODEL,
    BackendContext,
    BackendModel,
    BackendParams,
    EngineState,
    FleetOutputs,
    Workload,
    backend_class,
    parameter_table,
    register_backend,
    validate_params,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "BackendContext",
    "BackendModel",
    "BackendParams",
    "EngineState",
    "FleetOutputs",
    "Workload",
    "backend_class",
    "parameter_table",
    "register_backend",
    "validate_params",
]
