"""LLM inference engines: requests in tokens, data-parallel ranks with batch slots behind a barrier.

See docs/llm.md. The pieces: token workloads (:mod:`.tokens`), step-time and
power models (:mod:`.step_time`, :mod:`.power`), admission policies
(:mod:`.admission`), the engine (:mod:`.engine`), its parameters
(:mod:`.params`), the saturated mode (:mod:`.saturated`) and the equivalent
rate function (:mod:`.equivalent`).
"""

from lbsim.llm import bfio  # noqa: F401  (registers bestfit, bfio, bfio_exact, br0)
from lbsim.llm.admission import (
    ADMISSIONS,
    AdmissionChoice,
    AdmissionPolicy,
    Candidates,
    RankState,
    make_admission,
    register_admission,
)
from lbsim.llm.engine import LLMEngine
from lbsim.llm.equivalent import equivalent_rate, mean_resident_length
from lbsim.llm.params import LLMParams
from lbsim.llm.power import POWER_MODELS, make_power, register_power
from lbsim.llm.request import LLMRequest
from lbsim.llm.saturated import SaturatedResult, run_saturated
from lbsim.llm.step_time import STEP_TIMES, make_step_time, register_step_time
from lbsim.llm.steps import StepLog
from lbsim.llm.tokens import (
    TOKEN_WORKLOADS,
    make_tokens,
    read_arrival_trace,
    read_pairs,
    register_tokens,
)

__all__ = [
    "ADMISSIONS",
    "POWER_MODELS",
    "STEP_TIMES",
    "TOKEN_WORKLOADS",
    "AdmissionChoice",
    "AdmissionPolicy",
    "Candidates",
    "LLMEngine",
    "LLMParams",
    "LLMRequest",
    "RankState",
    "SaturatedResult",
    "StepLog",
    "equivalent_rate",
    "make_admission",
    "make_power",
    "make_step_time",
    "make_tokens",
    "mean_resident_length",
    "read_arrival_trace",
    "read_pairs",
    "register_admission",
    "register_power",
    "register_step_time",
    "register_tokens",
    "run_saturated",
]  # fmt: skip
