"""A job (one request) on its way through the system.

It lives below the engine, the routers and the backend models, which all
read and write it.
"""

from __future__ import annotations


class Job:
    """One request. Sizes are in work units; times in seconds.

    ``__slots__`` keeps a job small and fast to create: there is one per
    arrival on the hot path. A job is also its own event on the network
    (the kernel reads an event's ``callbacks`` and ``_ok``): its request's
    trip to the backend and its response's trip back are the job itself in
    the event queue, not an event object, a callback list and a bound method
    apiece, so a job in flight is one object (fewer objects per job in flight,
    less memory traffic when tens of thousands are).
    """

    __slots__ = (
        "backend", "callbacks", "frontend", "job_id", "output", "prompt", "return_delay", "size", "t_arrival",
        "t_backend_arrival",
    )  # fmt: skip
    #: as an event, a job never fails (read by the kernel after the callbacks)
    _ok = True
    # set on the way, not in __init__ (declared here for type checkers; no class attribute is created)
    backend: int
    return_delay: float
    t_backend_arrival: float
    prompt: int  # with token workloads only
    output: int
    callbacks: tuple | None  # while the job is on the network: what the kernel calls when it lands

    def __init__(self, job_id: int, frontend: int, size: float, t_arrival: float):
        self.job_id = job_id
        self.frontend = frontend
        self.size = size
        self.t_arrival = t_arrival
        # Set on the way (one fewer store each per job here): ``backend`` and
        # ``return_delay`` (d_ij plus the response's jitter) when the job is
        # routed, ``t_backend_arrival`` when it reaches the backend; ``prompt`` and
        # ``output`` tokens with token workloads (jobs.tokens).

    def __repr__(self) -> str:
        backend = getattr(self, "backend", None)
        return f"Job({self.job_id}, frontend={self.frontend}, backend={backend}, size={self.size:.4g})"

