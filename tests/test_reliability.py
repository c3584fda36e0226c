"""The reliability corpus: bad inputs, each rejected at load by one line naming its key.

Every row is a user mistake (a scenario file, a ``--set`` value, router
parameters, a sweep file, a CLI option, an output location) run through the
real command line. Each must exit with status 2, print one ``error:`` line
on stderr that names the expected key, show no traceback, and write nothing
in ``--out``. The classes of defect (issue 14): numbers that are not
finite, types read as something else, misspelt keys, tables that are not
validated, unreadable files, options parsed by hand, seeds the output tables
cannot store, and work that can never finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import lbsim
from lbsim.cli import main
from lbsim.errors import ScenarioError

ROOT = Path(__file__).parent.parent

#: a small scenario: two frontends, two backends, all rows start from it
BASE = """
name = "base"
[simulation]
horizon = 50.0
warmup = 5.0
[[frontends]]
name = "a"
rate = 1.0
[[frontends]]
name = "b"
rate = 1.0
[[backends]]
service = { kind = "saturating", c = 4.0, k = 2.0 }
[[backends]]
service = { kind = "saturating", c = 4.0, k = 2.0 }
[network]
delay = [[0.01, 0.02], [0.02, 0.01]]
"""

SWEEP = 'scenario = "base.toml"\nseeds = 1\n'

#: name: (arguments after the command, with {scn} the base scenario, {dir} the folder; the key named)
#: commands: "run" (with --out {dir}/out), or a full command line when the arguments start with a command
SET = {
    # numbers that are not finite (inf, 1e309 overflows to inf, nan)
    "rate inf": ("frontends.0.rate=inf", "frontends[0].rate"),
    "rate 1e309": ("frontends.0.rate=1e309", "frontends[0].rate"),
    "rate nan": ("frontends.0.rate=nan", "frontends[0].rate"),
    "horizon inf": ("simulation.horizon=inf", "simulation.horizon"),
    "warmup nan": ("simulation.warmup=nan", "simulation.warmup"),
    "job_scale inf": ("simulation.job_scale=inf", "simulation.job_scale"),
    "sample_interval inf": ("simulation.sample_interval=inf", "simulation.sample_interval"),
    "size_mean inf": ("jobs.size_mean=inf", "jobs.size_mean"),
    "size shape inf": ('jobs={size="lognormal", sigma=inf}', "jobs.sigma"),
    "delay inf": ("network.delay=inf", "network.delay"),
    "delay entry nan": ("network.delay=[[0.01, nan], [0.02, 0.01]]", "network.delay[0][1]"),
    "period inf": ('network={telemetry="periodic", period=inf}', "network.period"),
    "service c inf": ("backends.0.service.c=inf", "backends[0].service.c"),
    "max_load inf": ("backends.0.max_load=inf", "backends[0].max_load"),
    "schedule time nan": ("simulation.rate_schedule=[[nan, 1.0]]", "simulation.rate_schedule[0][0]"),
    "schedule time inf": ("frontends.0.rate_schedule=[[0, 1.0], [inf, 2.0]]", "frontends[0].rate_schedule[1][0]"),
    "antagonist schedule nan": ("backends.0.antagonist={schedule=[[nan, 0.5]]}", "backends[0].antagonist.schedule"),
    "antagonist hold inf": ("backends.0.antagonist={levels=[1.0, 0.5], hold=inf}", "backends[0].antagonist.hold"),
    # router parameters
    "dgdlb step inf": ('router={name="dgdlb", step=inf}', "router.step"),
    "dgdlb step 1e309": ('router={name="dgdlb", step=1e309}', "router.step"),
    "dgdlb step beyond precision": ('router={name="dgdlb", step=1e300}', "router.step"),  # NaN splits before
    "dgdlb interval nan": ('router={name="dgdlb", interval=nan}', "router.interval"),
    "prequal r_probe inf": ('router={name="prequal", r_probe=inf}', "router.r_probe"),
    "prequal q_rif nan": ('router={name="prequal", q_rif=nan}', "router.q_rif"),
    "power_of_d d string": ('router={name="power_of_d", d="2"}', "router.d"),
    "power_of_d d float": ('router={name="power_of_d", d=2.5}', "router.d"),
    "dgdlb interval bool": ('router={name="dgdlb", interval=true}', "router.interval"),
    "router parameter misspelt": ('router={name="dgdlb", stepp=0.1}', "router.stepp"),
    # types read as something else
    "horizon bool": ("simulation.horizon=true", "simulation.horizon"),
    "rate string": ('frontends.0.rate="2.0"', "frontends[0].rate"),
    "record_jobs string": ('simulation.record_jobs="no"', "simulation.record_jobs"),
    "seed float": ("simulation.seed=1.7", "simulation.seed"),
    "seed negative": ("simulation.seed=-1", "simulation.seed"),
    "seed beyond int64": ("simulation.seed=9223372036854775808", "simulation.seed"),
    "connect other ints": ("network.connect=[[1, 2], [1, 1]]", "network.connect[0][1]"),
    "name number": ("name=3", "name"),
    "max_load string": ('backends.0.max_load="2"', "backends[0].max_load"),
    # misspelt keys
    "misspelt simulation key": ("simulation.horizn=5", "simulation.horizn"),
    "misspelt rate": ("frontends.1.rat=1.0", "frontends[1].rat"),
    # network.jitter, a table like every other
    "jitter mean string": ('network.jitter={kind="exponential", mean="0.002"}', "network.jitter.mean"),
    "jitter unknown kind": ('network.jitter={kind="expo", mean=0.002}', "network.jitter.kind"),
    "jitter mean inf": ('network.jitter={kind="exponential", mean=inf}', "network.jitter.mean"),
    "jitter without kind": ("network.jitter={mean=0.002}", "network.jitter.kind"),
    "jitter shape inf": ('network.jitter={kind="lognormal", mean=0.002, sigma=inf}', "network.jitter.sigma"),
    "jitter misspelt key": ('network.jitter={kind="exponential", mean=0.002, meen=1}', "network.jitter.meen"),
    "jitter not a table": ("network.jitter=0.002", "network.jitter"),
    # work that can never finish or never produce a result
    "sample interval tiny": ("simulation.sample_interval=1e-9", "simulation.sample_interval"),
    "period tiny": ('network={telemetry="periodic", period=1e-9, delay=0.01}', "network.period"),
    "router tick tiny": ('router={name="dgdlb", interval=1e-9}', "router.interval"),
    "delay beyond horizon": ("network.delay=1e6", "network.delay"),
    "delay entry beyond horizon": ("network.delay=[[30.0, 40.0], [0.02, 0.01]]", "network.delay[0][0]"),
    "rate 1e300": ("frontends.0.rate=1e300", "frontends[0].rate"),
    "job_scale tiny": ("simulation.job_scale=1e-12", "frontends[0].rate"),
    "only zero-capacity backends": (
        "backends.0.antagonist={schedule=[[0, 0.0]]}",
        "network.connect[0]",
        ["--set", "network.connect=[[true, false], [true, true]]"],
    ),
}

CLI = {
    "--horizon inf": (["run", "{scn}", "--horizon", "inf"], "simulation.horizon"),
    "--job-scale nan": (["run", "{scn}", "--job-scale", "nan"], "simulation.job_scale"),
    "--seed negative": (["run", "{scn}", "--seed", "-1"], "simulation.seed"),
    "--seed beyond int64": (["run", "{scn}", "--seed", "99999999999999999999"], "simulation.seed"),
    "compare --seeds abc": (["compare", "{scn}", "--routers", "jsq", "--seeds", "abc"], "--seeds"),
    "compare --seeds 1,x": (["compare", "{scn}", "--routers", "jsq", "--seeds", "1,x"], "--seeds"),
    "compare --seeds 0": (["compare", "{scn}", "--routers", "jsq", "--seeds", "0"], "--seeds"),
    "compare --seeds -1,2": (["compare", "{scn}", "--routers", "jsq", "--seeds", "-1,2"], "--seeds"),
    "compare --seeds huge": (["compare", "{scn}", "--routers", "jsq", "--seeds", "1,9223372036854775808"], "--seeds"),
    "compare seeds past int64": (
        ["compare", "{scn}", "--routers", "jsq", "--seeds", "2", "--set", "simulation.seed=9223372036854775807"],
        "seeds",
    ),
    "compare --workers 0": (["compare", "{scn}", "--routers", "jsq", "--workers", "0"], "workers"),
    "compare router step inf": (["compare", "{scn}", "--routers", "dgdlb:step=inf"], "router.step"),
    "scaling --workers 0": (["scaling", "{scn}", "--workers", "0", "--scales", "1", "--seeds", "1"], "workers"),
    "scaling --scales inf": (["scaling", "{scn}", "--scales", "1,inf", "--seeds", "1"], "--scales"),
    "scaling --scales negative": (["scaling", "{scn}", "--scales", "1,-0.1", "--seeds", "1"], "--scales"),
    "scaling --scales words": (["scaling", "{scn}", "--scales", "one", "--seeds", "1"], "--scales"),
    "scaling --seeds 0": (["scaling", "{scn}", "--scales", "1", "--seeds", "0"], "seeds"),
    "fluid --dt inf": (["fluid", "{scn}", "--dt", "inf"], "dt"),
    "fluid --dt 0": (["fluid", "{scn}", "--dt", "0"], "dt"),
    "fluid --horizon nan": (["fluid", "{scn}", "--horizon", "nan"], "horizon"),
}

#: name: (scenario file text, the key named): mistakes as they are made in a file, not through --set
SCENARIO_FILES = {
    "misspelt rate, no rate": (BASE.replace("rate = 1.0", "rat = 1.0", 1), "frontends[0].rat"),
    "horizon 1e309": (BASE.replace("horizon = 50.0", "horizon = 1e309"), "simulation.horizon"),
    "horizon a string": (BASE.replace("horizon = 50.0", 'horizon = "50"'), "simulation.horizon"),
    "service inf in a table": (BASE.replace("c = 4.0", "c = inf", 1), "backends[0].service.c"),
    "jitter kind misspelt": (BASE + 'jitter = { kind = "exponentail", mean = 0.002 }\n', "network.jitter.kind"),
    "router step inf": (BASE + '[router]\nname = "dgdlb"\nstep = inf\n', "router.step"),
    "router parameter a string": (BASE + '[router]\nname = "dgdlb"\nstep = "0.1"\n', "router.step"),
}

#: name: (file name, bytes, command); the key named is the file's path
FILES = {
    "scenario not UTF-8": ("bad.toml", b"name = '\xff\xfe'\n", "run"),
    "scenario binary": ("bad.toml", bytes(range(256)), "run"),
    "scenario nested deep": ("bad.toml", b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "run"),
    "scenario missing": ("nothere.toml", None, "run"),
    "sweep not UTF-8": ("bad.toml", b"seeds = '\xff'\n", "sweep"),
    "sweep nested deep": ("bad.toml", b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "sweep"),
    "sweep names a directory": ("bad.toml", b'scenario = "adir"\n', "sweep"),
}

#: name: (sweep file content after the scenario line, the key named)
SWEEPS = {
    "sweep seeds float": ("seeds = [1.5]", "seeds"),
    "sweep seeds beyond int64": ("seeds = [9223372036854775807, 1]\n", None),  # valid: the largest seed
    "sweep seed too large": ("seeds = [1, 9223372036854775808]", "seeds"),
    "sweep job_scales inf": ("job_scales = [1.0, inf]", "job_scales[1]"),
    "sweep grid rate inf": ('grid = { "frontends.0.rate" = [1.0, inf] }', "grid.frontends.0.rate[1]"),
    "sweep grid rate string": ('grid = { "frontends.0.rate" = [1.0, "2"] }', "frontends[0].rate"),
    "sweep router step inf": ('routers = ["dgdlb:step=inf"]', "router.step"),
    "sweep unknown key": ("sedes = 2", "sedes"),
    "sweep set inf": ('set = { "simulation.horizon" = inf }', "set.simulation.horizon"),
    "sweep router table inf": ('routers = [{ name = "prequal", r_probe = inf }]', "routers[0].r_probe"),
    "sweep seeds a string": ('seeds = "3"', "seeds"),
    "sweep count past int64": ("seeds = 9223372036854775807", "seeds"),
    "sweep count never finishing": ("seeds = 100000000", "seeds"),
}
SWEEPS = {k: v for k, v in SWEEPS.items() if v[1] is not None}


def _write_base(folder: Path) -> Path:
    scn = folder / "base.toml"
    scn.write_text(BASE)
    (folder / "adir").mkdir(exist_ok=True)
    return scn


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=True)


def _check(result, out: Path, key: str) -> None:
    output = result.output if hasattr(result, "output") else ""
    stderr = getattr(result, "stderr", output)
    assert result.exit_code == 2, (result.exit_code, stderr, result.exception)
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert key in lines[0], (key, lines[0])
    assert not out.exists() or not any(out.iterdir()), f"wrote {sorted(out.iterdir())}"


def _out_args(command: str, out: Path) -> list[str]:
    return ["--out", str(out)] if command in ("run", "sweep", "fluid", "scaling", "compare") else []


@pytest.mark.parametrize("name", SET)
def test_bad_scenario_value_is_named(name: str, tmp_path: Path) -> None:
    text, key, *extra = SET[name]
    scn, out = _write_base(tmp_path), tmp_path / "out"
    args = ["run", str(scn), "--quiet", "--set", text, *(extra[0] if extra else []), "--out", str(out)]
    _check(_invoke(args), out, key)


@pytest.mark.parametrize("name", CLI)
def test_bad_option_is_named(name: str, tmp_path: Path) -> None:
    args, key = CLI[name]
    scn, out = _write_base(tmp_path), tmp_path / "out"
    args = [a.replace("{scn}", str(scn)) for a in args]
    _check(_invoke([*args, *_out_args(args[0], out)]), out, key)


@pytest.mark.parametrize("name", SCENARIO_FILES)
def test_bad_scenario_file_is_named(name: str, tmp_path: Path) -> None:
    text, key = SCENARIO_FILES[name]
    scn, out = tmp_path / "bad.toml", tmp_path / "out"
    scn.write_text(text)
    _check(_invoke(["run", str(scn), "--quiet", "--out", str(out)]), out, key)


@pytest.mark.parametrize("name", FILES)
def test_unreadable_file_is_named(name: str, tmp_path: Path) -> None:
    filename, content, command = FILES[name]
    _write_base(tmp_path)
    path, out = tmp_path / filename, tmp_path / "out"
    if content is not None:
        path.write_bytes(content)
    _check(_invoke([command, str(path), "--out", str(out)]), out, filename if "directory" not in name else "adir")


@pytest.mark.parametrize("name", SWEEPS)
def test_bad_sweep_is_named(name: str, tmp_path: Path) -> None:
    text, key = SWEEPS[name]
    _write_base(tmp_path)
    spec, out = tmp_path / "sweep.toml", tmp_path / "out"
    spec.write_text(f'scenario = "base.toml"\n{text}\n')
    _check(_invoke(["sweep", str(spec), "--out", str(out), "--quiet"]), out, key)


OUTPUTS = {
    "--out empty": lambda tmp: "",
    "--out under a regular file": lambda tmp: str(tmp / "afile" / "out"),
}


@pytest.mark.parametrize("name", OUTPUTS)
def test_bad_output_location_is_named(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # (`--out ''` would write in the working directory)
    scn = _write_base(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = OUTPUTS[name](tmp_path)
    result = _invoke(["run", str(scn), "--quiet", "--horizon", "20", "--out", out])
    _check(result, tmp_path / "nothing", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "base.toml"]  # nothing written


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes in any directory")
def test_unwritable_output_location_is_named(tmp_path: Path) -> None:
    scn, locked = _write_base(tmp_path), tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = _invoke(["run", str(scn), "--quiet", "--horizon", "20", "--out", str(locked / "out")])
        _check(result, locked / "out", "--out")
    finally:
        locked.chmod(0o700)


# -- the same through a fresh interpreter, as a user runs it -------------------------------
@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["run", "{scn}", "--set", "frontends.0.rate=inf"], "frontends[0].rate"),
        (["compare", "{scn}", "--routers", "jsq", "--seeds", "1,x"], "--seeds"),
        (["run", "{scn}", "--set", 'network.jitter={kind="exponential", mean="0.002"}'], "network.jitter.mean"),
        (["validate", "{dir}/adir"], "adir"),
    ],
)
def test_bad_input_in_a_subprocess(args: list[str], key: str, tmp_path: Path) -> None:
    scn, out = _write_base(tmp_path), tmp_path / "out"
    args = [a.replace("{scn}", str(scn)).replace("{dir}", str(tmp_path)) for a in args]
    args += _out_args(args[0], out)
    done = subprocess.run(
        [sys.executable, "-m", "lbsim", *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1 and key in done.stderr, done.stderr
    assert not out.exists()


# -- the Python API checks its own arguments --------------------------------------------------
from lbsim.experiments import compare  # noqa: E402


def _scenario():
    return lbsim.Scenario.from_dict(__import__("tomllib").loads(BASE))


API = {
    "simulate seed string": (lambda s: lbsim.simulate(s, seed="x"), "seed"),
    "simulate seed negative": (lambda s: lbsim.simulate(s, seed=-1), "seed"),
    "simulate seed float": (lambda s: lbsim.simulate(s, seed=1.7), "seed"),
    "simulate seed bool": (lambda s: lbsim.simulate(s, seed=True), "seed"),
    "simulate seed beyond int64": (lambda s: lbsim.simulate(s, seed=2**63), "seed"),
    "simulate a dict": (lambda s: lbsim.simulate(s.to_dict()), "scenario"),
    "simulate a path": (lambda s: lbsim.simulate(str(ROOT / "scenarios" / "two_regions.toml")), "scenario"),
    "simulate router not a name": (lambda s: lbsim.simulate(s, router=["jsq"]), "router"),
    "simulate router param inf": (lambda s: lbsim.simulate(s, "dgdlb", step=float("inf")), "router.step"),
    "compare routers a string": (lambda s: compare(s, "jsq", 1), "routers"),
    "compare seeds float": (lambda s: compare(s, ["jsq"], 1.5), "seeds"),
    "compare a dict": (lambda s: compare(s.to_dict(), ["jsq"], 1), "scenario"),
    "scaling scales a string": (lambda s: lbsim.scaling(s, scales="1,0.1"), "scales"),
    "scaling scales inf": (lambda s: lbsim.scaling(s, scales=[1.0, float("inf")]), "scales"),
    "fluid dt inf": (lambda s: lbsim.fluid(s, dt=float("inf")), "dt"),
    "fluid a dict": (lambda s: lbsim.fluid(s.to_dict()), "scenario"),
    "from_dict overrides a string": (lambda s: lbsim.Scenario.from_dict(s.to_dict(), "simulation.seed=2"), "overrides"),
    "load_scenario overrides a string": (
        lambda s: lbsim.load_scenario(ROOT / "scenarios" / "two_regions.toml", "simulation.seed=2"),
        "overrides",
    ),
}


@pytest.mark.parametrize("name", API)
def test_api_names_its_bad_argument(name: str) -> None:
    call, key = API[name]
    with pytest.raises(ScenarioError) as error:
        call(_scenario())
    assert error.value.key == key, str(error.value)


def test_corpus_size() -> None:
    """Issue 14 asks for 60+ bad inputs over every class."""
    assert len(SET) + len(CLI) + len(SCENARIO_FILES) + len(FILES) + len(SWEEPS) + len(OUTPUTS) + len(API) >= 60
