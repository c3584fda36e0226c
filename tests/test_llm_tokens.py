"""Token workloads and trace files: moments against their parameters, file errors naming the line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbsim.errors import ScenarioError
from lbsim.llm.tokens import (
    TOKEN_WORKLOADS,
    make_tokens,
    read_arrival_trace,
    read_pairs,
)

N = 200_000
Z = 4.5  # standard errors a sample moment may miss its parameter by


def se_correlation(rho: float, n: int) -> float:
    """Standard error of a sample correlation of a bivariate normal: (1 - rho**2) / sqrt(n)."""
    return (1 - rho**2) / math.sqrt(n)


@pytest.mark.parametrize("kind", sorted(TOKEN_WORKLOADS))
def test_every_workload_gives_int64_tokens_of_at_least_one(kind: str, tmp_path) -> None:
    spec: dict = {"kind": kind}
    if kind == "pairs":
        (tmp_path / "r.csv").write_text("prompt,output\n3,4\n5,1\n")
        spec["file"] = "r.csv"
    if kind == "lognormal":
        spec.update(prompt_mu=1.0, prompt_sigma=2.0, output_mu=0.0, output_sigma=2.0)
    if kind == "independent":
        spec.update(prompt={"size": "exponential", "mean": 2.0}, output={"size": "uniform", "mean": 1.0})
    prompt, output = make_tokens(spec, base=tmp_path).sample(np.random.default_rng(3), 5000)
    assert prompt.dtype == output.dtype == np.int64
    assert prompt.min() >= 1 and output.min() >= 1 and len(prompt) == len(output) == 5000


def test_normal_matches_its_means_sds_and_correlation() -> None:
    # Means 10+ sds from 0: truncation is negligible (P < 1e-20), so the moments are the parameters'.
    params = {"prompt_mean": 5000.0, "prompt_sd": 400.0, "output_mean": 2000.0, "output_sd": 150.0, "correlation": -0.3}
    prompt, output = make_tokens({"kind": "normal", **params}).sample(np.random.default_rng(1), N)
    # Rounding adds a uniform(-1/2, 1/2) error: variance 1/12, far below the tolerance.
    assert abs(prompt.mean() - 5000) < Z * 400 / math.sqrt(N)
    assert abs(output.mean() - 2000) < Z * 150 / math.sqrt(N)
    assert abs(prompt.std() - 400) < Z * 400 / math.sqrt(2 * N)
    assert abs(output.std() - 150) < Z * 150 / math.sqrt(2 * N)
    assert abs(np.corrcoef(prompt, output)[0, 1] + 0.3) < Z * se_correlation(-0.3, N)


def test_normal_redraws_non_positive_values() -> None:
    prompt, output = make_tokens({"kind": "normal"}).sample(np.random.default_rng(2), N)
    assert prompt.min() >= 1 and output.min() >= 1
    # Truncating N(3200, 2600) to > 0 raises the mean to m + s * phi(a) / (1 - Phi(a)), a = -m/s.
    a = -3200 / 2600
    phi, tail = math.exp(-a * a / 2) / math.sqrt(2 * math.pi), 0.5 * math.erfc(a / math.sqrt(2))
    # The pair is redrawn if either side is non-positive; the output side (1200/700) is
    # redrawn 4% of the time, which barely moves the prompt mean: loose bound.
    assert abs(prompt.mean() - (3200 + 2600 * phi / tail)) < 60


def test_lognormal_logs_match_mu_sigma_and_correlation() -> None:
    # Large mu: rounding to whole tokens barely moves the logs.
    spec = {"kind": "lognormal", "prompt_mu": 9.0, "prompt_sigma": 0.5, "output_mu": 8.0, "output_sigma": 0.3, "correlation": 0.4}
    prompt, output = make_tokens(spec).sample(np.random.default_rng(4), N)
    lp, lo = np.log(prompt), np.log(output)
    assert abs(lp.mean() - 9.0) < Z * 0.5 / math.sqrt(N) + 1e-3
    assert abs(lo.mean() - 8.0) < Z * 0.3 / math.sqrt(N) + 1e-3
    assert abs(lp.std() - 0.5) < Z * 0.5 / math.sqrt(2 * N) + 1e-3
    assert abs(np.corrcoef(lp, lo)[0, 1] - 0.4) < Z * se_correlation(0.4, N)


def test_azure_presets_carry_the_trace_fits() -> None:
    conv = make_tokens({"kind": "azure_conversation"})
    code = make_tokens({"kind": "azure_code"})
    assert (conv.prompt_mu, conv.prompt_sigma, conv.output_mu, conv.output_sigma, conv.correlation) == (
        6.63, 0.99, 5.02, 0.86, -0.11,
    )  # fmt: skip
    assert (code.prompt_mu, code.prompt_sigma, code.output_mu, code.output_sigma, code.correlation) == (
        7.00, 1.36, 2.79, 0.85, 0.0,
    )  # fmt: skip


def test_independent_sides_have_their_means() -> None:
    spec = {"kind": "independent", "prompt": {"size": "uniform", "mean": 1000, "spread": 0.5}, "output": {"size": "exponential", "mean": 300}}
    prompt, output = make_tokens(spec).sample(np.random.default_rng(5), N)
    sd_p = 1000 * 0.5 / math.sqrt(3)
    assert abs(prompt.mean() - 1000) < Z * sd_p / math.sqrt(N)
    # Rounding an exponential of mean 300 and flooring at 1 shifts its mean by < 0.01.
    assert abs(output.mean() - 300) < Z * 300 / math.sqrt(N) + 0.01
    assert abs(np.corrcoef(prompt, output)[0, 1]) < Z / math.sqrt(N)


def test_pairs_are_read_in_file_order_and_sampled_uniformly(tmp_path) -> None:
    (tmp_path / "r.csv").write_text("prompt,output\n10,1\n20,2\n30,3\n")
    workload = make_tokens({"kind": "pairs", "file": "r.csv"}, base=tmp_path)
    prompt, output = workload.pairs()
    assert prompt.tolist() == [10, 20, 30] and output.tolist() == [1, 2, 3]
    prompt, output = workload.sample(np.random.default_rng(0), 30_000)
    assert (prompt == 10 * output).all()
    share = np.bincount(output, minlength=4)[1:] / 30_000
    assert np.all(np.abs(share - 1 / 3) < Z * math.sqrt(2 / 9 / 30_000))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prompt,output\n10,1\n0,2\n", "line 3: prompt must be >= 1 token, got 0"),
        ("prompt,output\n10,-4\n", "line 2: output must be >= 1 token, got -4"),
        ("prompt,output\n10,1\n7,\n", "line 3: missing output"),
        ("prompt,output\n1.5,1\n", "line 2: prompt must be an integer, got '1.5'"),
        ("prompt\n10\n", "missing column 'output'"),
        ("", "empty file"),
    ],
)
def test_bad_pairs_files_name_the_key_and_the_line(tmp_path, text: str, message: str) -> None:
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(ScenarioError) as err:
        make_tokens({"kind": "pairs", "file": "r.csv"}, "jobs.tokens", base=tmp_path)
    assert err.value.key == "jobs.tokens.file" and message in err.value.message


def test_arrival_trace_is_validated(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time,prompt,output\n0,5,2\n0.5,6,3\n0.5,7,1\n")
    times, prompt, output = read_arrival_trace(path)
    assert times.tolist() == [0, 0.5, 0.5] and prompt.tolist() == [5, 6, 7] and output.tolist() == [2, 3, 1]
    for text, message in [
        ("time,prompt,output\n1,5,2\n0.5,6,3\n", "line 3: times must be sorted"),
        ("time,prompt,output\n-1,5,2\n", "line 2: time must be finite and >= 0"),
        ("time,prompt,output\ninf,5,2\n", "line 2: time must be finite"),
        ("time,prompt,output\n1,5,0\n", "line 2: output must be >= 1"),
    ]:
        path.write_text(text)
        with pytest.raises(ScenarioError, match=message):
            read_arrival_trace(path, "frontends[0].trace")
    assert read_pairs  # the pairs reader is the same table reader


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"kind": "normall"}, "jobs.tokens.kind"),
        ({"kind": "normal", "correlation": 1.5}, "jobs.tokens.correlation"),
        ({"kind": "normal", "prompt_mean": -1.0}, "jobs.tokens.prompt_mean"),
        ({"kind": "lognormal", "prompt_mu": 1.0}, "jobs.tokens"),
        ({"kind": "independent", "prompt": {"size": "exponential", "mean": 0}, "output": {"size": "exponential", "mean": 1}}, "jobs.tokens.prompt.mean"),
        ({"kind": "independent", "prompt": {"size": "expo", "mean": 2}, "output": {"size": "exponential", "mean": 1}}, "jobs.tokens.prompt.size"),
        ({"kind": "pairs", "file": "nowhere.csv"}, "jobs.tokens.file"),
    ],
)
def test_bad_workloads_name_the_key(spec: dict, key: str, tmp_path) -> None:
    with pytest.raises(ScenarioError) as err:
        make_tokens(spec, "jobs.tokens", base=tmp_path)
    assert err.value.key.startswith(key)
