"""The ``lbsim`` command line. Every command reports bad input as one line and exit status 2."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click

from .errors import ScenarioError

SET_HELP = "override any scenario key, e.g. --set frontends.0.rate=2.5 (repeatable)"


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
        except click.exceptions.Abort:
            _fail("aborted")
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lbsim")
def main():
    """lbsim: simulate distributed load balancing for globally served LLM inference."""


def _load(path: str, overrides, **flags):
    from .scenario import load_scenario

    overrides = list(overrides)
    for key, value in flags.items():
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_scenario(path, overrides)


def _print_summary(summary: dict) -> None:
    rows = [
        ("router", summary["router"]),
        ("seed", summary["seed"]),
        ("jobs arrived / completed", f"{summary['jobs_arrived']} / {summary['jobs_completed']}"),
        ("in system at end", summary["jobs_in_system_end"]),
        ("mean latency (s)", f"{summary['mean_latency']:.6g}"),
        ("p50 / p90 / p99 / p99.9 (s)", " / ".join(f"{summary[k]:.4g}" for k in ("p50", "p90", "p99", "p999"))),
        ("throughput (work/s)", f"{summary['throughput']:.6g} of {summary['offered_load']:.6g} offered"),
        ("wall time (s)", f"{summary['wall_seconds']:.3f} ({summary['jobs_per_second']:.0f} jobs/s)"),
    ]
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
@click.option("--quiet", is_flag=True, help="no progress bar, no summary")
@user_errors
def run(scenario, router, seed, horizon, job_scale, overrides, out, quiet):
    """Simulate SCENARIO once and write jobs, timeseries, routing and summary to --out."""
    from .engine import simulate

    flags = {"simulation.seed": seed, "simulation.horizon": horizon, "simulation.job_scale": job_scale}
    s = _load(scenario, _router_switch(scenario, router, overrides), **flags)
    result = simulate(s, progress=not quiet)
    result.write(out)
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def routers(as_json):
    """List the registered routers with their parameters and defaults."""
    from .routers import parameter_table

    table = parameter_table()
    if as_json:
        click.echo(json.dumps(table, indent=2, default=str))
        return
    for row in table:
        click.echo(f"{row['router']}: {row['description']}")
        for p in row["params"]:
            default = "required" if p["default"] is None and not p["description"] else f"default {p['default']!r}"
            click.echo(f"    {p['name']} ({default}): {p['description']}")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the optimum as JSON")
@user_errors
def optimum(scenario, overrides, as_json):
    """The centralized optimal static split of SCENARIO (DESIGN.md section 2)."""
    from .optimum import optimum as solve

    s = _load(scenario, overrides)
    opt = solve(s)
    if as_json:
        click.echo(json.dumps(opt.to_dict(), indent=2))
        return
    click.echo(f"mean latency {opt.mean_latency:.6g} s (network {opt.mean_network:.4g}, sojourn {opt.mean_sojourn:.4g})")
    click.echo("backend loads and marginal costs:")
    for j in range(s.num_backends):
        click.echo(
            f"  {s.backend_label(j):>12}  flow {opt.flow[j]:.4g}  load {opt.load[j]:.4g}  "
            f"marginal cost {opt.marginal_cost[j]:.4g}"
        )
    click.echo("routing (rows: frontends):")
    for i in range(s.num_frontends):
        click.echo(f"  {s.frontend_label(i):>12}  " + " ".join(f"{p:.3f}" for p in opt.routing[i]))
