"""An engine's equivalent rate function: its token throughput as a ``batch`` curve ``x/(a + b*x)``.

With n active requests of mean resident length ``l`` spread evenly over G
ranks, each rank holds n/G requests and ``l n / G`` tokens, and a step model
that is affine in both (``barrier``, ``affine``) gives the step time
``a0 + b0 * n / G`` (:meth:`StepTimeModel.per_request`). Each step emits n
tokens, so the engine emits

    T(n) = n / (a0 + (b0 / G) n)   tokens per second,

lbsim's ``batch`` family in n. When a job's size is its output tokens
(work unit = one token) and the load is ``x = n * sbar``, the rate in work
units per second is ``mu(x) = x / (a0 sbar + (b0/G) x)``: ``batch`` with
``a = a0 * sbar`` and ``b = b0 / G``.

The approximation (docs/llm.md, "Equivalent rate function"):

* ranks are assumed balanced: the real step waits for ``max_g``, so the
  curve is an upper bound, tight when admission balances well;
* the slot limit G*B is ignored: beyond ``n = G B`` the real throughput is
  flat at ``T(G B)``, the curve keeps rising towards ``G / b0``;
* ``l`` is a constant: the time-averaged resident length of a request,
  ``E[O P + O (O - 1) / 2] / E[O]`` for prompt P and output O
  (:func:`mean_resident_length`), not the state-dependent one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lbsim.llm.params import LLMParams
from lbsim.rates import Batch


def mean_resident_length(prompts: npt.ArrayLike, outputs: npt.ArrayLike) -> float:
    """Resident tokens of a request averaged over the steps it is active: ``sum(O P + O (O-1)/2) / sum(O)``.

    A request with prompt P and output O is active for O steps and holds
    ``P + k`` tokens at the start of its (k+1)-th; requests are weighted by
    their steps, as a time average over a batch would.
    """
    p = np.asarray(prompts, dtype=np.float64)
    o = np.asarray(outputs, dtype=np.float64)
    return float(np.sum(o * p + o * (o - 1) / 2) / np.sum(o))


def equivalent_rate(
    params: LLMParams, mean_length: float, mean_prompt: float = 0.0, mean_output: float = 1.0, mean_size: float = 1.0
) -> Batch:
    """The ``batch`` rate family of an engine (work unit: one output token, ``mean_size`` tokens a job).

    ``mean_length``: mean resident tokens of an active request
    (:func:`mean_resident_length`); ``mean_prompt``/``mean_output`` amortise
    a prefill term (``affine``'s ``p``).
    """
    if mean_length < 0 or mean_output <= 0 or mean_size <= 0:
        raise ValueError("mean_length must be >= 0, mean_output and mean_size > 0")
    a0, b0 = params.step_time.per_request(mean_length, mean_prompt, mean_output)
    b = b0 / params.workers
    if b <= 0:  # a step time that does not grow with the batch: the curve is linear, kept barely concave
        b = np.finfo(float).tiny
    return Batch(a=a0 * mean_size, b=b)
