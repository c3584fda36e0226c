"""Checks of the Python API's arguments, the API's own edge.

A scenario file is checked when it is loaded (:mod:`lbsim.scenario`); a
function called from Python checks its own arguments the same way, before
anything runs, and raises :class:`~lbsim.errors.ScenarioError` naming the
argument: ``seed: must be an integer >= 0, got 1.7``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ScenarioError
from .scenario import MAX_SEED, Scenario


def check_scenario(value: Any, key: str = "scenario") -> Scenario:
    """A :class:`Scenario`; a dict or a path is named with the function that turns it into one."""
    if isinstance(value, Scenario):
        return value
    hint = ""
    if isinstance(value, Mapping):
        hint = " (lbsim.Scenario.from_dict(data) builds one from a dict)"
    elif isinstance(value, str) or hasattr(value, "__fspath__"):
        hint = " (lbsim.load_scenario(path) reads a file)"
    raise ScenarioError(key, f"must be a Scenario{hint}, got {_shown(value)}")


def is_seed(value: Any) -> bool:
    """An integer the output tables can store: 0 <= seed <= 2**63 - 1 (int64), not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def check_seed(value: Any, key: str = "seed") -> int | None:
    """None (the scenario's seed) or a seed (:func:`is_seed`)."""
    if value is None:
        return None
    if hasattr(value, "__index__") and not isinstance(value, bool):  # numpy integers are seeds too
        value = value.__index__()
    if not is_seed(value):
        raise ScenarioError(key, f"must be an integer from 0 to 2**63 - 1, got {_shown(value)}")
    return int(value)


def check_list(value: Any, key: str) -> list[Any]:
    """A list (or tuple) of items, not a string, which would otherwise be read as a list of characters."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ScenarioError(key, f"must be a list, got {_shown(value)}")
    return list(value)


def check_positive(value: Any, key: str, *, optional: bool = True) -> float | None:
    """None (when ``optional``) or a finite number > 0."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ScenarioError(key, f"must be a finite number > 0, got {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"
