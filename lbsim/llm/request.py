"""An LLM request: a prompt and an output length in tokens, and what happened to it in an engine."""

from __future__ import annotations

from typing import Any


class LLMRequest:
    """One request. Times are in seconds; ``None`` until the event happens.

    ``rank``: the rank it was admitted on (or bound to, ``dispatch = "on_arrival"``);
    ``t_admit``: its first admission; ``t_first_token``: the end of the first
    step after it (the first token a user sees, kept across preemptions);
    ``t_done``: the end of the step that emitted its last token;
    ``preemptions``: how many times it was sent back to the pool.
    ``payload`` is free for the caller (the lbsim ``Job`` it stands for).
    """

    __slots__ = (
        "_admit_step",
        "_finish_step",
        "_slot",
        "output",
        "output_estimate",
        "payload",
        "preemptions",
        "prompt",
        "rank",
        "request_id",
        "t_admit",
        "t_arrival",
        "t_done",
        "t_first_token",
    )  # fmt: skip

    def __init__(
        self,
        request_id: int,
        prompt: int,
        output: int,
        t_arrival: float = 0.0,
        output_estimate: int | None = None,
        payload: Any = None,
    ):
        self.request_id = request_id
        self.prompt = int(prompt)
        self.output = int(output)
        self.output_estimate = self.output if output_estimate is None else int(output_estimate)
        self.t_arrival = t_arrival
        self.rank = -1
        self.t_admit: float | None = None
        self.t_first_token: float | None = None
        self.t_done: float | None = None
        self.preemptions = 0
        self.payload = payload
        self._slot = -1
        self._admit_step = -1
        self._finish_step = -1  # the step that emits its last token; -1 while waiting

    @property
    def ttft(self) -> float:
        """Time to first token: ``t_first_token - t_arrival`` (NaN before it)."""
        return self.t_first_token - self.t_arrival if self.t_first_token is not None else float("nan")

    @property
    def tpot(self) -> float:
        """Time per output token ``(t_done - t_first_token) / (output - 1)`` (NaN for one token or before the end)."""
        if self.t_done is None or self.t_first_token is None or self.output < 2:
            return float("nan")
        return (self.t_done - self.t_first_token) / (self.output - 1)

    def __repr__(self) -> str:
        return f"LLMRequest({self.request_id}, prompt={self.prompt}, output={self.output}, rank={self.rank})"
