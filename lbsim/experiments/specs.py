"""What an experiment runs: router specifications, the sweep file, and its expansion into runs.

A router is a registry name or ``name:param=value,param=value`` (or an
inline table ``{ name = "weighted", split = "optimal" }``): :func:`parse_router`.
A sweep file (the format is described in :mod:`lbsim.experiments`) is read
and checked by :func:`load_sweep` into a :class:`SweepSpec`, and
:func:`expand` turns it into :class:`Run` s, each a resolved scenario dict
identified by :func:`config_key`: a run is a pure function of its
configuration, so the key says what it computes.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arguments import is_seed
from ..engine import Simulation
from ..errors import ScenarioError, unknown
from ..files import toml_inline
from ..registry import check_finite
from ..scenario import MAX_SEED, Scenario, parse_value, read_toml

__all__ = [
    "RouterChoice",
    "Run",
    "SweepSpec",
    "config_key",
    "expand",
    "load_sweep",
    "parse_router",
    "split_top_level",
    "toml_value",
]

#: the top-level keys a sweep file may have
SWEEP_KEYS = ("scenario", "routers", "seeds", "job_scales", "set", "grid", "name", "description")
#: the most seeds a count may ask for: a million runs of one configuration already take days
MAX_SEEDS = 10**6
KEY_LENGTH = 16  # hex digits of sha256: 64 bits, no collision in any sweep a person runs


# -- routers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouterChoice:
    """One router of a comparison or sweep: ``label`` (how tables name it), registry ``name``, ``params``."""

    label: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def accepts(self, param: str) -> bool:
        from ..routers.base import router_class

        return param in router_class(self.name).Params.model_fields


def parse_router(spec: str | Mapping[str, Any], key: str = "routers") -> RouterChoice:
    """``"jsq"``, ``"weighted:split=optimal"``, ``"dgdlb:step=0.1,interval=0.5"`` or ``{name=..., ...}``.

    Values are TOML values (bare words are strings). Unknown routers and bad
    parameters raise :class:`ScenarioError` naming ``key`` or ``router.<param>``.
    """
    from ..routers.base import router_class, validate_params

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
        for item in split_top_level(rest):
            pname, eq, text = item.partition("=")
            if not eq or not pname.strip():
                raise ScenarioError(key, f"router parameters look like name:param=value,..., got '{spec}'")
            params[pname.strip()] = parse_value(text.strip())
    else:
        raise ScenarioError(key, f"a router is a name or a table, got {spec!r}")
    router_class(name, key=key)
    validate_params(name, params)
    return RouterChoice(label, name, params)


def split_top_level(text: str) -> list[str]:
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
    try:
        return toml_inline(value)
    except TypeError:
        raise ScenarioError("", f"cannot use {value!r} as a scenario value") from None


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
    check_finite(data, "")  # a sweep's numbers are scenario numbers: finite (lbsim.registry.check_finite)
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
    for key_path, values in _flatten(raw_grid):
        if not _nonempty_list(values):
            raise ScenarioError(f"grid.{key_path}", f"must be a non-empty list of values, got {values!r}")
        _check_varied_key(key_path, "grid", job_scale_ok=False)
        grid[key_path] = list(values)

    raw_set = data.get("set", {})
    if isinstance(raw_set, Mapping):
        fixed = [f"{key_path}={toml_value(value)}" for key_path, value in _flatten(raw_set)]
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
    """``N`` -> ``first .. first + N - 1``; a list is taken as is. Every seed fits the
    output tables' int64 (:data:`lbsim.scenario.MAX_SEED`), checked before any run."""
    if isinstance(seeds, bool):
        raise ScenarioError("seeds", f"must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ScenarioError("seeds", f"must be >= 1, got {seeds}")
        if seeds > MAX_SEEDS:
            raise ScenarioError("seeds", f"must be at most {MAX_SEEDS:.0e} (runs per configuration), got {seeds}")
        if first + seeds - 1 > MAX_SEED:
            raise ScenarioError("seeds", f"seeds {first} to {first} + {seeds} - 1 go beyond 2**63 - 1, got {seeds}")
        return list(range(first, first + seeds))
    if not _nonempty_list(seeds) or not all(is_seed(s) for s in seeds):
        raise ScenarioError(
            "seeds", f"must be a count or a non-empty list of integers from 0 to 2**63 - 1, got {seeds!r}"
        )
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
    from ..routers.base import router_class

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
    job_scales: list[float | None] = [*spec.job_scales] if spec.job_scales else [None]
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
        from ..scenario import CapacityWarning

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


