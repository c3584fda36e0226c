"""The lightest event SimPy's kernel accepts, shared by the engine and the backend models."""

from __future__ import annotations


class Wakeup:
    """The lightest object SimPy's kernel accepts as an event: a callback list and ``_ok``.

    ``Environment.step`` only reads ``callbacks`` and ``_ok``; a full
    ``simpy.Event`` costs several attribute writes more, on every job.
    ``payload`` carries what the callback needs (a job, a version number).
    """

    __slots__ = ("_ok", "callbacks", "payload")

    def __init__(self, callback, payload=None):
        self.callbacks = [callback]
        self.payload = payload
        self._ok = True  # a slot, not a class attribute: read once per event, a slot is faster
