"""Experiments over many runs: router comparisons, parameter sweeps, and the executor they share.

:func:`compare` runs several routers on the same seeds and tabulates mean and
tail latency with confidence intervals across the seeds
(:mod:`~lbsim.experiments.comparisons`); :func:`sweep` runs the cartesian
product of a grid of scenario keys, routers, job scales and seeds, resumably
(:mod:`~lbsim.experiments.sweeps`, the file format there). Both, and
:func:`lbsim.scaling.scaling`, hand their runs to the one executor
(:mod:`~lbsim.experiments.executors`: this process, a local process pool,
or a dask cluster) and get the same numbers back from any of them: a run is
a pure function of its configuration. Router specifications and the sweep
schema are in :mod:`~lbsim.experiments.specs`, the resumable store of
finished runs in :mod:`~lbsim.experiments.store`.
"""

from .comparisons import JOB_COLUMNS, Comparison, compare, format_comparison
from .executors import EXECUTORS, check_executor, execute, map_ordered
from .specs import (
    SWEEP_KEYS,
    RouterChoice,
    Run,
    SweepSpec,
    config_key,
    expand,
    load_sweep,
    parse_router,
    split_top_level,
    toml_value,
)
from .store import RunStore
from .sweeps import run_config, sweep

__all__ = [
    "EXECUTORS",
    "JOB_COLUMNS",
    "SWEEP_KEYS",
    "Comparison",
    "RouterChoice",
    "Run",
    "RunStore",
    "SweepSpec",
    "check_executor",
    "compare",
    "config_key",
    "execute",
    "expand",
    "format_comparison",
    "load_sweep",
    "map_ordered",
    "parse_router",
    "run_config",
    "split_top_level",
    "sweep",
    "toml_value",
]
