"""Fixtures shared by the test modules.

Plain helper functions (scenario builders, batch-means statistics, queueing
formulas, a recording router) are in ``helpers.py``, imported as
``from helpers import ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Spy

from lbsim.routers import ROUTERS, register


@pytest.fixture
def spy() -> Iterator[str]:
    """The recording router :class:`helpers.Spy`, registered for one test."""
    register(Spy)
    try:
        yield Spy.name
    finally:
        ROUTERS.pop(Spy.name, None)
