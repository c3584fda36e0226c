"""Experiments over many runs: router comparisons and parameter sweeps.

:func:`compare` runs several routers on the same seeds and tabulates mean and
tail latency with confidence intervals across the seeds; :func:`sweep` runs
the cartesian product of a grid of scenario keys, routers, job scales and
seeds, resumably. Both hand their runs to the same executors (one process, a
local process pool, or a dask cluster) and get the same numbers back from
any of them: a run is a pure function of its configuration.

**Common random numbers.** Arrivals and sizes come from their own RNG
streams (DESIGN.md invariant 4), so every router run on seed ``s`` sees the
same jobs. Comparing routers on shared seeds removes the between-seed noise
from their differences.

**A sweep file** (TOML)::

    scenario = "two_regions.toml"          # relative to the sweep file
    routers = ["jsq", "dgdlb", "weighted:split=optimal"]
    seeds = 10                              # or a list: [1, 2, 3]
    job_scales = [0.1, 0.05]                # optional

    [set]                                   # optional fixed overrides
    "simulation.horizon" = 200.0

    [grid]                                  # any --set key path -> values
    "frontends.0.rate" = [4.0, 5.0, 6.0]
    "router.step" = [0.02, 0.05]

Keys are the paths ``lbsim run --set`` takes (list elements by index). A
router is a name or ``name:param=value,param=value`` (or an inline table
``{ name = "weighted", split = "optimal" }``). ``router.*`` keys in ``[grid]``
and ``[set]`` apply to the routers that have that parameter and leave the
others alone (``jsq`` has no ``step``; its runs are not repeated per step).
``seeds = N`` means the scenario's ``simulation.seed`` and the ``N - 1``
seeds after it, so ``seeds = 1`` reproduces ``lbsim run``.

**Outputs of a sweep** (``out/``):

- ``runs/<key>.json``: one file per run, its summary, its sweep coordinates
  and its full configuration. ``key`` is a short sha256 of the canonical
  configuration (the resolved scenario, router and seed included), so a run
  is identified by what it computes. Files appear whole (written to a
  temporary file, then renamed), so re-running a sweep after a crash or
  ``kill -9`` skips exactly the runs that finished.
- ``results.parquet``: one row per run, in the order of the expansion (grid
  points, first key slowest, then job scale, router, seed): ``key``, a
  column per grid key, ``job_scale``, ``router``, ``seed``, then the summary
  fields except the timing ones;
- ``timings.parquet``: ``key`` and the timing fields (``wall_seconds``,
  ``jobs_per_second``), which measure the machine, not the model.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .files import atomic_write, write_parquet, write_text
from .engine import Simulation, simulate
from .engine.result import TIMING_FIELDS
from .errors import ScenarioError, unknown
from .scenario import Scenario, load_scenario, parse_value, read_toml
from .stats import QUANTILE_NAMES, summarize

__all__ = [
    "EXECUTORS",
    "Comparison",
    "RouterChoice",
    "Run",
    "SweepSpec",
    "compare",
    "config_key",
    "expand",
    "format_comparison",
    "load_sweep",
    "parse_router",
    "plot_latency_distribution",
    "run_config",
    "sweep",
    "toml_value",
]

EXECUTORS = ("local", "dask")
#: the top-level keys a sweep file may have
SWEEP_KEYS = ("scenario", "routers", "seeds", "job_scales", "set", "grid", "name", "description")
#: per-job columns a comparison keeps (measured jobs only): enough for the ECDF and for checking CRN
JOB_COLUMNS = ("job_id", "frontend", "backend", "t_arrival", "size", "latency")
KEY_LENGTH = 16  # hex digits of sha256: 64 bits, no collision in any sweep a person runs


# -- routers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouterChoice:
    """One router of a comparison or sweep: ``label`` (how tables name it), registry ``name``, ``params``."""

    label: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def accepts(self, param: str) -> bool:
        from .routers.base import router_class

        return param in router_class(self.name).Params.model_fields


def parse_router(spec: str | Mapping[str, Any], key: str = "routers") -> RouterChoice:
    """``"jsq"``, ``"weighted:split=optimal"``, ``"dgdlb:step=0.1,interval=0.5"`` or ``{name=..., ...}``.

    Values are TOML values (bare words are strings). Unknown routers and bad
    parameters raise :class:`ScenarioError` naming ``key`` or ``router.<param>``.
    """
    from .routers.base import router_class, validate_params

    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ScenarioError(f"{key}.name", "a router table needs a name")
        label = name + (":" + ",".join(f"{k}={_label_value(v)}" for k, v in params.items()) if params else "")
    elif isinstance(spec, str):
        label = spec.strip()
        name, _, rest = label.partition(":")
        name = name.strip()
        params = {}
        for item in _split_top_level(rest):
            pname, eq, text = item.partition("=")
            if not eq or not pname.strip():
                raise ScenarioError(key, f"router parameters look like name:param=value,..., got '{spec}'")
            params[pname.strip()] = parse_value(text.strip())
    else:
        raise ScenarioError(key, f"a router is a name or a table, got {spec!r}")
    router_class(name, key=key)
    validate_params(name, params)
    return RouterChoice(label, name, params)


def _split_top_level(text: str) -> list[str]:
    """Split ``a=1,b=[1,2],c="x,y"`` at the commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, None, 0
    for k, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:k])
            start = k + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _label_value(value: Any) -> str:
    if isinstance(value, str) and _BARE.match(value) and value not in ("true", "false", "inf", "nan"):
        return value
    return toml_value(value)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value, so that ``parse_value(toml_value(v)) == v`` (for ``--set``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML forbids a raw DEL
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ScenarioError("", f"cannot use {value!r} as a scenario value")


# -- sweep specifications --------------------------------------------------------------------
@dataclass
class SweepSpec:
    """A parsed sweep: the base scenario data and what varies over it."""

    scenario: dict[str, Any]
    routers: list[RouterChoice]
    seeds: list[int]
    job_scales: list[float] | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)  # --set strings applied to every run


def load_sweep(spec: str | Path | Mapping[str, Any]) -> SweepSpec:
    """Read and check a sweep file (or the same content as a dict; paths then relative to the cwd)."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        data, where = read_toml(path), path.parent
    else:
        data, where = dict(spec), Path.cwd()
    for k in data:
        if k not in SWEEP_KEYS:
            raise ScenarioError(k, unknown("sweep key", k, SWEEP_KEYS))
    if "scenario" not in data:
        raise ScenarioError("scenario", "a sweep needs a scenario (a path to a scenario file)")
    base = _scenario_data(data["scenario"], where)

    routers_raw = data.get("routers")
    if routers_raw is None:
        routers_raw = [dict(base.get("router", {"name": "jsq"}))]
    routers = _routers(routers_raw)
    seeds = _seeds(data.get("seeds", 1), int(base.get("simulation", {}).get("seed", 1)))

    job_scales = data.get("job_scales")
    if job_scales is not None:
        if not _nonempty_list(job_scales) or not all(_is_number(s) and s > 0 for s in job_scales):
            raise ScenarioError("job_scales", f"must be a non-empty list of numbers > 0, got {job_scales!r}")
        job_scales = [float(s) for s in job_scales]

    grid: dict[str, list[Any]] = {}
    raw_grid = data.get("grid", {})
    if not isinstance(raw_grid, Mapping):
        raise ScenarioError("grid", "must be a table of key paths to lists of values")
    for path, values in _flatten(raw_grid):
        if not _nonempty_list(values):
            raise ScenarioError(f"grid.{path}", f"must be a non-empty list of values, got {values!r}")
        _check_varied_key(path, "grid", job_scale_ok=False)
        grid[path] = list(values)

    raw_set = data.get("set", {})
    if isinstance(raw_set, Mapping):
        fixed = [f"{path}={toml_value(value)}" for path, value in _flatten(raw_set)]
    elif isinstance(raw_set, list) and all(isinstance(s, str) for s in raw_set):
        fixed = list(raw_set)
    else:
        raise ScenarioError("set", "must be a table of key paths to values, or a list of 'key=value' strings")
    for item in fixed:
        _check_varied_key(_override_path(item), "set", job_scale_ok=True)

    spec_ = SweepSpec(base, routers, seeds, job_scales, grid, fixed)
    _check_router_keys(spec_)
    return spec_


def _scenario_data(scenario: Any, where: Path) -> dict[str, Any]:
    if isinstance(scenario, Scenario):
        return scenario.to_dict()
    if isinstance(scenario, Mapping):
        return copy.deepcopy(dict(scenario))
    if isinstance(scenario, (str, Path)):
        path = where / scenario
        data = read_toml(path)
        data.setdefault("name", path.stem)
        return data
    raise ScenarioError("scenario", f"must be a path to a scenario file, got {scenario!r}")


def _routers(raw: Any) -> list[RouterChoice]:
    if isinstance(raw, (str, Mapping)):
        raw = [raw]
    if not _nonempty_list(raw):
        raise ScenarioError("routers", f"must be a non-empty list of routers, got {raw!r}")
    routers = [parse_router(r, f"routers[{k}]") for k, r in enumerate(raw)]
    labels = [r.label for r in routers]
    for label in labels:
        if labels.count(label) > 1:
            raise ScenarioError("routers", f"router '{label}' is listed twice")
    return routers


def _seeds(seeds: Any, first: int) -> list[int]:
    """``N`` -> ``first .. first + N - 1``; a list is taken as is."""
    if isinstance(seeds, bool):
        raise ScenarioError("seeds", f"must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ScenarioError("seeds", f"must be >= 1, got {seeds}")
        return list(range(first, first + seeds))
    if not _nonempty_list(seeds) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ScenarioError("seeds", f"must be a count or a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ScenarioError("seeds", f"lists a seed twice: {list(seeds)}")
    return list(seeds)


def _nonempty_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Key paths and values; nested tables (unquoted dotted keys in TOML) become dotted paths."""
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, path + ".")
        else:
            yield _normal_path(path), v


def _normal_path(path: str) -> str:
    return ".".join(p for p in path.strip().replace("[", ".").replace("]", "").split(".") if p)


def _override_path(item: str) -> str:
    if "=" not in item:
        raise ScenarioError(item, "an override must look like key.path=value")
    return _normal_path(item.split("=", 1)[0])


def _check_varied_key(path: str, where: str, job_scale_ok: bool) -> None:
    if path in ("router", "router.name"):
        raise ScenarioError(f"{where}.{path}", "choose routers with `routers = [...]`")
    if path == "simulation.seed":
        raise ScenarioError(f"{where}.{path}", "choose seeds with `seeds = N` or `seeds = [...]`")
    if path == "simulation.job_scale" and not job_scale_ok:
        raise ScenarioError(f"{where}.{path}", "vary job sizes with `job_scales = [...]`")


def _router_param(path: str) -> str | None:
    parts = path.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "router" else None


def _check_router_keys(spec: SweepSpec) -> None:
    """A ``router.<param>`` key must be a parameter of at least one of the routers."""
    from .routers.base import router_class

    for path in [*spec.grid, *(_override_path(s) for s in spec.fixed)]:
        param = _router_param(path)
        if param is None or any(r.accepts(param) for r in spec.routers):
            continue
        valid = sorted({p for r in spec.routers for p in router_class(r.name).Params.model_fields})
        names = ", ".join(sorted({r.name for r in spec.routers}))
        raise ScenarioError(path, unknown(f"parameter of routers {names}", param, valid))


# -- runs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run: ``params`` (its sweep coordinates) and ``config`` (everything it depends on)."""

    key: str
    params: dict[str, Any]
    config: dict[str, Any]


def config_key(config: Mapping[str, Any]) -> str:
    """Short sha256 of a configuration in canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def expand(spec: SweepSpec) -> list[Run]:
    """Every run of a sweep, each scenario validated, in a fixed order; identical runs once.

    Order: grid points (first key slowest), then job scale, router, seed.
    Any invalid run raises :class:`ScenarioError` naming the key before
    anything has run. Routers are also built once per configuration (without
    the seed), which checks what only a router can check (a weight matrix's
    shape, the optimum's feasibility for ``weighted:split=optimal``).
    """
    job_scales = spec.job_scales or [None]
    runs: dict[str, Run] = {}
    overloaded: dict[str, str] = {}  # per configuration without its seed: the capacity warning, or ""
    for values in itertools.product(*spec.grid.values()):
        point = dict(zip(spec.grid, values))
        for job_scale, router, seed in itertools.product(job_scales, spec.routers, spec.seeds):
            scenario, applied = _resolve(spec, point, job_scale, router, seed)
            config = scenario.to_dict()
            key = config_key(config)
            if key in runs:
                continue
            unseeded = config_key({**config, "simulation": {**config["simulation"], "seed": None}})
            if unseeded not in overloaded:
                _build_router(scenario, point, router)
                overloaded[unseeded] = scenario.capacity_warning() or ""
            params = {path: applied.get(path) for path in spec.grid}
            params |= {"job_scale": scenario.simulation.job_scale, "router": router.label, "seed": seed}
            runs[key] = Run(key, params, config)
    if warned := [m for m in overloaded.values() if m]:
        from .scenario import CapacityWarning

        message = f"{len(warned)} of {len(overloaded)} configurations reach capacity, e.g. {warned[0]}"
        warnings.warn(message, CapacityWarning, stacklevel=3)
    return list(runs.values())


def _resolve(spec: SweepSpec, point: dict[str, Any], job_scale, router: RouterChoice, seed: int):
    data = copy.deepcopy(spec.scenario)
    table = dict(data.get("router") or {})
    if table.get("name", "jsq") == router.name:
        data["router"] = {**table, "name": router.name, **router.params}
    else:  # another router's parameters belong to it (as with `lbsim run --router`)
        data["router"] = {"name": router.name, **router.params}
    overrides = [s for s in spec.fixed if _applies(_override_path(s), router)]
    applied = {path: value for path, value in point.items() if _applies(path, router)}
    overrides += [f"{path}={toml_value(value)}" for path, value in applied.items()]
    if job_scale is not None:
        overrides.append(f"simulation.job_scale={toml_value(job_scale)}")
    overrides.append(f"simulation.seed={seed}")
    try:
        return Scenario.from_dict(data, overrides), applied
    except ScenarioError as exc:
        raise _in_run(exc, point, router, seed) from None


def _applies(path: str, router: RouterChoice) -> bool:
    param = _router_param(path)
    return param is None or router.accepts(param)


def _in_run(exc: ScenarioError, point: Mapping[str, Any], router: RouterChoice, seed: int) -> ScenarioError:
    where = ", ".join([f"{k}={toml_value(v)}" for k, v in point.items()] + [f"router {router.label}", f"seed {seed}"])
    return ScenarioError(exc.key, f"{exc.message} (in the run with {where})")


def _build_router(scenario: Scenario, point: Mapping[str, Any], router: RouterChoice) -> None:
    try:
        Simulation(scenario)
    except ScenarioError as exc:
        raise _in_run(exc, point, router, scenario.simulation.seed) from None


def run_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The pure function a sweep runs: a resolved scenario dict in, its summary out."""
    return simulate(Scenario.from_dict(config)).summary()


def _run_with_jobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison's run: the summary and the measured jobs (for CIs on quantiles and the ECDF)."""
    result = simulate(Scenario.from_dict(config))
    measured = result.measured()
    return {"summary": result.summary(), "jobs": {c: measured[c].to_numpy() for c in JOB_COLUMNS}}


# -- executors -------------------------------------------------------------------------------
def _execute(
    function: Callable[[Any], Any],
    tasks: Sequence[tuple[str, Any]],
    on_result: Callable[[str, Any], None],
    *,
    workers: int,
    executor: str,
    scheduler: Any,
    progress: bool,
    total: int,
    desc: str,
) -> None:
    """Run ``function(payload)`` for every ``(key, payload)`` and hand each result to ``on_result`` as it lands."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, initial=total - len(tasks), desc=desc, unit="run", disable=not progress, dynamic_ncols=True
    )
    try:
        if not tasks:
            return
        if executor == "dask":
            results = _dask_results(function, tasks, workers, scheduler)
        elif workers == 1:
            results = ((key, function(payload)) for key, payload in tasks)
        else:
            results = _pool_results(function, tasks, workers)
        with closing(results):
            for key, result in results:
                on_result(key, result)
                bar.update()
    finally:
        bar.close()


def _check_executor(workers: int, executor: str, scheduler: Any) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ScenarioError("workers", f"must be an integer >= 1, got {workers!r}")
    if executor not in EXECUTORS:
        raise ScenarioError("executor", unknown("executor", str(executor), EXECUTORS))
    if scheduler is not None and executor != "dask":
        raise ScenarioError("scheduler", "only used with executor 'dask'")


def _pool_results(function, tasks, workers) -> Iterator[tuple[str, Any]]:
    # forkserver: workers fork from a clean server that imported lbsim once, so they
    # start fast and never inherit the parent's threads (tqdm's, dask's) mid-lock.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["lbsim.experiments"])
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_watch_parent, initargs=(os.getpid(),)
    )
    try:
        futures = {pool.submit(function, payload): key for key, payload in tasks}
        for future in as_completed(futures):
            yield futures[future], _result(future, futures[future])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _watch_parent(parent: int) -> None:
    """Pool worker initializer: exit once the sweep that started the pool is gone.

    A pool's workers block forever on its task queue if the sweep is killed
    (``kill -9`` runs no clean-up), and keep the forkserver alive with them.
    """

    def watch() -> None:
        while _alive(parent):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="lbsim-watch-parent", daemon=True).start()


def _dask_results(function, tasks, workers, scheduler) -> Iterator[tuple[str, Any]]:
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ScenarioError("executor", "'dask' needs dask.distributed: pip install 'lbsim[dask]'") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    elif isinstance(scheduler, str):
        client = Client(scheduler)
    else:  # an existing Client: the caller owns it
        client = scheduler
    futures = []
    try:
        # The key names the function too: a sweep and a comparison may share a configuration.
        prefix = f"lbsim-{function.__name__.strip('_')}-"
        futures = [client.submit(function, payload, key=prefix + key, pure=False) for key, payload in tasks]
        for future in dask_completed(futures):
            key = future.key.removeprefix(prefix)
            result = _result(future, key)
            future.release()
            yield key, result
    finally:
        client.cancel([f for f in futures if not f.done()])
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()


def _result(future, key: str):
    try:
        return future.result()
    except Exception as exc:
        exc.add_note(f"in lbsim run {key}")
        raise


# -- sweeps ----------------------------------------------------------------------------------
def sweep(
    spec: str | Path | Mapping[str, Any],
    out: str | Path,
    workers: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run a sweep file (or dict) into ``out`` and return ``results.parquet`` as a DataFrame.

    Every run is expanded and validated first (an invalid key fails the whole
    sweep before any run starts); runs whose file exists in ``out/runs`` are
    skipped, so a sweep resumes where it stopped. ``executor``: ``"local"``
    (a process pool of ``workers``; ``workers=1`` runs in this process) or
    ``"dask"`` (a new ``LocalCluster`` of ``workers`` processes, or the
    cluster at ``scheduler``: an address or a ``distributed.Client``, whose
    workers then set the parallelism). Runs are computed by the workers and
    written here, by the caller, so remote workers need no shared disk. Run
    files in ``out/runs`` that belong to no run of this sweep are left alone
    and left out of the tables.

    As with any process pool, a script that starts one with ``workers > 1``
    must do so under ``if __name__ == "__main__":`` (workers re-import it).
    """
    _check_executor(workers, executor, scheduler)
    runs = expand(load_sweep(spec))
    out = Path(out)
    run_dir = out / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    _clean_temporary(run_dir)
    records = {run.key: record for run in runs if (record := _read_record(run_dir, run.key)) is not None}
    by_key = {run.key: run for run in runs}

    def save(key: str, summary: dict[str, Any]) -> None:
        run = by_key[key]
        record = {"key": key, "params": run.params, "summary": summary, "config": run.config}
        # fsync too: a run file that exists is a run that finished, even after a crash
        write_text(run_dir / f"{key}.json", json.dumps(record, indent=1, allow_nan=True) + "\n", sync=True)
        records[key] = record

    tasks = [(run.key, run.config) for run in runs if run.key not in records]
    _execute(
        run_config,
        tasks,
        save,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        total=len(runs),
        desc="sweep",
    )
    results, timings = _tables(runs, records)
    write_parquet(out / "results.parquet", results)
    write_parquet(out / "timings.parquet", timings)
    return results


def _clean_temporary(run_dir: Path) -> None:
    """Delete temporary files left by sweeps that died (their pid is gone)."""
    for tmp in run_dir.glob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except ValueError:
            pid = None
        if pid is None or not _alive(pid):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process stays a zombie until its parent reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_record(run_dir: Path, key: str) -> dict[str, Any] | None:
    """A finished run's record, or None if it is missing or not this run's (then it runs again)."""
    try:
        record = json.loads((run_dir / f"{key}.json").read_text())
        if record["key"] == key and config_key(record["config"]) == key and isinstance(record["summary"], dict):
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _tables(runs: Sequence[Run], records: Mapping[str, dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, timing_rows = [], []
    for run in runs:
        summary = records[run.key]["summary"]
        rows.append(_row(run.key, run.params, summary))
        timing_rows.append({"key": run.key, **{k: summary.get(k, math.nan) for k in TIMING_FIELDS}})
    results = pd.DataFrame(rows)
    for column in runs[0].params if runs else ():
        results[column] = _column(results[column])
    return results, pd.DataFrame(timing_rows, columns=["key", *TIMING_FIELDS])


def _row(key: str, params: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    row = {"key": key, **params}
    # the coordinates win over the summary's own router name / seed / job scale
    row |= {k: v for k, v in summary.items() if k not in row and k not in TIMING_FIELDS}
    return row


def _column(values: pd.Series) -> pd.Series:
    """Parameter values as one parquet type: lists, tables and mixed types become JSON text."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    kinds = {type(v) for v in present}
    if kinds <= {int, float} or len(kinds) == 1 and kinds <= {str, bool}:
        return values
    return pd.Series([None if v is None else json.dumps(v) for v in values], index=values.index, dtype=object)


# -- comparisons -----------------------------------------------------------------------------
@dataclass
class Comparison:
    """Routers compared on common random numbers.

    ``table``: one row per router, sorted by mean latency: ``router``,
    ``seeds``, ``jobs`` (measured jobs over all seeds), ``mean`` and
    ``p50 p90 p99 p999``, each with ``_low``/``_high`` 95% bounds across
    seeds, and ``ratio_to_optimum`` (with bounds): mean latency over the
    centralized optimum's (NaN when there is none). ``runs``: one row per
    (router, seed), its summary. ``jobs``: the measured jobs of every run
    (``router``, ``seed`` and :data:`JOB_COLUMNS`).
    """

    table: pd.DataFrame
    runs: pd.DataFrame
    jobs: pd.DataFrame
    optimum: float
    level: float = 0.95
    out: Path | None = None

    def __str__(self) -> str:
        return format_comparison(self.table, self.optimum, self.level)

    def plot(self):
        """The latency ECDF and CCDF (log tail) of every router: a matplotlib Figure."""
        return plot_latency_distribution(self.jobs, list(self.table["router"]), self.optimum)


def compare(
    scenario: Scenario | str | Path,
    routers: Sequence[str | Mapping[str, Any]],
    seeds: int | Sequence[int],
    out: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    *,
    executor: str = "local",
    scheduler: Any = None,
) -> Comparison:
    """Run every router on the same seeds and compare their latency (see :class:`Comparison`).

    ``scenario`` is a Scenario or a path; ``routers`` are names or
    ``name:param=value,...`` (``"weighted:split=optimal"``); ``seeds`` a
    count (from ``simulation.seed`` on) or a list. Mean and quantiles get
    95% intervals across seeds (replications, :func:`lbsim.stats.summarize`).
    With ``out``, writes ``comparison.parquet``, ``comparison.csv``,
    ``runs.parquet`` and ``latency_ccdf.png`` there. With ``progress``, shows
    a progress bar and prints the table.
    """
    _check_executor(workers, executor, scheduler)
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    base = scenario.to_dict()
    spec = SweepSpec(base, _routers(list(routers)), _seeds(seeds, scenario.simulation.seed))
    runs = expand(spec)
    results: dict[str, dict[str, Any]] = {}
    _execute(
        _run_with_jobs,
        [(run.key, run.config) for run in runs],
        results.__setitem__,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        total=len(runs),
        desc="compare",
    )

    run_rows = [
        {"router": run.params["router"], "seed": run.params["seed"]}
        | {k: v for k, v in results[run.key]["summary"].items() if k not in ("router", "seed")}
        for run in runs
    ]
    runs_table = pd.DataFrame(run_rows)
    jobs = pd.concat(
        [
            pd.DataFrame({"router": run.params["router"], "seed": run.params["seed"], **results[run.key]["jobs"]})
            for run in runs
        ],
        ignore_index=True,
    )
    reference = _optimum_mean_latency(scenario)
    table = _comparison_table(jobs, [r.label for r in spec.routers], len(spec.seeds), reference)
    comparison = Comparison(table, runs_table, jobs, reference)
    if out is not None:
        comparison.out = _write_comparison(comparison, Path(out))
    if progress:
        print(comparison)
    return comparison


def _optimum_mean_latency(scenario: Scenario) -> float:
    """The centralized optimum's mean latency, or NaN when it is not the right reference or has no solution."""
    # The optimum is a static split for constant rates and capacities: with a
    # rate schedule or antagonists it answers a different question.
    if scenario.simulation.rate_schedule or any(b.antagonist is not None for b in scenario.backends):
        return math.nan
    from .optimum import optimum

    try:
        return float(optimum(scenario).mean_latency)
    except Exception as exc:  # an overloaded scenario has no optimum; the comparison still stands
        warnings.warn(f"no optimum to compare with: {exc}", RuntimeWarning, stacklevel=3)
        return math.nan


def _comparison_table(jobs: pd.DataFrame, order: list[str], seeds: int, reference: float) -> pd.DataFrame:
    table = summarize(jobs, by="router", replication="seed")  # warm-up already cut: jobs are measured ones
    table = table.rename(columns={"count": "jobs"})
    table = table.set_index("router").reindex(order).reset_index()
    table.insert(1, "seeds", seeds)
    table["jobs"] = table["jobs"].fillna(0).astype("int64")
    for suffix in ("", "_low", "_high"):
        table[f"ratio_to_optimum{suffix}"] = table[f"mean{suffix}"] / reference
    # stable: routers with equal means keep the order they were given in
    return table.sort_values("mean", kind="stable", na_position="last").reset_index(drop=True)


def format_comparison(table: pd.DataFrame, optimum: float = math.nan, level: float = 0.95) -> str:
    """The comparison as aligned text: estimates with +- half-widths of their intervals."""
    columns = [("mean", "mean (s)")] + [(q, _quantile_title(q) + " (s)") for q in QUANTILE_NAMES]
    header = ["router", "seeds", "jobs"] + [title for _, title in columns] + ["/ optimum"]
    body = []
    for row in table.itertuples(index=False):
        r = row._asdict()
        cells = [str(r["router"]), str(r["seeds"]), str(r["jobs"])]
        cells += [_with_interval(r[name], r[f"{name}_low"], r[f"{name}_high"]) for name, _ in columns]
        cells.append(
            _with_interval(r["ratio_to_optimum"], r["ratio_to_optimum_low"], r["ratio_to_optimum_high"], digits=3)
        )
        body.append(cells)
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), "  ".join("-" * w for w in widths), *map(line, body)]
    where = f"optimum mean latency {optimum:.4g} s" if math.isfinite(optimum) else "no optimum to compare with"
    lines.append(f"{where}; +- is the half-width of {level:.0%} intervals across seeds (common random numbers)")
    return "\n".join(lines)


def _quantile_title(name: str) -> str:
    digits = name[1:]
    return f"p{digits[:2]}.{digits[2:]}" if len(digits) > 2 else name


def _with_interval(estimate: float, low: float, high: float, digits: int = 4) -> str:
    if not math.isfinite(estimate):
        return "n/a"
    text = f"{estimate:.{digits}g}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" ± {(high - low) / 2:.2g}"
    return text


def _write_comparison(comparison: Comparison, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "comparison.parquet", comparison.table)
    write_text(out / "comparison.csv", comparison.table.to_csv(index=False))
    write_parquet(out / "runs.parquet", comparison.runs)
    figure = comparison.plot()
    atomic_write(out / "latency_ccdf.png", lambda p: figure.savefig(p, format="png", dpi=130))
    return out


# -- figures ---------------------------------------------------------------------------------
def plot_latency_distribution(jobs: pd.DataFrame, routers: Sequence[str] | None = None, optimum: float = math.nan):
    """ECDF (left, log latency axis) and CCDF on a log scale (right: the tail) of latency per router, seeds pooled.

    Drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, so it
    neither needs a display nor switches the caller's pyplot backend.
    """
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    routers = list(routers) if routers is not None else list(dict.fromkeys(jobs["router"]))
    curves = pd.concat([_ecdf_points(jobs.loc[jobs["router"] == r, "latency"], r) for r in routers], ignore_index=True)
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    palette = dict(zip(routers, sns.color_palette(n_colors=len(routers))))
    style = dict(x="latency", hue="router", hue_order=routers, palette=palette, estimator=None, drawstyle="steps-post")
    sns.lineplot(data=curves, y="ecdf", ax=left, **style)
    tail = curves[curves["ccdf"] > 0]
    sns.lineplot(data=tail, y="ccdf", ax=right, legend=False, **style)
    left.set(xlabel="latency (s)", ylabel="P(latency <= x)", xscale="log", title="ECDF")
    right.set(xlabel="latency (s)", ylabel="P(latency > x)", yscale="log", title="CCDF (tail)")
    if math.isfinite(optimum):
        for ax in (left, right):
            ax.axvline(optimum, color="0.4", linestyle="--", linewidth=1)
        left.plot([], [], color="0.4", linestyle="--", label="optimum mean")
        left.legend(title=None)
    for ax in (left, right):
        ax.grid(True, which="major", alpha=0.3)
    return figure


def _ecdf_points(latency: pd.Series, router: str, points: int = 1000) -> pd.DataFrame:
    """The ECDF at a few thousand order statistics: evenly spaced in probability, and log-spaced in the tail."""
    x = np.sort(latency.to_numpy(dtype=float))
    n = len(x)
    if n == 0:
        return pd.DataFrame({"router": [], "latency": [], "ecdf": [], "ccdf": []})
    body = np.linspace(0, n - 1, min(n, points)).astype(int)
    tail = n - np.unique(np.logspace(0, math.log10(n), points).astype(int))
    index = np.unique(np.concatenate([body, tail, [0, n - 1]]))
    ecdf = (index + 1) / n
    return pd.DataFrame({"router": router, "latency": x[index], "ecdf": ecdf, "ccdf": 1.0 - ecdf})
