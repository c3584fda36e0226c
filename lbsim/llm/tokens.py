"""Token workloads: each request's prompt and output length in tokens (``jobs.tokens``).

A workload is one small pydantic model with a ``kind`` and a ``sample(rng, n)``
method returning two int64 arrays, prompts and outputs, every value at least
1 token (docs/llm.md, "Token workloads")::

    tokens = { kind = "normal", prompt_mean = 3200, output_mean = 1200 }
    tokens = { kind = "pairs", file = "requests.csv" }
    tokens = { kind = "independent", prompt = { size = "uniform", mean = 1000 },
               output = { size = "exponential", mean = 200 } }

A new workload is one class plus one registry line (``@register_tokens``).
"""

from __future__ import annotations

import csv
import math
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from lbsim.distributions import Distribution, make_distribution
from lbsim.errors import ScenarioError, unknown
from lbsim.registry import Registry, from_params

TokenArrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TokenMoments:
    """Means of a workload: what a job's size and an engine's equivalent rate function are built on."""

    mean_prompt: float
    mean_output: float
    mean_length: float  #: mean resident tokens of an active request (equivalent.mean_resident_length)


#: draws behind :meth:`TokenWorkload.moments` of a law without closed forms (after rounding): the
#: means' relative standard error is then about cv / 450, far below what the approximation it feeds carries
MOMENT_DRAWS = 200_000


class TokenWorkload(BaseModel):
    """A law of (prompt, output) token pairs. Subclasses set ``kind`` and implement ``_sample``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    kind: ClassVar[str]

    def sample(self, rng: np.random.Generator, n: int) -> TokenArrays:
        """``n`` iid (prompt, output) pairs as two int64 arrays, every value >= 1."""
        prompt, output = self._sample(rng, int(n))
        return _tokens(prompt), _tokens(output)

    @abstractmethod
    def _sample(self, rng: np.random.Generator, n: int) -> TokenArrays:
        """``n`` pairs as float or int arrays (rounded and floored at 1 by :meth:`sample`)."""

    def moments(self) -> TokenMoments:
        """Mean prompt, output and resident length, from a fixed-seed sample (the same every time)."""
        return _moments(*self.sample(np.random.default_rng(0), MOMENT_DRAWS))


def _moments(prompt: np.ndarray, output: np.ndarray) -> TokenMoments:
    p, o = prompt.astype(np.float64), output.astype(np.float64)
    # resident tokens averaged over a request's active steps, requests weighted by their steps
    length = float(np.sum(o * p + o * (o - 1) / 2) / np.sum(o))
    return TokenMoments(float(p.mean()), float(o.mean()), length)


def _tokens(values: np.ndarray) -> np.ndarray:
    """Round to whole tokens, at least 1 (a request has a prompt and emits at least one token)."""
    return np.maximum(np.rint(np.asarray(values, dtype=np.float64)), 1.0).astype(np.int64)


TOKEN_WORKLOADS = Registry("token workload", "kind")
#: class decorator: make a workload available as ``tokens = { kind = cls.kind, ... }``
register_tokens = TOKEN_WORKLOADS.register


def make_tokens(spec: Mapping[str, Any], key: str = "jobs.tokens", base: str | Path = ".") -> TokenWorkload:
    """The workload described by a TOML table; file paths are relative to ``base`` (the scenario's folder).

    Raises :class:`ScenarioError` naming the key (``jobs.tokens.correlation: must be <= 1, got 2``).
    """
    cls, params = TOKEN_WORKLOADS.split(spec, key, '{ kind = "normal" }')
    if cls is Independent:
        return Independent.build(params, key)
    if cls is Pairs:
        return Pairs.build(params, key, Path(base))
    workload: TokenWorkload = from_params(cls, params, key, cls.kind)
    return workload


def _correlated_normals(rng: np.random.Generator, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Two standard normals with correlation ``rho``: ``z2 = rho z1 + sqrt(1 - rho**2) w``."""
    z = rng.standard_normal((2, n))
    return z[0], rho * z[0] + math.sqrt(1.0 - rho * rho) * z[1]


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


@register_tokens
class Normal(TokenWorkload):
    """Bivariate normal prompt and output, pairs with a non-positive value redrawn, then rounded.

    Defaults are the synthetic workload of the BF-IO paper (Chen et al., "A
    Universal Load Balancing Principle and Its Application to Large Language
    Model Serving", arXiv:2601.17855): means 3200/1200, standard deviations
    2600/700, correlation -0.1. Rejection truncates the law to the positive
    quadrant, so the sample means exceed the parameters when a standard
    deviation is large against its mean (here about 11% of prompts are redrawn).
    """

    kind = "normal"
    prompt_mean: float = Field(3200.0, gt=0, description="mean prompt length before truncation (tokens)")
    prompt_sd: float = Field(2600.0, ge=0, description="standard deviation of the prompt length (tokens)")
    output_mean: float = Field(1200.0, gt=0, description="mean output length before truncation (tokens)")
    output_sd: float = Field(700.0, ge=0, description="standard deviation of the output length (tokens)")
    correlation: float = Field(-0.1, ge=-1, le=1, description="correlation of prompt and output")

    def _sample(self, rng: np.random.Generator, n: int) -> TokenArrays:
        prompt, output = np.empty(n), np.empty(n)
        done = 0
        while done < n:
            # Draw a little more than the expected need so one or two rounds suffice.
            want = n - done
            z1, z2 = _correlated_normals(rng, want + want // 4 + 16, self.correlation)
            p = self.prompt_mean + self.prompt_sd * z1
            o = self.output_mean + self.output_sd * z2
            keep = (p > 0) & (o > 0)
            take = min(int(keep.sum()), want)
            prompt[done : done + take] = p[keep][:take]
            output[done : done + take] = o[keep][:take]
            done += take
        return prompt, output


@register_tokens
class Lognormal(TokenWorkload):
    """Log-normal prompt and output: ``(log P, log O)`` bivariate normal with correlation ``correlation``.

    ``mu`` and ``sigma`` are the mean and standard deviation of the logs, so
    ``exp(mu)`` is the median; the mean is ``exp(mu + sigma**2/2)``.
    """

    kind = "lognormal"
    prompt_mu: float = Field(description="mean of log(prompt tokens)")
    prompt_sigma: float = Field(ge=0, description="standard deviation of log(prompt tokens)")
    output_mu: float = Field(description="mean of log(output tokens)")
    output_sigma: float = Field(ge=0, description="standard deviation of log(output tokens)")
    correlation: float = Field(0.0, ge=-1, le=1, description="correlation of the logs")

    def _sample(self, rng: np.random.Generator, n: int) -> TokenArrays:
        z1, z2 = _correlated_normals(rng, n, self.correlation)
        return np.exp(self.prompt_mu + self.prompt_sigma * z1), np.exp(self.output_mu + self.output_sigma * z2)


@register_tokens
class AzureConversation(Lognormal):
    """Log-normal fit to the conversation requests of the Azure LLM inference trace 2023.

    Trace: Azure/AzurePublicDataset, ``AzureLLMInferenceTrace_conv.csv``,
    published with Patel et al., "Splitwise: Efficient Generative LLM
    Inference Using Phase Splitting", ISCA 2024. Logs of prompt tokens:
    mu 6.63, sigma 0.99 (median 757); of output tokens: mu 5.02, sigma 0.86
    (median 151); correlation of the logs -0.11.
    """

    kind = "azure_conversation"
    prompt_mu: float = Field(6.63, description="mean of log(prompt tokens)")
    prompt_sigma: float = Field(0.99, ge=0, description="standard deviation of log(prompt tokens)")
    output_mu: float = Field(5.02, description="mean of log(output tokens)")
    output_sigma: float = Field(0.86, ge=0, description="standard deviation of log(output tokens)")
    correlation: float = Field(-0.11, ge=-1, le=1, description="correlation of the logs")


@register_tokens
class AzureCode(Lognormal):
    """Log-normal fit to the code-completion requests of the Azure LLM inference trace 2023.

    Trace: Azure/AzurePublicDataset, ``AzureLLMInferenceTrace_code.csv``
    (Patel et al., Splitwise, ISCA 2024). Logs of prompt tokens: mu 7.00,
    sigma 1.36 (median 1097); of output tokens: mu 2.79, sigma 0.85 (median
    16); uncorrelated.
    """

    kind = "azure_code"
    prompt_mu: float = Field(7.00, description="mean of log(prompt tokens)")
    prompt_sigma: float = Field(1.36, ge=0, description="standard deviation of log(prompt tokens)")
    output_mu: float = Field(2.79, description="mean of log(output tokens)")
    output_sigma: float = Field(0.85, ge=0, description="standard deviation of log(output tokens)")
    correlation: float = Field(0.0, ge=-1, le=1, description="correlation of the logs")


@register_tokens
class Independent(TokenWorkload):
    """Prompt and output independent, each any lbsim size distribution, rounded, at least 1 token.

    Each side is a table ``{ size = <distribution>, mean = <tokens>, <its shape keys> }``
    (``lbsim.distributions``), e.g. uniform prompts and exponential outputs
    (an exponential rounded to whole tokens is close to geometric).
    """

    kind = "independent"
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    prompt: Distribution = Field(description="law of the prompt length: { size = ..., mean = ..., ... }")
    prompt_mean: float = Field(gt=0, description="mean prompt length before rounding (tokens)")
    output: Distribution = Field(description="law of the output length: { size = ..., mean = ..., ... }")
    output_mean: float = Field(gt=0, description="mean output length before rounding (tokens)")

    @classmethod
    def build(cls, params: dict[str, Any], key: str) -> Independent:
        extra = set(params) - {"prompt", "output"}
        if extra:
            name = min(extra)
            raise ScenarioError(f"{key}.{name}", unknown("independent parameter", name, ["prompt", "output"]))
        sides: dict[str, Any] = {}
        for side in ("prompt", "output"):
            table = params.get(side)
            if not isinstance(table, Mapping):
                raise ScenarioError(
                    f"{key}.{side}", f'must be a table like {{ size = "exponential", mean = 200 }}, got {table!r}'
                )
            shape = dict(table)
            name = shape.pop("size", None)
            if name is None:
                raise ScenarioError(f"{key}.{side}.size", "missing (a size distribution: exponential, uniform, ...)")
            mean = shape.pop("mean", None)
            if isinstance(mean, bool) or not isinstance(mean, int | float) or not math.isfinite(mean) or mean <= 0:
                raise ScenarioError(f"{key}.{side}.mean", f"must be a number > 0 (tokens), got {mean!r}")
            sides[side] = make_distribution(name, shape, f"{key}.{side}")
            sides[f"{side}_mean"] = float(mean)
        return cls(**sides)

    def _sample(self, rng: np.random.Generator, n: int) -> TokenArrays:
        return self.prompt.sample(rng, n, self.prompt_mean), self.output.sample(rng, n, self.output_mean)


@register_tokens
class Pairs(TokenWorkload):
    """The (prompt, output) pairs of a CSV file with a header and integer columns ``prompt,output``.

    :meth:`pairs` gives them in file order (saturated mode); :meth:`sample`
    draws them uniformly with replacement (open mode). ``file`` is relative to
    the scenario's folder.
    """

    kind = "pairs"
    file: str = Field(description="CSV file with header and integer columns prompt,output")
    _prompt: np.ndarray = PrivateAttr()
    _output: np.ndarray = PrivateAttr()

    @classmethod
    def build(cls, params: dict[str, Any], key: str, base: Path) -> Pairs:
        workload = from_params(cls, params, key, "pairs")
        path = base / workload.file
        workload._prompt, workload._output = read_pairs(path, f"{key}.file")
        return workload

    def moments(self) -> TokenMoments:
        """Exact means of the file (which the open mode draws from uniformly)."""
        return _moments(*self.pairs())

    def pairs(self) -> TokenArrays:
        """Every pair of the file, in file order."""
        return self._prompt.copy(), self._output.copy()

    def _sample(self, rng: np.random.Generator, n: int) -> TokenArrays:
        rows = rng.integers(0, len(self._prompt), n)
        return self._prompt[rows], self._output[rows]


def _read_table(path: Path, key: str, columns: tuple[str, ...]) -> tuple[list[list[str]], list[int]]:
    """The rows (as strings) of ``columns`` in a CSV with a header, and each row's line number."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ScenarioError(key, f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ScenarioError(key, f"{path}: empty file (needs a header {','.join(columns)})")
        names = [name.strip() for name in header]
        missing = [c for c in columns if c not in names]
        if missing:
            raise ScenarioError(key, f"{path}: missing column {missing[0]!r} (header must name {','.join(columns)})")
        where = [names.index(c) for c in columns]
        rows, lines = [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            cells = [row[i].strip() if i < len(row) else "" for i in where]
            for column, cell in zip(columns, cells):
                if cell == "":
                    raise ScenarioError(key, f"{path} line {line}: missing {column}")
            rows.append(cells)
            lines.append(line)
    if not rows:
        raise ScenarioError(key, f"{path}: no rows")
    return rows, lines


def _token_count(cell: str, column: str, path: Path, line: int, key: str) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise ScenarioError(key, f"{path} line {line}: {column} must be an integer, got {cell!r}") from None
    if value < 1:
        raise ScenarioError(key, f"{path} line {line}: {column} must be >= 1 token, got {value}")
    return value


def read_pairs(path: str | Path, key: str = "jobs.tokens.file") -> TokenArrays:
    """Prompt and output arrays of a ``prompt,output`` CSV; a bad value is an error naming its line."""
    path = Path(path)
    rows, lines = _read_table(path, key, ("prompt", "output"))
    prompt = np.array([_token_count(r[0], "prompt", path, n, key) for r, n in zip(rows, lines)], dtype=np.int64)
    output = np.array([_token_count(r[1], "output", path, n, key) for r, n in zip(rows, lines)], dtype=np.int64)
    return prompt, output


def read_arrival_trace(path: str | Path, key: str = "frontends.trace") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival times and token counts of a ``time,prompt,output`` CSV (``frontends[].trace``).

    Times are seconds, finite, ``>= 0`` and nondecreasing; token counts are
    integers ``>= 1``. A bad value is an error naming its line.
    """
    path = Path(path)
    rows, lines = _read_table(path, key, ("time", "prompt", "output"))
    times = np.empty(len(rows))
    previous = 0.0
    for k, (row, line) in enumerate(zip(rows, lines)):
        try:
            t = float(row[0])
        except ValueError:
            raise ScenarioError(key, f"{path} line {line}: time must be a number, got {row[0]!r}") from None
        if not math.isfinite(t) or t < 0:
            raise ScenarioError(key, f"{path} line {line}: time must be finite and >= 0, got {row[0]}")
        if t < previous:
            raise ScenarioError(key, f"{path} line {line}: times must be sorted, got {row[0]} after {previous:g}")
        times[k] = previous = t
    prompt = np.array([_token_count(r[1], "prompt", path, n, key) for r, n in zip(rows, lines)], dtype=np.int64)
    output = np.array([_token_count(r[2], "output", path, n, key) for r, n in zip(rows, lines)], dtype=np.int64)
    return times, prompt, output
