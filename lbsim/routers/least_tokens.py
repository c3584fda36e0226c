"""Least tokens: each request to the engine with the fewest resident plus waiting tokens.

The signal production LLM routers balance on (the KV-cache usage and queue
of each engine, in tokens) rather than request counts: a request of 8,000
prompt tokens weighs more than ten of 100. On rate backends, whose tokens
are their load x_j, it is ``least_load``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Router, register

if TYPE_CHECKING:
    from ..jobs import Job
    from ..view import View


@register
class LeastTokens(Router):
    """Send each request to the usable backend with the fewest observed resident plus waiting tokens (ties random)."""

    name = "least_tokens"
    scans_backends = True

    def route(self, frontend: int, job: Job, view: View) -> int:
        if view.vectorised:  # large fleets: every backend's tokens in one array, kept up to date by the view
            return self.pick_least(frontend, view.tokens_array(frontend))
        candidates = self.neighbours[frontend]
        return self.pick_min(candidates, view.tokens_of(frontend, candidates))
