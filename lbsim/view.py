"""The view contract: backend state as a frontend may see it.

Routers read backend state only through a view, so a router can never see
fresher state than its telemetry mode allows (docs/model.md, invariant 5).
The engine supplies one subclass per telemetry mode
(:mod:`lbsim.engine.telemetry`); a test can supply its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .backends.base import EngineState


class View:
    """Backend state as frontend i may see it. Subclasses define :meth:`jobs`.

    Routers that scan every usable backend read :meth:`jobs_array` when
    :attr:`vectorised` is set: one array of every backend's observed count,
    which the engine's views keep up to date where it changes (a cost per job
    that follows the changes, not the number of backends).
    """

    #: how far back backends must keep their history for this view (None: no history)
    history_window: float | None = None
    #: whether :meth:`jobs_array` is kept incrementally (worth reading instead of :meth:`jobs_of`)
    vectorised: bool = False

    def __init__(self, backends, latency: np.ndarray, mean_size: float, env):
        self.backends = backends
        self.delay = latency.tolist()  # nested lists: indexing numpy per job is slow
        self.mean_size = mean_size
        self.env = env

    def jobs(self, frontend: int, backend: int) -> int:
        """n_hat_ij: the job count of ``backend`` as ``frontend`` sees it now."""
        raise NotImplementedError

    def jobs_of(self, frontend: int, backends: Sequence[int]) -> list[int]:
        jobs = self.jobs
        return [jobs(frontend, j) for j in backends]

    def jobs_array(self, frontend: int) -> np.ndarray:
        """n_hat_i: every backend's job count as ``frontend`` sees it now, shape (B,), integers.

        Entries of backends ``frontend`` may not use are unspecified. The array
        may be the view's own: read it before the next call, never write it.
        """
        return np.array(self.jobs_of(frontend, range(len(self.backends))), dtype=np.int64)

    def touch(self, backend: int) -> None:
        """The engine changed ``backend`` from outside its own events (an arrival, an antagonist), now."""

    def load(self, frontend: int, backend: int) -> float:
        """x_hat_ij = n_hat_ij * sbar."""
        return self.jobs(frontend, backend) * self.mean_size

    def loads_of(self, frontend: int, backends: Sequence[int]) -> list[float]:
        s = self.mean_size
        return [n * s for n in self.jobs_of(frontend, backends)]

    def loads(self, frontend: int) -> np.ndarray:
        """x_hat_i: every backend's observed load, shape (B,)."""
        return np.array(self.jobs_of(frontend, range(len(self.backends))), dtype=float) * self.mean_size

    def engine_state(self, frontend: int, backend: int) -> EngineState:
        """What an LLM-aware router may know of ``backend`` beyond its job count: resident plus waiting
        tokens, free slots, pool length (:class:`~lbsim.backends.base.EngineState`), as stale as :meth:`jobs`."""
        raise NotImplementedError

    def tokens_of(self, frontend: int, backends: Sequence[int]) -> list[float]:
        """Resident plus waiting tokens of each backend, as ``frontend`` sees them."""
        state = self.engine_state
        return [state(frontend, j).tokens for j in backends]

    def tokens_array(self, frontend: int) -> np.ndarray:
        """Every backend's resident plus waiting tokens as ``frontend`` sees them, shape (B,), floats.

        The bulk :meth:`tokens_of`, as :meth:`jobs_array` is the bulk :meth:`jobs_of`
        (entries of backends ``frontend`` may not use are unspecified).
        """
        return np.array(self.tokens_of(frontend, range(len(self.backends))), dtype=float)
