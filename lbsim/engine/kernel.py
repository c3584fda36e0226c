"""SimPy's environment with a run loop tight enough for one event per job.

:meth:`Kernel.run_until` does what ``simpy.Environment.run(until=t)`` does,
event for event: it pops SimPy's own queue in SimPy's order (time, priority,
insertion id), sets ``now``, runs the event's callbacks and crashes on a
failed, undefused event, as :meth:`simpy.Environment.step` does. It differs
only in doing the step inline: ``run`` calls ``step`` once per event, and
on an M/M/1 queue, where a job is one event, that call is about a
twentieth of the cost of a job.

Everything else (``schedule``, ``timeout``, ``process``, ``now``) is SimPy's,
so processes and SimPy events work on a ``Kernel`` as on any environment.
"""

from __future__ import annotations

from heapq import heappop
from typing import TYPE_CHECKING, Any

import simpy
from simpy.core import URGENT


class Kernel(simpy.Environment):
    """A SimPy environment whose run loop is inlined; it also takes lightweight events (``lbsim.events.Wakeup``)."""

    if TYPE_CHECKING:  # SimPy types ``schedule`` for its Event; any object with callbacks and _ok will do

        def schedule(self, event: Any, priority: Any = ..., delay: Any = ...) -> None: ...

    #: the insertion id of the event being processed: what orders two things due at the same
    #: instant (a probe reply waiting in a router's inbox lands before this event iff its id is smaller)
    event_id: int = -1

    def run_until(self, horizon: float) -> None:
        """Process every event before ``horizon``, as ``run(until=horizon)`` does.

        As in SimPy, the stop is an URGENT event at ``horizon``: events at the
        horizon itself scheduled URGENT before the run still happen, the rest
        stay queued, and afterwards ``now == horizon``.
        """
        stop = _Stop()
        self.schedule(stop, URGENT, horizon - self._now)
        queue = self._queue
        while True:
            self._now, _, self.event_id, event = heappop(queue)  # never empty: stop is in it
            if event is stop:
                return
            # As in simpy.Environment.step: detach the callbacks first, so a
            # callback can reschedule its own event (arrival streams do).
            callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)
                exc.__cause__ = event._value
                raise exc


class _Stop:
    """The end of a run: an event no callback is attached to."""

    __slots__ = ("callbacks",)
    _ok = True

    def __init__(self):
        self.callbacks = []
