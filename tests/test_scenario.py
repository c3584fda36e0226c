"""Scenarios: validation errors that name the key, ``--set`` overrides, the capacity warning, rate schedules.

Errors are checked on their ``key`` (the dotted path a user must fix, list
elements as ``[i]``) and on their message (what is wrong, and the closest
valid name for a typo), exactly as a user sees them.
"""

from __future__ import annotations

import copy
import math
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import Z, backend, scenario

import lbsim
from lbsim.scenario import CapacityWarning, apply_override, load_scenario, parse_value


def _scenario_files() -> list[Path]:
    """The scenario files in scenarios/ (sweep files, which name a scenario to run, are not scenarios)."""
    files = sorted((Path(__file__).parent.parent / "scenarios").glob("*.toml"))
    return [p for p in files if not isinstance(tomllib.loads(p.read_text()).get("scenario"), str)]


SCENARIOS = _scenario_files()

BASE = {
    "simulation": {"horizon": 100.0, "warmup": 10.0, "seed": 3},
    "jobs": {"size": "exponential", "size_mean": 1.0},
    "frontends": [{"name": "a", "rate": 0.7}, {"name": "b", "rate": 0.5}],
    "backends": [
        {"service": {"kind": "constant", "c": 1.0}},
        {"service": {"kind": "saturating", "c": 1.0, "k": 1.0}},
    ],
    "network": {"delay": [[0.1, 0.2], [0.2, 0.1]]},
    "router": {"name": "random"},
}


def _data(**changes) -> dict:
    """BASE with some keys set, as dotted paths: ``_data(**{"frontends.1.rate": -2})``."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def test_base_scenario_is_valid():
    s = lbsim.Scenario.from_dict(BASE)
    assert s.num_frontends == 2 and s.num_backends == 2
    assert s.mean_size == 1.0
    np.testing.assert_array_equal(s.delay, [[0.1, 0.2], [0.2, 0.1]])
    assert s.connect.all()


# (changes, expected key, words the message must contain)
INVALID = {
    # unknown keys, with the closest valid key suggested
    "unknown section": ({"simulaton": {}}, "simulaton", ["unknown key", "'simulation'"]),
    "unknown simulation key": ({"simulation.horizn": 5}, "simulation.horizn", ["unknown key", "'horizon'"]),
    "unknown frontend key": ({"frontends.1.rat": 3}, "frontends[1].rat", ["unknown key", "'rate'"]),
    "unknown backend key": ({"backends.1.disipline": "ps"}, "backends[1].disipline", ["'discipline'"]),
    "unknown network key": ({"network.latencies": 0.1}, "network.latencies", ["'latency'"]),
    # matrix shapes
    "delay rows": ({"network.delay": [[0.1, 0.2]]}, "network.delay", ["one row per frontend (2)", "1"]),
    "delay columns": ({"network.delay": [[0.1, 0.2], [0.1]]}, "network.delay[1]", ["one entry per backend (2)"]),
    "negative delay": ({"network.delay": [[0.1, -0.2], [0.1, 0.1]]}, "network.delay[0][1]", [">= 0", "-0.2"]),
    "negative scalar delay": ({"network.delay": -1.0}, "network.delay", [">= 0"]),
    "connect rows": ({"network.connect": [[True, True]]}, "network.connect", ["one row per frontend (2)"]),
    "connect columns": ({"network.connect": [[True], [True, False]]}, "network.connect[0]", ["one entry per backend"]),
    "frontend without backend": (
        {"network.connect": [[True, True], [False, False]]},
        "network.connect[1]",
        ["no usable backend", "b"],
    ),
    # numbers out of range
    "zero rate": ({"frontends.1.rate": 0}, "frontends[1].rate", ["> 0", "0"]),
    "negative rate": ({"frontends.1.rate": -2}, "frontends[1].rate", ["> 0", "-2"]),
    "zero size_mean": ({"jobs.size_mean": 0}, "jobs.size_mean", ["> 0"]),
    "negative size_mean": ({"jobs.size_mean": -1.5}, "jobs.size_mean", ["> 0", "-1.5"]),
    "warmup at horizon": ({"simulation.warmup": 100.0}, "simulation.warmup", ["< horizon", "100"]),
    "warmup after horizon": ({"simulation.warmup": 150.0}, "simulation.warmup", ["< horizon", "150"]),
    "zero job_scale": ({"simulation.job_scale": 0}, "simulation.job_scale", ["> 0"]),
    "negative job_scale": ({"simulation.job_scale": -1}, "simulation.job_scale", ["> 0", "-1"]),
    "zero horizon": ({"simulation.horizon": 0, "simulation.warmup": 0}, "simulation.horizon", ["> 0"]),
    "zero sample_interval": ({"simulation.sample_interval": 0}, "simulation.sample_interval", ["> 0"]),
    "negative seed": ({"simulation.seed": -1}, "simulation.seed", [">= 0"]),
    "zero period": ({"network.period": 0}, "network.period", ["> 0"]),
    # routers
    "unknown router": ({"router.name": "jsqq"}, "router.name", ["unknown router 'jsqq'", "'jsq'"]),
    "unknown router parameter": (
        {"router": {"name": "power_of_d", "dd": 3}},
        "router.dd",
        ["'dd'", "'d'", "power_of_d"],
    ),
    "bad router parameter": ({"router": {"name": "power_of_d", "d": 0}}, "router.d", [">= 1", "0"]),
    # rate families
    "unknown rate family": (
        {"backends.1.service": {"kind": "saturatng", "c": 1.0, "k": 1.0}},
        "backends[1].service.kind",
        ["unknown rate family 'saturatng'", "'saturating'"],
    ),
    "missing rate parameter": (
        {"backends.1.service": {"kind": "saturating", "c": 1.0}},
        "backends[1].service.k",
        ["missing"],
    ),
    "negative rate parameter": (
        {"backends.1.service": {"kind": "saturating", "c": -1.0, "k": 1.0}},
        "backends[1].service.c",
        ["> 0", "-1"],
    ),
    "unknown rate parameter": (
        {"backends.1.service": {"kind": "saturating", "c": 1.0, "kk": 1.0}},
        "backends[1].service.kk",
        ["'kk'", "'k'"],
    ),
    "power exponent above 1": (
        {"backends.1.service": {"kind": "power", "c": 1.0, "a": 1.5}},
        "backends[1].service.a",
        ["<= 1", "1.5"],
    ),
    "bad discipline": ({"backends.1.discipline": "lifo"}, "backends[1].discipline", ["'ps'", "'fifo'", "lifo"]),
    "max_load with fifo": (
        {"backends.1.discipline": "fifo", "backends.1.max_load": 2.0},
        "backends[1].max_load",
        ["'ps'"],
    ),
    "zero max_load": ({"backends.1.max_load": 0}, "backends[1].max_load", ["> 0"]),
    # size distributions
    "unknown distribution": ({"jobs.size": "lognorml"}, "jobs.size", ["unknown", "'lognormal'"]),
    "unknown distribution parameter": (
        {"jobs": {"size": "lognormal", "sigm": 1.0}},
        "jobs.sigm",
        ["'sigm'", "'sigma'"],
    ),
    "lognormal sigma": ({"jobs": {"size": "lognormal", "sigma": -1.0}}, "jobs.sigma", ["> 0", "-1"]),
    "pareto alpha": ({"jobs": {"size": "pareto", "alpha": 1.0}}, "jobs.alpha", ["> 1"]),
    "gamma shape": ({"jobs": {"size": "gamma", "shape": 0.0}}, "jobs.shape", ["> 0"]),
    "uniform spread": ({"jobs": {"size": "uniform", "spread": 1.5}}, "jobs.spread", ["<= 1", "1.5"]),
    "empirical without values": ({"jobs": {"size": "empirical", "values": []}}, "jobs.values", ["empty"]),
    "empirical negative value": ({"jobs": {"size": "empirical", "values": [1.0, -1.0]}}, "jobs.values[1]", ["> 0"]),
    # other sections
    "bad telemetry": ({"network.telemetry": "delayd"}, "network.telemetry", ["'delayed'", "delayd"]),
    "jitter without mean": ({"network.jitter": {"kind": "exponential"}}, "network.jitter.mean", ["> 0"]),
    "duplicate frontend names": ({"frontends.1.name": "a"}, "frontends", ["duplicate", "'a'"]),
    "schedule times": ({"simulation.rate_schedule": [[10.0, 1.0], [5.0, 2.0]]}, "simulation.rate_schedule", ["increasing"]),
    "schedule multiplier": ({"simulation.rate_schedule": [[10.0, -1.0]]}, "simulation.rate_schedule", [">= 0"]),
    "antagonist without hold": (
        {"backends.0.antagonist": {"levels": [0.5, 1.0]}},
        "backends[0].antagonist.hold",
        ["required"],
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_scenario_names_the_key(case):
    changes, key, words = INVALID[case]
    with pytest.raises(lbsim.ScenarioError) as info:
        lbsim.Scenario.from_dict(_data(**changes))
    error = info.value
    assert error.key == key, f"{case}: key {error.key!r}, expected {key!r} ({error})"
    for word in words:
        assert word in error.message, f"{case}: {word!r} not in {error.message!r}"
    assert str(error) == f"{key}: {error.message}"
    assert "\n" not in str(error)


def test_missing_sections_are_required():
    for section in ("frontends", "backends"):
        data = _data()
        del data[section]
        with pytest.raises(lbsim.ScenarioError) as info:
            lbsim.Scenario.from_dict(data)
        assert info.value.key == section
    with pytest.raises(lbsim.ScenarioError) as info:
        lbsim.Scenario.from_dict(_data(frontends=[]))
    assert info.value.key == "frontends"


def test_weighted_router_weights_are_checked_when_the_scenario_is_loaded():
    """A scenario is validated once, at the edge (STYLE.md): a wrong weights shape must not wait for the run."""
    with pytest.raises(lbsim.ScenarioError) as info:
        lbsim.Scenario.from_dict(_data(router={"name": "weighted", "weights": [1.0, 2.0, 3.0]}))
    assert info.value.key == "router.weights"


def test_defaults_and_scalar_delay():
    s = lbsim.Scenario.from_dict(_data(network={"delay": 0.25}))
    np.testing.assert_array_equal(s.delay, np.full((2, 2), 0.25))
    s = lbsim.Scenario.from_dict({"frontends": [{"rate": 1.0}], "backends": [{"service": {"kind": "linear", "r": 2}}]})
    assert s.simulation.horizon == 2000.0 and s.simulation.warmup == 200.0
    assert s.jobs.size == "exponential" and s.mean_size == 1.0
    assert s.network.telemetry == "delayed" and s.router.name == "jsq"
    assert s.backends[0].discipline == "ps"


def test_the_old_key_network_latency_loads_identically():
    """``network.latency`` (the delays' name before 0.2) is still accepted and gives the same scenario."""
    old = copy.deepcopy(BASE)
    old["network"] = {"latency": old["network"].pop("delay")}
    s_old, s_new = lbsim.Scenario.from_dict(old), lbsim.Scenario.from_dict(BASE)
    np.testing.assert_array_equal(s_old.delay, s_new.delay)
    np.testing.assert_array_equal(s_old.latency, s_new.delay)  # the old attribute name, an alias
    assert s_old.network.delay == s_new.network.delay
    s_old = lbsim.Scenario.from_dict(old, overrides=["network.latency=0.5"])  # --set under the old name
    np.testing.assert_array_equal(s_old.delay, lbsim.Scenario.from_dict(BASE, overrides=["network.delay=0.5"]).delay)
    with pytest.raises(lbsim.ScenarioError) as info:  # errors name the key as the file spelt it
        lbsim.Scenario.from_dict({**old, "network": {"latency": [[0.1, 0.2]]}})
    assert info.value.key == "network.latency"


def test_job_scale_scales_the_mean_size():
    s = lbsim.Scenario.from_dict(_data(**{"simulation.job_scale": 0.1, "jobs.size_mean": 3.0}))
    assert s.mean_size == pytest.approx(0.3)


# -- overrides --------------------------------------------------------------------------
def test_overrides_in_from_dict():
    original = copy.deepcopy(BASE)
    s = lbsim.Scenario.from_dict(
        BASE,
        overrides=[
            "frontends.0.rate=2",
            'router.name="jsq"',
            "network.delay=0.5",
            "simulation.rate_schedule=[[10, 2.0]]",
            "backends[1].service={ kind = \"batch\", a = 0.1, b = 0.5 }",
            "jobs.size=lognormal",
            "jobs.sigma=0.5",
        ],
    )
    assert s.frontends[0].rate == 2.0
    assert s.router.name == "jsq"
    np.testing.assert_array_equal(s.delay, np.full((2, 2), 0.5))
    assert s.simulation.rate_schedule == [(10.0, 2.0)]
    assert s.backends[1].service.kind == "batch" and s.backends[1].service.b == 0.5
    assert s.jobs.size == "lognormal" and s.jobs.distribution.sigma == 0.5
    assert BASE == original, "from_dict must not modify its input"


def test_apply_override_parses_toml_values():
    data = copy.deepcopy(BASE)
    apply_override(data, "frontends[1].rate=3")
    apply_override(data, " simulation.seed = 42 ")
    apply_override(data, "router={ name = \"power_of_d\", d = 3 }")
    apply_override(data, "network.telemetry=periodic")  # a bare string
    apply_override(data, "network.connect=[[true, false], [true, true]]")
    apply_override(data, "simulation.record_jobs=false")
    assert data["frontends"][1]["rate"] == 3
    assert data["simulation"]["seed"] == 42
    assert data["router"] == {"name": "power_of_d", "d": 3}
    assert data["network"]["telemetry"] == "periodic"
    assert data["network"]["connect"] == [[True, False], [True, True]]
    assert data["simulation"]["record_jobs"] is False
    assert parse_value("1e-3") == 0.001 and parse_value('"x=1"') == "x=1"
    s = lbsim.Scenario.from_dict(data)
    assert s.router.params == {"d": 3} and not s.connect[0, 1]


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("frontends.0.rate", "frontends.0.rate", ["key.path=value"]),
        ("frontends.5.rate=2", "frontends.5", ["no element 5", "2"]),
        ("simulation.horizon.x=2", "simulation.horizon", ["not a table"]),
        ("simulation.horizn=2", "simulation.horizn", ["'horizon'"]),
        ("frontends.0.rate=-2", "frontends[0].rate", ["> 0", "-2"]),
        ('router.name="jsqq"', "router.name", ["'jsq'"]),
        ("network.delay=[[0.1, 0.2]]", "network.delay", ["one row per frontend"]),
    ],
)
def test_bad_overrides_name_the_key(override, key, words):
    with pytest.raises(lbsim.ScenarioError) as info:
        lbsim.Scenario.from_dict(BASE, overrides=[override])
    assert info.value.key == key
    for word in words:
        assert word in info.value.message


def test_replace_changes_dotted_keys():
    s = lbsim.Scenario.from_dict(BASE)
    t = s.replace(**{"simulation.seed": 9, "frontends.1.rate": 0.25})
    assert t.simulation.seed == 9 and t.frontends[1].rate == 0.25
    assert s.simulation.seed == 3 and s.frontends[1].rate == 0.5
    assert lbsim.Scenario.from_dict(s.to_dict()).to_dict() == s.to_dict()


# -- the capacity warning --------------------------------------------------------------
def _write(tmp_path: Path, data: dict) -> Path:
    """A scenario file from a dict (a small TOML writer: enough for these tables)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(float(v)) if isinstance(v, float) else str(v)

    lines = []
    for section, table in data.items():
        if isinstance(table, list):
            for row in table:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in row.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    path = tmp_path / "scenario.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _load_warnings(path: Path, overrides=()) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_scenario(path, overrides)
    return [str(w.message) for w in caught if issubclass(w.category, CapacityWarning)]


def test_capacity_warning(tmp_path):
    """Total rate 1.2 against capacity 2 (constant 1 + saturating sup 1): no warning until the rate reaches 2."""
    path = _write(tmp_path, BASE)
    assert _load_warnings(path) == []
    assert lbsim.Scenario.from_dict(BASE).capacity_warning() is None
    with pytest.warns(CapacityWarning, match="capacity"):
        load_scenario(path, ["frontends.0.rate=1.5"])  # 2.0 >= 2.0
    assert len(_load_warnings(path, ["frontends.0.rate=1.6"])) == 1
    # A rate schedule's peak counts: 1.2 * 2 >= 2.
    assert len(_load_warnings(path, ["simulation.rate_schedule=[[50.0, 2.0]]"])) == 1
    # A backend no frontend may use adds no capacity: 1.2 >= 1.
    assert len(_load_warnings(path, ["network.connect=[[true, false], [true, false]]"])) == 1
    # Unbounded rate families never saturate.
    assert _load_warnings(path, ["frontends.0.rate=100", 'backends.0.service={ kind = "linear", r = 1.0 }']) == []
    # The message says what is reached; warn=False is quiet.
    message = lbsim.Scenario.from_dict(BASE, ["frontends.0.rate=1.5"]).capacity_warning()
    assert "2" in message and "capacity" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(path, ["frontends.0.rate=1.5"], warn=False)


def test_load_scenario_names_the_file_when_missing_or_broken(tmp_path):
    with pytest.raises(lbsim.ScenarioError) as info:
        load_scenario(tmp_path / "nope.toml")
    assert "nope.toml" in info.value.key and "no such file" in info.value.message
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation\nhorizon = 1\n")
    with pytest.raises(lbsim.ScenarioError) as info:
        load_scenario(bad)
    assert "bad.toml" in info.value.key and "TOML" in info.value.message


def test_load_scenario_takes_the_file_name_as_default_name(tmp_path):
    assert load_scenario(_write(tmp_path, BASE)).name == "scenario"


# -- rate schedules -----------------------------------------------------------------------
def _schedule_scenario(schedule=None, horizon=1020.0) -> lbsim.Scenario:
    """Two frontends, 4 jobs/s in all (sbar = 0.5), served fast enough that every job finishes within seconds."""
    return scenario(
        [backend("linear", r=20.0)],
        [1.2, 0.8],
        horizon=horizon,
        seed=5,
        job_scale=0.5,
        **({"rate_schedule": schedule} if schedule else {}),
    )


def _arrivals(result: lbsim.Result, until: float) -> np.ndarray:
    """Arrival times before ``until`` (checked complete: job ids are given in arrival order)."""
    jobs = result.jobs[result.jobs["t_arrival"] < until]
    assert (jobs["job_id"].to_numpy() == np.arange(len(jobs))).all(), "a job that arrived before `until` is missing"
    assert (result.jobs["job_id"] == len(jobs)).any()
    return jobs["t_arrival"].to_numpy()


def test_rate_schedule_doubles_the_arrival_count():
    """Multiplier 2 from T on: arrivals in [0, T) and [T, 2T) are Poisson(4T) and Poisson(8T)."""
    T, job_rate = 500.0, 4.0
    t = _arrivals(lbsim.simulate(_schedule_scenario([[T, 2.0]])), 2 * T)
    before, after = int((t < T).sum()), int((t >= T).sum())
    for count, mean in ((before, job_rate * T), (after, 2 * job_rate * T)):
        assert abs(count - mean) <= Z * math.sqrt(mean), f"{count} arrivals where Poisson({mean:g}) was expected"
    # The ratio itself: after - 2 before has mean 0 and variance 8T + 4 (4T).
    assert abs(after - 2 * before) <= Z * math.sqrt(2 * job_rate * T + 4 * job_rate * T)


def test_rate_schedule_is_an_exact_time_change():
    """The same unit-rate points, mapped through the cumulative multiplier: t -> T + (t - T)/2 after T.

    Same seed, same jobs: each job of the scheduled run is the plain run's
    job with the same id, at the mapped time and with the same size.
    """
    T = 300.0
    plain = lbsim.simulate(_schedule_scenario())
    doubled = lbsim.simulate(_schedule_scenario([[T, 2.0]]))
    p = plain.jobs.set_index("job_id")
    d = doubled.jobs.set_index("job_id")
    common = d.index.intersection(p.index)
    assert len(common) > 2000
    t = p.loc[common, "t_arrival"].to_numpy()
    mapped = np.where(t < T, t, T + (t - T) / 2.0)
    np.testing.assert_allclose(d.loc[common, "t_arrival"], mapped, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(d.loc[common, "size"], p.loc[common, "size"])
    np.testing.assert_array_equal(d.loc[common, "frontend"], p.loc[common, "frontend"])


def test_rate_schedule_zero_pauses_arrivals():
    T1, T2 = 200.0, 400.0
    t = _arrivals(lbsim.simulate(_schedule_scenario([[T1, 0.0], [T2, 1.0]])), 600.0)
    assert not ((t >= T1) & (t < T2)).any()
    for count, width in (((t < T1).sum(), T1), (((t >= T2) & (t < 600.0)).sum(), 600.0 - T2)):
        assert abs(count - 4.0 * width) <= Z * math.sqrt(4.0 * width)


# -- shipped scenarios ------------------------------------------------------------------
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_loads_and_runs(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CapacityWarning)
        s = load_scenario(path)
    assert s.name
    assert path.read_text().lstrip().startswith("#"), "each scenario starts with a comment saying what it shows"
    short = s.replace(**{"simulation.horizon": 10.0, "simulation.warmup": 1.0})
    result = lbsim.simulate(short)
    assert result.counts["jobs_arrived"] > 0


def test_scenarios_directory_is_not_empty():
    assert SCENARIOS, "scenarios/ holds no TOML files"


def test_a_scenario_error_survives_pickling():
    """Raised in a worker process (sweeps, compare), the error crosses back with its key and message."""
    import pickle

    from lbsim.errors import ScenarioError

    again = pickle.loads(pickle.dumps(ScenarioError("router.name", "unknown router 'jsk'")))
    assert isinstance(again, ScenarioError) and (again.key, again.message) == ("router.name", "unknown router 'jsk'")


# -- one rule for every number and type (issue 14) -------------------------------------------
def test_check_finite_names_the_first_non_finite_number_by_its_path():
    from lbsim.registry import check_finite

    check_finite({"a": [1, 2.5, {"b": "inf"}], "c": True}, "")  # strings and booleans are not numbers
    with pytest.raises(lbsim.ScenarioError) as error:
        check_finite({"a": [{"b": 1.0}, {"b": [0.0, math.nan]}]}, "t")
    assert (error.value.key, error.value.message) == ("t.a[1].b[1]", "must be finite, got nan")


def test_integers_are_floats_but_nothing_else_is():
    """Strict types: ``rate = 2`` is a rate; ``"2"``, ``true`` are not (pydantic's lax mode read both)."""
    data = copy.deepcopy(BASE)
    data["frontends"][0]["rate"] = 2
    assert lbsim.Scenario.from_dict(data).frontends[0].rate == 2.0
    for value in ("2", True):
        data["frontends"][0]["rate"] = value
        with pytest.raises(lbsim.ScenarioError) as error:
            lbsim.Scenario.from_dict(data)
        assert error.value.key == "frontends[0].rate"


def test_strict_tables_round_trip_through_to_dict():
    """Schedules (stored as tuples), jitter (a table with shape parameters) survive to_dict -> from_dict."""
    data = copy.deepcopy(BASE)
    data["simulation"]["rate_schedule"] = [[0, 1.0], [50, 0.5]]
    data["network"]["jitter"] = {"kind": "lognormal", "mean": 0.01, "sigma": 0.5}
    s = lbsim.Scenario.from_dict(data)
    again = lbsim.Scenario.from_dict(s.to_dict())
    assert again.to_dict() == s.to_dict()
    dist, mean = again.network.jitter_distribution
    assert (dist.name, mean, again.to_dict()["network"]["jitter"]["sigma"]) == ("lognormal", 0.01, 0.5)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"simulation.sample_interval": 1e-7}, "simulation.sample_interval"),  # 1e9 samples of 100 s
        ({"network.telemetry": "periodic", "network.period": 1e-7}, "network.period"),
        ({"router": {"name": "dgdlb", "interval": 1e-7}}, "router.interval"),
        ({"frontends.0.rate": 1e9}, "frontends[0].rate"),  # 1e11 jobs over 100 s
        ({"network.delay": 57.5}, "network.delay"),  # round trip 115 s = horizon + drain (100 / 4) - warmup
        ({"network.delay": 45.0, "simulation.drain": False}, "network.delay"),  # 90 s = horizon - warmup
    ],
)
def test_work_that_never_finishes_is_refused_at_load(override, key):
    data = copy.deepcopy(BASE)
    for path, value in override.items():
        lbsim.scenario._set_path(data, path.split("."), value)
    with pytest.raises(lbsim.ScenarioError) as error:
        lbsim.Scenario.from_dict(data)
    assert error.value.key == key, str(error.value)


def test_the_limits_leave_room_for_long_fine_runs():
    """Just inside each limit loads: 1e8 samples, a round trip shorter than the window and its drain."""
    data = copy.deepcopy(BASE)
    data["simulation"]["sample_interval"] = 100.0 / 10**8
    data["network"]["delay"] = 57.4
    lbsim.Scenario.from_dict(data)


def test_connect_reads_a_zero_one_matrix_as_booleans():
    """A 0/1 compatibility matrix (a common way to write one) is the same graph as true/false; 2 is not a flag."""
    base = {"frontends": [{"rate": 1.0}] * 2, "backends": [{"service": {"kind": "constant", "c": 2.0}}] * 2}
    ones = lbsim.Scenario.from_dict({**base, "network": {"connect": [[1, 0], [1, 1]]}})
    flags = lbsim.Scenario.from_dict({**base, "network": {"connect": [[True, False], [True, True]]}})
    assert (ones.connect == flags.connect).all() and ones.connect.dtype == bool
    with pytest.raises(lbsim.ScenarioError) as err:
        lbsim.Scenario.from_dict({**base, "network": {"connect": [[1, 2], [1, 1]]}})
    assert err.value.key == "network.connect[0][1]"
