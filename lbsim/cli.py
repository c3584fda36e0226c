"""The ``lbsim`` command line. Every command reports bad input as one line and exit status 2."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .errors import ScenarioError

SET_HELP = "override any scenario key, e.g. --set frontends.0.rate=2.5 (repeatable)"
FORCE_HELP = "replace a non-empty --out whole (without it, a non-empty --out is refused)"


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def user_errors(func):
    """Turn ScenarioError into one line on stderr and exit status 2; show warnings as one line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = func(*args, **kwargs)
            except ScenarioError as exc:
                _flush_warnings(caught)
                _fail(str(exc))
        _flush_warnings(caught)
        return result

    return wrapper


def _flush_warnings(caught) -> None:
    from .scenario import CapacityWarning

    for w in caught:
        if issubclass(w.category, CapacityWarning):
            click.echo(f"warning: {w.message}", err=True)


class Group(click.Group):
    """A click group whose usage errors are one line too."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            _fail(exc.format_message())
        except click.exceptions.Abort:  # Ctrl-C: 130 as a shell reports SIGINT (2 stays for bad input)
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lbsim")
def main():
    """lbsim: simulate distributed load balancing for globally served LLM inference."""


def _load(path: str, overrides, **flags):
    from .scenario import load_scenario

    return load_scenario(path, _overrides(overrides, **flags))


def _overrides(overrides, **flags) -> list[str]:
    """The ``--set`` strings with the shorthand options (``--seed``...) as overrides too: what summary.json records."""
    overrides = list(overrides)
    for key, value in flags.items():
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides


def _print_summary(summary: dict) -> None:
    if summary.get("mode") == "saturated":
        _print_rows(_saturated_rows(summary))
        return
    rows = [
        ("router", summary["router"]),
        ("seed", summary["seed"]),
        ("jobs arrived / completed", f"{summary['jobs_arrived']} / {summary['jobs_completed']}"),
        (
            "in system at the horizon" if summary["status"] != "job_limit" else "in system at the stop",
            f"{summary['jobs_in_system_end']} ({summary['jobs_drained']} served in the drain)",
        ),
        ("mean latency (s)", f"{summary['mean_latency']:.6g}"),
        ("p50 / p90 / p99 / p99.9 (s)", " / ".join(f"{summary[k]:.4g}" for k in ("p50", "p90", "p99", "p999"))),
        ("throughput (work/s)", f"{summary['throughput']:.6g} of {summary['offered_load']:.6g} offered"),
        ("served (work/s)", f"{summary['served']:.6g} (jobs finished or not)"),
        ("wall time (s)", f"{summary['wall_seconds']:.3f} ({summary['jobs_per_second']:.0f} jobs/s)"),
    ]
    if summary["status"] != "complete":  # a limit ended the run: say what the figures leave out
        why = {"job_limit": "jobs in the system passed simulation.max_jobs_in_system",
               "drain_limit": f"{summary['jobs_undrained']} jobs unserved at simulation.drain_limit"}  # fmt: skip
        rows.insert(0, ("status", f"{summary['status']} at t = {summary['t_end']:.6g} ({why[summary['status']]})"))
    if "ttft_p99" in summary:  # llm backends
        rows[-1:-1] = _engine_rows(summary)
    _print_rows(rows)


def _engine_rows(summary: dict) -> list[tuple[str, str]]:
    return [
        ("TTFT mean / p99 (s)", f"{summary['ttft_mean']:.4g} / {summary['ttft_p99']:.4g}"),
        ("TPOT mean / p99 (s)", f"{summary['tpot_mean']:.4g} / {summary['tpot_p99']:.4g}"),
        ("barrier idle (share of rank-time)", f"{summary['barrier_idle']:.4g}"),
        ("energy per token (J)", f"{summary['energy_per_token']:.4g}"),
        ("preemptions", f"{summary['preemptions']}"),
    ]


def _saturated_rows(summary: dict) -> list[tuple[str, str]]:
    return [
        ("admission", summary["admission"]),
        ("seed", summary["seed"]),
        ("requests", summary["jobs_arrived"]),
        ("steps (window / all)", f"{summary['steps_window']} / {summary['steps']}"),
        ("mean imbalance (tokens)", f"{summary['mean_imbalance']:.6g}"),
        ("mean idle rate", f"{summary['mean_idle_rate']:.4g}"),
        ("throughput (tokens/s)", f"{summary['throughput_tokens']:.6g}"),
        ("energy in window (J)", f"{summary['energy']:.6g}"),
        ("mean TPOT (s)", f"{summary['mean_tpot']:.4g}"),
        ("makespan (s)", f"{summary['makespan']:.6g}"),
        *_engine_rows(summary),
        ("wall time (s)", f"{summary['wall_seconds']:.3f}"),
    ]


def _print_rows(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--router", help="router name (default: the scenario's); see `lbsim routers`")
@click.option("--seed", type=int, help="master seed (default: simulation.seed)")
@click.option("--horizon", type=float, help="simulated seconds (default: simulation.horizon)")
@click.option("--job-scale", type=float, help="job size scale (default: simulation.job_scale)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.option("--quiet", is_flag=True, help="no progress bar, no summary")
@user_errors
def run(scenario, router, seed, horizon, job_scale, overrides, out, force, quiet):
    """Simulate SCENARIO once and write jobs, timeseries, routing, summary and scenario.toml to --out."""
    from .engine import simulate
    from .outputs import check_fresh

    flags = {"simulation.seed": seed, "simulation.horizon": horizon, "simulation.job_scale": job_scale}
    applied = _overrides(_router_switch(scenario, router, overrides), **flags)
    s = _load(scenario, applied)
    check_fresh(out, force)  # before the simulation, not after it
    result = simulate(s, progress=not quiet)
    result.write(out, overrides=applied, force=force)
    if not quiet:
        _print_summary(result.summary())
        click.echo(f"wrote {Path(out)}/")


def _router_switch(path, router, overrides):
    """``--router`` naming another router drops the scenario's router parameters (they belong to it)."""
    if router is None:
        return overrides
    from .routers.base import router_class
    from .scenario import read_toml

    router_class(router, key="--router")
    table = read_toml(path).get("router", {})
    if table.get("name") == router:
        return overrides
    return [f"router={{ name = \"{router}\" }}", *overrides]


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@user_errors
def validate(scenario, overrides):
    """Check SCENARIO without running it."""
    s = _load(scenario, overrides)
    click.echo(
        f"{scenario}: ok ({s.num_frontends} frontends, {s.num_backends} backends, "
        f"router {s.router.name}, telemetry {s.network.telemetry})"
    )


def _print_registry(table: list[dict], key: str, as_json: bool) -> None:
    """Print a registry's parameter table (routers, backend models, ...) as text or JSON."""
    if as_json:
        click.echo(json.dumps(table, indent=2, default=str))
        return
    for row in table:
        click.echo(f"{row[key]}: {row['description']}")
        for p in row["params"]:
            required = p.get("required", p["default"] is None and not p["description"])
            default = "required" if required else f"default {p['default']!r}"
            bounds = f", {p['constraints']}" if p.get("constraints") else ""
            click.echo(f"    {p['name']} ({default}{bounds}): {p['description']}")


#: the commands that list an extension point's registry: (command, module, column, help)
REGISTRIES = (
    ("routers", "lbsim.routers", "router", "List the registered routers with their parameters and defaults."),
    ("backends", "lbsim.backends", "model", "List the registered backend models with their parameters and defaults."),
    (
        "admissions",
        "lbsim.llm.admission",
        "admission",
        "List the admission policies of llm backends with their dispatch, parameters and defaults.",
    ),
    ("rates", "lbsim.rates", "kind", "List the registered rate families mu(x) with their formulas and parameters."),
    (
        "distributions",
        "lbsim.distributions",
        "name",
        "List the registered size (and jitter) distributions with their shape parameters.",
    ),
)


def _registry_command(name: str, module: str, column: str, help_text: str) -> None:
    def listing(as_json: bool) -> None:
        import importlib

        _print_registry(importlib.import_module(module).parameter_table(), column, as_json)

    listing.__doc__ = help_text
    option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    main.command(name)(option(listing))


for _registry in REGISTRIES:
    _registry_command(*_registry)


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the optimum as JSON")
@click.option(
    "--overload", is_flag=True, help="demand no split can serve: the most throughput, then stable backends, least load"
)
@user_errors
def optimum(scenario, overrides, as_json, overload):
    """The centralized optimal static split of SCENARIO (docs/model.md section 2)."""
    from .optimum import optimum as solve

    s = _load(scenario, overrides)
    if overload:
        _print_overload(s, solve(s, overload=True), as_json)
        return
    opt = solve(s)
    if as_json:
        click.echo(json.dumps(opt.to_dict(), indent=2))
        return
    click.echo(
        f"mean latency {opt.mean_latency:.6g} s (network {opt.mean_network:.4g}, sojourn {opt.mean_sojourn:.4g})"
    )
    click.echo("backend loads and marginal costs:")
    for j in range(s.num_backends):
        click.echo(
            f"  {s.backend_label(j):>12}  flow {opt.flow[j]:.4g}  load {opt.load[j]:.4g}  "
            f"marginal cost {opt.marginal_cost[j]:.4g}"
        )
    click.echo("routing (rows: frontends):")
    for i in range(s.num_frontends):
        click.echo(f"  {s.frontend_label(i):>12}  " + " ".join(f"{p:.3f}" for p in opt.routing[i]))


def _print_overload(s, best, as_json: bool) -> None:
    """``lbsim optimum --overload``: the overload optimum as JSON or as a short table."""
    if as_json:
        click.echo(json.dumps(best.to_dict(), indent=2))
        return
    state = "overloaded" if best.overloaded else "not overloaded"
    click.echo(f"{state}: throughput {best.throughput:.6g} of {best.demand:.6g} offered")
    click.echo(f"stable backends {len(best.stable_backends)}, total load on them {best.total_load:.6g}")
    click.echo("backends:")
    for j in range(s.num_backends):
        load = f"load {best.load[j]:.4g}" if j in best.stable_backends else "unstable"
        click.echo(f"  {s.backend_label(j):>12}  flow {best.flow[j]:.4g}  served {best.served[j]:.4g}  {load}")
    click.echo("routing (rows: frontends):")
    for i in range(s.num_frontends):
        click.echo(f"  {s.frontend_label(i):>12}  " + " ".join(f"{p:.3f}" for p in best.routing[i]))
def _seed_option(ctx: click.Context, param: click.Parameter, value: str) -> int | list[int]:
    """``--seeds``: a count N >= 1, or a list ``1,2,3`` of seeds from 0 to 2**63 - 1 (what the tables store)."""
    from .arguments import is_seed
    from .scenario import MAX_SEED

    items = [item.strip() for item in value.split(",")]
    try:
        numbers = [int(item) for item in items]
    except ValueError:
        raise click.BadParameter(f"must be a count or a list of integers like 1,2,3, got {value!r}") from None
    if len(numbers) == 1 and "," not in value:
        if not 1 <= numbers[0] <= MAX_SEED:
            raise click.BadParameter(f"a count of seeds must be >= 1, got {value!r}")
        return numbers[0]
    if not all(is_seed(n) for n in numbers):
        raise click.BadParameter(f"seeds must be integers from 0 to 2**63 - 1, got {value!r}")
    return numbers


def _scales_option(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    """``--scales``: comma-separated finite numbers > 0."""
    import math

    try:
        scales = [float(item) for item in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"must be comma-separated numbers, got {value!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise click.BadParameter(f"must be finite numbers > 0, got {value!r}")
    return scales


def _router_list(text: str) -> list[str]:
    """``a,b:step=0.1,interval=0.2,c`` -> ``["a", "b:step=0.1,interval=0.2", "c"]``."""
    from .experiments import split_top_level

    routers: list[str] = []
    for item in split_top_level(text):
        item = item.strip()
        if routers and "=" in item and ":" not in item.split("=", 1)[0]:
            routers[-1] += "," + item  # a parameter of the router before it
        else:
            routers.append(item)
    return routers


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--routers", required=True, help="comma-separated routers, each NAME or NAME:param=value,...")
@click.option(
    "--seeds",
    default="5",
    show_default=True,
    callback=_seed_option,
    help="number of seeds (from simulation.seed on) or a list 1,2,3",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--out", type=click.Path(file_okay=False), help="write comparison.parquet/.csv, runs.parquet, latency_ccdf.png"
)
@click.option("--workers", type=int, default=1, show_default=True, help="parallel runs")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", help="dask scheduler address (default: a LocalCluster)")
@click.option("--force", is_flag=True, help="replace an --out that holds another command's output")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def compare(scenario, routers, seeds, overrides, out, workers, executor, scheduler, force, quiet):
    """Compare routers on SCENARIO with common random numbers: mean and tail latency with 95% CIs; resumable."""
    from .experiments import compare as run_compare
    from .outputs import check_out

    if out is not None:
        check_out(out)
    s = _load(scenario, overrides)
    result = run_compare(
        s, _router_list(routers), seeds, out=out, workers=workers, progress=not quiet,
        executor=executor, scheduler=scheduler, force=force,
    )  # fmt: skip
    click.echo(result.format_table())
    if out:
        click.echo(f"wrote {Path(out)}/")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="sweep directory (re-run to resume)")
@click.option("--workers", type=int, default=1, show_default=True, help="parallel runs")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", help="dask scheduler address (default: a LocalCluster of --workers)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def sweep(spec, out, workers, executor, scheduler, quiet):
    """Run the sweep in SPEC (a TOML grid of keys, routers, seeds, job scales); resumable."""
    from .experiments import sweep as run_sweep
    from .outputs import check_out

    check_out(out)
    table = run_sweep(spec, out, workers=workers, executor=executor, scheduler=scheduler, progress=not quiet)
    click.echo(f"{len(table)} runs; results in {Path(out) / 'results.parquet'}")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--router", help="router with a fluid analogue (default: the scenario's)")
@click.option("--horizon", type=float, help="model seconds (default: simulation.horizon)")
@click.option("--dt", type=float, help="time step (default: from the delays and the fastest rate)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@user_errors
def fluid(scenario, router, horizon, dt, overrides, out, quiet, force):
    """Integrate the fluid model of SCENARIO: timeseries.parquet and routing.parquet, as `lbsim run`."""
    from .fluid import fluid as integrate
    from .outputs import check_fresh

    applied = _router_switch(scenario, router, overrides)
    s = _load(scenario, applied)
    check_fresh(out, force)
    result = integrate(s, horizon=horizon, dt=dt, progress=not quiet)
    result.write(out, overrides=applied, force=force)
    for key, value in result.summary().items():
        if not isinstance(value, (list, dict)):
            click.echo(f"{key:<24} {value}")
    click.echo(f"wrote {Path(out)}/")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--router", help="router (default: the scenario's)")
@click.option(
    "--scales",
    default="1,0.1,0.01,0.001",
    show_default=True,
    callback=_scales_option,
    help="comma-separated job scales",
)
@click.option("--seeds", type=int, default=4, show_default=True, help="seeds per scale (common across scales)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory (re-run to resume)")
@click.option("--workers", type=int, default=1, show_default=True, help="parallel runs")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", help="dask scheduler address (default: a LocalCluster of --workers)")
@click.option("--force", is_flag=True, help="replace an --out that holds another command's output")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def scaling(scenario, router, scales, seeds, overrides, out, workers, executor, scheduler, force, quiet):
    """Job-size scaling: distance between simulated loads and the fluid model as job_scale shrinks; resumable."""
    from .outputs import check_out
    from .scaling import scaling as study

    check_out(out)
    s = _load(scenario, _router_switch(scenario, router, overrides))
    result = study(
        s, s.router.name, scales, seeds, out=out, progress=not quiet, workers=workers,
        executor=executor, scheduler=scheduler, force=force,
    )  # fmt: skip
    click.echo(result.format_table())
    click.echo(f"wrote {Path(out)}/")


@main.command()
@click.argument("name", required=False)
@click.option("--out", type=click.Path(dir_okay=False), help="write the scenario to this file instead of printing it")
@user_errors
def example(name, out):
    """List the example scenarios shipped with lbsim, or print scenario NAME (`lbsim example two_regions > my.toml`)."""
    from . import examples

    if name is None:
        names = examples.example_names()
        width = max(len(n) for n in names)
        for n in names:
            click.echo(f"{n:<{width}}  {examples.example_summary(n)}")
        return
    text = examples.example_text(name)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ScenarioError("--out", f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {Path(out)}", err=True)
