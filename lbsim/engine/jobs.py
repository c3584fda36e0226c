"""Kept for scripts that import ``lbsim.engine.jobs``: the job is :mod:`lbsim.jobs`, the event :mod:`lbsim.events`."""

from ..events import Wakeup
from ..jobs import Job

__all__ = ["Job", "Wakeup"]
