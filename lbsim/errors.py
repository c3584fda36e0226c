"""The one error type users see for bad input.

Every check on user input (scenario files, ``--set`` overrides, router
parameters, sweep files) raises :class:`ScenarioError` naming the offending
key, so the CLI can print one line and exit with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ScenarioError(ValueError):
    """Invalid user input. ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, str]]:
        # An error raised in a worker process must cross back whole (the default pickles only str(self)).
        return (type(self), (self.key, self.message))


def suggest(name: str, valid: Iterable[str]) -> str:
    """A ``did you mean`` hint for an unknown name, or an empty string."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(valid)})" if valid else ""


def unknown(kind: str, name: str, valid: Iterable[str]) -> str:
    """The message for an unknown key, router, family...: names the closest valid one."""
    return f"unknown {kind} '{name}'{suggest(name, valid)}"
