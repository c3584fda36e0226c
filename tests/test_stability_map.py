"""DGD-LB's stability map (analysis/dgdlb_stability_map.py): locally but not globally stable below the limit.

On ``scenarios/dgdlb_stability_map.toml`` (one frontend, two identical pools
500 ms away) the linearisation of docs/routers.md (DGD-LB, "Stability
limit") predicts that small perturbations of the rest point decay for any
step below the critical one. It does not predict what happens from far away:
the fluid model at 0.8x that step settles from a (slightly tilted) uniform
split but locks into a full-swing limit cycle from every job on pool-a,
while at 0.4x both starts settle and at 1.2x neither does. Each of these
could fail: the first two if the loop were globally stable below its limit
(what the DGD-LB paper's experiments suggest), the third if the
linearisation were wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lbsim
from lbsim.errors import ScenarioError
from lbsim.fluid import fluid
from lbsim.routers.dgdlb import dgdlb_critical_step

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "analysis"))
try:
    import common
    import dgdlb_stability_map as stability_map
finally:
    sys.path.remove(str(ROOT / "analysis"))


@pytest.fixture(scope="module")
def loop():
    scenario = lbsim.load_scenario(ROOT / "scenarios" / "dgdlb_stability_map.toml", warn=False)
    x_star = float(lbsim.optimum(scenario).load[0])
    critical = dgdlb_critical_step(scenario.service_rates[0], x_star, float(scenario.demand[0]),
                                   float(scenario.delay[0, 0]))  # fmt: skip
    return scenario, x_star, critical


@pytest.mark.parametrize(
    ("multiple", "split", "expected"),
    [
        (0.8, 0.5, "settles"),  # locally stable ...
        (0.8, 1.0, "oscillates"),  # ... but not globally
        (0.4, 0.5, "settles"),
        (0.4, 1.0, "settles"),
        (1.2, 0.5, "oscillates"),  # above the linearised limit the tilt grows to a full swing
        (1.2, 1.0, "oscillates"),
    ],
)
def test_fluid_dgdlb_settles_or_oscillates_by_step_and_start(loop, multiple, split, expected):
    scenario, x_star, critical = loop
    swing = stability_map.fluid_swing(scenario, multiple * critical, split, 0.0, x_star)
    assert stability_map.outcome(swing) == expected, swing
    if expected == "oscillates":  # the limit cycle is clipped by the projection at 0 and 1: a full swing
        assert swing > 0.99


def test_the_full_swing_is_a_limit_cycle_not_a_slow_decay(loop):
    """From every job on pool-a at 0.8x the swing is the same in two late windows 200 s apart."""
    scenario, _, critical = loop
    model = fluid(scenario, router="dgdlb", step=0.8 * critical, init=[1.0, 0.0], horizon=600.0)
    p = model.split[:, 0, 0]
    early = stability_map.late_swing(model.t, p, 400.0)
    late = stability_map.late_swing(model.t, p, 600.0)
    assert early > 0.99 and late > 0.99
    assert p.min() >= 0.0 and p.max() <= 1.0


def test_dgdlb_starts_from_given_weights(loop):
    scenario = loop[0]
    tilted = scenario.replace(**{"router.init": [3.0, 1.0]})
    assert np.allclose(fluid(tilted, horizon=1.0).split[0, 0], [0.75, 0.25])
    result = lbsim.simulate(tilted.replace(**{"simulation.horizon": 5.0, "simulation.warmup": 1.0}))
    assert result.routing["prob"].iloc[0] == pytest.approx(0.75)
    with pytest.raises(ScenarioError, match=r"router\.init"):
        scenario.replace(**{"router.init": [1.0, 0.0, 0.0]})
    with pytest.raises(ScenarioError, match=r"router\.init"):
        scenario.replace(**{"router.init": [0.0, 0.0]})
    with pytest.raises(ScenarioError, match=r"router\.init"):
        scenario.replace(**{"router.init": [-1.0, 2.0]})


def test_quick_map_writes_its_figures_and_tables(tmp_path):
    settings = common.Settings(out=tmp_path, quick=True, workers=1)
    section = common.timed(stability_map.run, settings)
    grid = pd.read_csv(tmp_path / "dgdlb_stability_map_grid.csv")
    outcomes = {(m, s): o for m, s, o in zip(grid["multiple"], grid["split"], grid["outcome"])}
    assert outcomes[(0.4, 0.5)] == outcomes[(0.4, 1.0)] == "settles"
    assert outcomes[(0.8, 0.5)] == "settles" and outcomes[(0.8, 1.0)] == "oscillates"
    assert len(section.figures) == 2 and all(f.stat().st_size > 5000 for f in section.figures)
    assert (tmp_path / "dgdlb_stability_map.md").exists() and (tmp_path / "dgdlb_stability_map_cells.csv").exists()
