"""Backend models: the registry, the contract, and a conformance suite every registered model runs through.

The suite is to backend models what ``test_every_registered_router_keeps_the_invariants``
is to routers: each model declares ``examples`` (parameter sets) on its class,
and every example is run through the invariants of docs/model.md section 4
(conservation, causality, lazy == eager, a view never fresher than its
telemetry mode allows), checked against state rebuilt from the jobs table,
never read from the engine.
"""

from __future__ import annotations

import pkgutil

import numpy as np
import pandas as pd
import pytest
from helpers import backend, check_counts, jobs_present, scenario

import lbsim
import lbsim.backends
from lbsim.backends import BACKENDS, BackendModel, register_backend
from lbsim.engine import Simulation
from lbsim.errors import ScenarioError
from lbsim.scenario import TELEMETRY_MODES

DELAY = [[0.05, 0.4, 1.3], [0.9, 0.02, 0.25]]
CONNECT = [[True, True, True], [False, True, True]]


def _examples() -> list[tuple[str, int]]:
    return [(name, k) for name, cls in sorted(BACKENDS.items()) for k in range(len(cls.examples))]


def _model_scenario(model: str, example: int, horizon: float = 120.0, telemetry: str = "delayed", router="jsq"):
    """Two frontends, three backends of one model (one example's parameters), delays up to 1.3 s."""
    cls = BACKENDS[model]
    tables = [{"model": model, **cls.examples[example]} for _ in range(3)]
    s = scenario(
        tables if not cls.example_jobs else [backend("linear", r=1.0)] * 3,
        [0.5, 0.6],
        horizon=horizon,
        warmup=10.0,
        seed=11,
        job_scale=0.3,
        size="gamma",
        size_params={"shape": 0.5},
        network={"delay": DELAY, "connect": CONNECT, "telemetry": telemetry, "period": 0.7},
        router=router,
    )
    if not cls.example_jobs:
        return s
    # Jobs of the model's own kind (tokens), scaled so that sbar and the job rate stay those of the others.
    data = s.to_dict()
    data["backends"] = tables
    data["jobs"] = dict(cls.example_jobs)
    mean = lbsim.Scenario.from_dict(data).jobs.mean
    data["simulation"]["job_scale"] = 0.3 / mean
    return lbsim.Scenario.from_dict(data)


# -- the registry --------------------------------------------------------------------------
def test_every_module_of_the_package_is_registered_without_an_import_list():
    modules = {m.name for m in pkgutil.iter_modules(lbsim.backends.__path__)} - {"base"}
    assert modules, "no backend model modules found"
    defined_in = {cls.__module__.rsplit(".", 1)[-1] for cls in BACKENDS.values()}
    assert modules <= defined_in, f"modules whose models are not registered: {modules - defined_in}"


def test_every_registered_model_declares_examples_and_documents_its_parameters():
    for name, cls in BACKENDS.items():
        assert cls.examples, f"backend model {name!r} declares no examples"
        assert cls.describe(), f"backend model {name!r} has no docstring"
        for pname, field in cls.Params.model_fields.items():
            assert field.description, f"{name}.{pname} has no description"


def test_a_duplicate_name_is_rejected():
    class Again(BackendModel):
        name = "rate"

    with pytest.raises(ValueError, match="backend model 'rate' is already registered"):
        register_backend(Again)
    assert BACKENDS["rate"] is not Again


def test_the_default_model_is_rate_and_an_unknown_model_is_named():
    s = scenario([backend("linear", r=1.0)], [0.5])
    assert s.backends[0].model == "rate" and s.backends[0].params.service.r == 1.0
    with pytest.raises(ScenarioError) as err:
        scenario([{"model": "rat", "service": {"kind": "linear", "r": 1.0}}])
    assert err.value.key == "backends[0].model" and "did you mean 'rate'" in err.value.message


def test_a_models_keys_are_validated_by_its_params():
    with pytest.raises(ScenarioError) as err:
        scenario([{"model": "infinite_server", "speed": -1.0}])
    assert err.value.key == "backends[0].speed" and "> 0" in err.value.message
    with pytest.raises(ScenarioError) as err:
        scenario([{"model": "infinite_server", "sped": 1.0}])
    assert err.value.key == "backends[0].sped" and "did you mean 'speed'" in err.value.message


def test_lbsim_backends_lists_every_model():
    from click.testing import CliRunner

    from lbsim.cli import main

    out = CliRunner().invoke(main, ["backends"])
    assert out.exit_code == 0
    for name in BACKENDS:
        assert f"{name}:" in out.output
    assert "service (required)" in out.output


def test_a_model_without_a_rate_function_is_named_where_one_is_needed():
    @register_backend
    class Opaque(BackendModel):
        """A test model with no fluid rate function."""

        name = "_test_opaque"
        examples = ({},)

    try:
        s = scenario([{"model": "_test_opaque"}, backend("linear", r=1.0)], [0.5])
        assert s.service_rates[0] is None
        with pytest.raises(ScenarioError) as err:
            lbsim.optimum(s)
        assert err.value.key == "backends[0].model"
        assert "'_test_opaque' has no fluid rate function" in err.value.message and "optimum" in err.value.message
        with pytest.raises(ScenarioError) as err:  # a router that reads mu: refused at load
            s.replace(**{"router": {"name": "dgdlb"}})
        assert err.value.key == "backends[0].model" and "router 'dgdlb'" in err.value.message
        with pytest.raises(ScenarioError) as err:
            lbsim.fluid(s, router="jsq")
        assert err.value.key == "backends[0].model" and "fluid model" in err.value.message
    finally:
        BACKENDS.pop("_test_opaque")


# -- the conformance suite -----------------------------------------------------------------
@pytest.mark.parametrize(("model", "example"), _examples())
def test_every_registered_model_keeps_conservation_causality_and_lazy_equals_eager(model, example):
    s = _model_scenario(model, example)
    result = Simulation(s, lazy=True).run()
    check_counts(result)
    jobs = result.jobs
    assert len(jobs) > 100
    t_a, t_ba, t_bd, t_r = (jobs[c].to_numpy() for c in ("t_arrival", "t_backend_arrival", "t_backend_done", "t_response"))
    assert (t_a <= t_ba).all() and (t_ba <= t_bd).all() and (t_bd <= t_r).all()
    assert (t_a < s.simulation.horizon).all() and (t_bd <= result.t_end).all()
    assert s.connect[jobs["frontend"], jobs["backend"]].all()
    # The timeseries' job counts are the true state, rebuilt from the jobs of a longer run.
    longer = Simulation(s.replace(**{"simulation.horizon": 200.0}), lazy=True).run().jobs
    for j, samples in result.timeseries.groupby("backend"):
        at = longer[longer["backend"] == j]
        truth = jobs_present(at["t_backend_arrival"], at["t_backend_done"], samples["t"])
        np.testing.assert_array_equal(samples["jobs"].to_numpy(), truth, err_msg=f"{model}: backend {j}")
    eager = Simulation(s, lazy=False).run()
    pd.testing.assert_frame_equal(jobs, eager.jobs, check_exact=True)
    pd.testing.assert_frame_equal(result.timeseries, eager.timeseries, check_exact=True)
    assert result.counts == eager.counts




@pytest.mark.parametrize("telemetry", TELEMETRY_MODES)
@pytest.mark.parametrize("model", sorted(BACKENDS))
def test_every_registered_model_shows_no_fresher_state_than_the_telemetry_allows(spy, model, telemetry):
    s = _model_scenario(model, 0, horizon=100.0, telemetry=telemetry, router=spy)
    sim = Simulation(s)
    jobs = sim.run().jobs
    checked_until = 60.0
    early = jobs[jobs["t_arrival"] < checked_until]
    assert (early["job_id"].to_numpy() == np.arange(len(early))).all()
    t = np.array([x[0] for x in sim.router.seen])
    frontend = np.array([x[1] for x in sim.router.seen])
    observed = np.array([x[2] for x in sim.router.seen])
    for i in range(2):
        rows = (frontend == i) & (t < checked_until)
        for j in range(3):
            at = jobs[jobs["backend"] == j]
            d = DELAY[i][j]
            if telemetry == "delayed":
                truth = jobs_present(at["t_backend_arrival"], at["t_backend_done"], t[rows] - d)
            elif telemetry == "periodic":
                sent = np.floor((t[rows] - d) / 0.7) * 0.7
                truth = np.where(sent >= 0, jobs_present(at["t_backend_arrival"], at["t_backend_done"], sent), 0)
            elif telemetry == "instant":
                truth = jobs_present(at["t_backend_arrival"], at["t_backend_done"], t[rows])
            else:
                own = at[at["frontend"] == i]
                truth = jobs_present(np.nextafter(own["t_arrival"], np.inf), own["t_response"], t[rows])
            np.testing.assert_array_equal(observed[rows, j], truth, err_msg=f"{model}/{telemetry}: {i}->{j}")


# -- the models themselves -----------------------------------------------------------------
def test_infinite_server_is_the_rate_model_with_ps_and_a_linear_rate():
    """Two descriptions of one station (docs/model.md section 1): the same jobs finish at the same instants."""
    sbar = 0.3
    a = _model_scenario("infinite_server", 0)
    b = scenario(
        [backend("linear", r=0.8 / sbar)] * 3,
        [0.5, 0.6],
        horizon=120.0,
        warmup=10.0,
        seed=11,
        job_scale=0.3,
        size="gamma",
        size_params={"shape": 0.5},
        network={"delay": DELAY, "connect": CONNECT},
        router="jsq",
    )
    ja, jb = lbsim.simulate(a).jobs, lbsim.simulate(b).jobs
    assert len(ja) == len(jb) > 100
    np.testing.assert_array_equal(ja["job_id"], jb["job_id"])
    np.testing.assert_allclose(ja["t_backend_done"], jb["t_backend_done"], rtol=1e-12)
    # and each job stays exactly size / speed
    # (to a few ulps of the clock: sojourn is a difference of two times up to the horizon)
    np.testing.assert_allclose(ja["sojourn"], ja["size"] / 0.8, rtol=0, atol=16 * np.spacing(120.0))


def test_rate_backend_history_and_jobs_at_follow_its_changes():
    """A FIFO backend at rate 1 with jobs of size 1 at t = 0, 0, 0.5: n_j is 1, 2, 3, 2, 1, 0 at 0, 0, 0.5, 1, 2, 3."""
    import simpy

    from lbsim.backends import BackendContext
    from lbsim.backends.rate import RateBackend, RateParams
    from lbsim.jobs import Job

    env = simpy.Environment()
    done: list[tuple[int, float]] = []
    context = BackendContext(env, 1.0, lambda job, t: done.append((job.job_id, t)), history_window=10.0)
    b = RateBackend(0, RateParams(discipline="fifo", service={"kind": "constant", "c": 1.0}), context)
    b.arrive(Job(0, 0, 1.0, 0.0))
    b.arrive(Job(1, 0, 1.0, 0.0))
    env.run(until=0.5)
    b.arrive(Job(2, 0, 1.0, 0.5))
    assert b.next_done == 1.0 and b.jobs == 3
    assert [b.jobs_at(t) for t in (0.25, 0.75, 1.5, 2.5, 3.5)] == [2, 3, 2, 1, 0]
    assert done == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert b.history_n[-4:] == [3, 2, 1, 0] and b.history_t[-3:] == [1.0, 2.0, 3.0]
