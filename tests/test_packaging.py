"""The package installs whole and starts quickly.

- A wheel built from the repository carries the example scenarios (copied
  from ``scenarios/``, the one source), ``py.typed``, ``CITATION.cff`` and
  the LICENSE, and an installed wheel finds its scenarios with no
  repository around it (``lbsim example``).
- ``lbsim --help`` and ``lbsim validate`` import neither pandas, scipy nor
  matplotlib: ``import lbsim`` is lazy (PEP 562) and the CLI imports heavy
  modules inside its commands.
- The extras and the SimPy bound say what the code relies on.
- The peer benchmark runs in its quick mode when Ciw (the ``bench`` extra)
  is installed, and every pair of simulators agrees on the mean sojourn.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").glob("*.toml"))
HEAVY = ("pandas", "scipy", "matplotlib")


def python(code: str, *args: str, cwd: Path = ROOT, path: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(path), "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env)


# --------------------------------------------------------------------------
# start-up


HEAVY_AFTER_CLI = f"""
import sys
from lbsim.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", "scenarios/two_regions.toml"], ["example"]])
def test_quick_commands_import_no_heavy_library(args):
    done = python(HEAVY_AFTER_CLI, *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_import_lbsim_is_lazy_and_the_public_names_still_resolve():
    code = f"""
import sys
import lbsim
assert not [m for m in {HEAVY!r} if m in sys.modules], "import lbsim loaded a heavy library"
import lbsim.optimum, lbsim.fluid.result  # importing the submodules keeps the names the functions
from lbsim.optimum import optimum
assert lbsim.optimum is optimum and callable(lbsim.fluid) and callable(lbsim.scaling)
assert lbsim.Result.__name__ == "Result" and lbsim.Scenario.__name__ == "Scenario"
assert callable(lbsim.load_scenario) and callable(lbsim.stats.mean_ci)
assert set(lbsim.__all__) <= set(dir(lbsim))
try:
    lbsim.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("lbsim.no_such_name resolved")
"""
    done = python(code)
    assert done.returncode == 0, done.stderr


def test_python_dash_m_lbsim():
    done = subprocess.run([sys.executable, "-m", "lbsim", "--help"], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0 and "example" in done.stdout


# --------------------------------------------------------------------------
# lbsim example


def test_example_lists_prints_and_writes(tmp_path):
    from click.testing import CliRunner

    from lbsim.cli import main

    runner = CliRunner()
    listing = runner.invoke(main, ["example"])
    assert listing.exit_code == 0
    assert [line.split()[0] for line in listing.output.splitlines()] == [name[:-5] for name in SCENARIOS]
    assert "the quickstart scenario" in listing.output

    printed = runner.invoke(main, ["example", "two_regions"])
    assert printed.exit_code == 0 and printed.output == (ROOT / "scenarios" / "two_regions.toml").read_text()

    out = tmp_path / "my.toml"
    written = runner.invoke(main, ["example", "two_regions.toml", "--out", str(out)])
    assert written.exit_code == 0 and out.read_text() == printed.output
    assert runner.invoke(main, ["validate", str(out)]).exit_code == 0

    unknown = runner.invoke(main, ["example", "two_region"])
    assert unknown.exit_code == 2 and "did you mean 'two_regions'" in unknown.output


# --------------------------------------------------------------------------
# the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the repository's sources (the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "CITATION.cff"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lbsim", src / "lbsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "scenarios", src / "scenarios")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True)  # fmt: skip
    (built,) = out.glob("lbsim-*.whl")
    return built


def test_wheel_carries_the_scenarios_license_and_citation(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"lbsim/scenarios/{name}" for name in SCENARIOS} <= names
    assert {"lbsim/py.typed", "lbsim/CITATION.cff", "lbsim/examples.py"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License: MIT" in text and "MIT License" in (ROOT / "LICENSE").read_text()


def test_installed_wheel_finds_its_scenarios(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)  # fmt: skip
    code = """
import sys
from lbsim import examples
print(examples.scenario_dir())
print(",".join(examples.example_names()))
"""
    # run from elsewhere with only the installed copy (and the environment's dependencies) on the path
    done = python(code, cwd=tmp_path, path=site)
    assert done.returncode == 0, done.stderr
    where, names = done.stdout.split()
    assert Path(where) == site / "lbsim" / "scenarios"
    assert names.split(",") == [name[:-5] for name in SCENARIOS]


# --------------------------------------------------------------------------
# dependencies


def test_extras_and_the_simpy_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for needed in ("jupyter", "nbconvert", "ipywidgets", "nbclient", "ipykernel"):
        assert any(req.startswith(needed) for req in extras["notebooks"]), needed
    assert any(req.startswith("ciw") for req in extras["bench"])
    # the kernel runs SimPy 4's queue itself (lbsim/engine/kernel.py): a new major version must not slip in
    assert "simpy>=4.1,<5" in project["dependencies"]
    import simpy

    assert simpy.__version__.split(".")[0] == "4"


# --------------------------------------------------------------------------
# the peer benchmark


def test_bench_peers_quick_mode_agrees(monkeypatch):
    pytest.importorskip("ciw")  # the bench extra; CI does not install it
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "bench_peers.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_peers", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    lines, agreed, rows = bench.run(scale=0.1, rounds=1)
    assert agreed == dict.fromkeys(
        ["M/M/1", "JSQ, 16 servers", "power of two, 16 servers", "JSQ, 128 servers", "power of two, 128 servers"], True
    ), "\n".join(lines)
    assert len(rows) == 5 and all(row.startswith("| ") and row.endswith(" |") for row in rows)
    report = "\n".join(lines)
    for contender in ("heapq loop", "SimPy callbacks", "SimPy processes", "Ciw", "lbsim"):
        assert contender in report
