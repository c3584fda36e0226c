"""What the analysis scripts share: their command line, where files go, tables as markdown.

Every script in this folder regenerates one result of the README from
scratch: it runs lbsim, writes PNG figures and a markdown + CSV table into
an output folder, and returns a :class:`Section` that ``make_all.py`` puts
into ``results.md``. Each runs alone too::

    python analysis/dgdlb_stability.py [--quick] [--out analysis/output] [--workers 2]

``--quick`` shrinks horizons, seeds and grids so that every script together
runs in a couple of minutes (CI, smoke tests); its numbers are noisy and
only show that the pipeline works. Intermediate data (sweep runs, parquet
tables) goes to ``OUT/data/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
DEFAULT_OUT = ROOT / "analysis" / "output"
#: PNG resolution: README figures stay well under 200 KB
DPI = 100


@dataclass
class Section:
    """One result: what ``results.md`` shows for it."""

    title: str
    command: str
    text: str = ""
    tables: list[str] = field(default_factory=list)  # markdown, in order
    figures: list[Path] = field(default_factory=list)
    headline: str = ""
    seconds: float = 0.0


@dataclass
class Settings:
    out: Path
    quick: bool
    workers: int

    @property
    def data(self) -> Path:
        path = self.out / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pick(self, quick, full):
        """``quick`` in quick mode, ``full`` otherwise."""
        return quick if self.quick else full


def parse_args(description: str, argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny horizons and seeds (a smoke test, noisy numbers)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--workers", type=int, default=2, help="parallel simulation runs (default 2)")
    args = parser.parse_args(argv)
    return Settings(out=args.out.resolve(), quick=args.quick, workers=max(1, args.workers))


def script_main(run: Callable[[Settings], Section], description: str) -> None:
    """The ``__main__`` of a script: parse the command line, run, print where things went."""
    settings = parse_args(description)
    settings.out.mkdir(parents=True, exist_ok=True)
    section = timed(run, settings)
    print(f"{section.title}: {section.headline}")
    for figure in section.figures:
        print(f"  wrote {figure}")
    print(f"  ({section.seconds:.0f} s)")


def timed(run: Callable[[Settings], Section], settings: Settings) -> Section:
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # capacity warnings of deliberately overloaded routers
        section = run(settings)
    section.seconds = time.perf_counter() - started
    return section


#: the README's figures are committed: each stays under this many bytes
MAX_PNG_BYTES = 190_000


def save(figure, settings: Settings, name: str) -> Path:
    """Write a figure as ``OUT/name.png`` (at a lower resolution if it would exceed MAX_PNG_BYTES); return the path."""
    path = settings.out / f"{name}.png"
    for dpi in (DPI, 85, 70, 60):
        figure.savefig(path, dpi=dpi)
        if path.stat().st_size <= MAX_PNG_BYTES:
            break
    return path


def write_table(table: pd.DataFrame, settings: Settings, name: str, digits: int = 4) -> str:
    """Write ``OUT/name.csv`` (full precision) and ``OUT/name.md``; return the markdown."""
    table.to_csv(settings.out / f"{name}.csv", index=False)
    text = markdown(table, digits)
    (settings.out / f"{name}.md").write_text(text + "\n")
    return text


def markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a GitHub markdown table, numbers to ``digits`` significant figures."""

    def cell(v) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "n/a"
            return f"{v:.{digits}g}"
        return str(v)

    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def with_ci(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """``1.23 ± 0.04`` (half the interval), or the estimate alone without an interval."""
    if not math.isfinite(estimate):
        return "n/a"
    if math.isfinite(low) and math.isfinite(high):
        return f"{estimate:.{digits}g} ± {(high - low) / 2:.2g}"
    return f"{estimate:.{digits}g}"


def command(script: str) -> str:
    return f"python analysis/{script} [--quick] [--out DIR]"


def ensure_path() -> None:
    """Make ``import common`` work when a script is run from anywhere."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)


def comparison_markdown(table: pd.DataFrame, settings: Settings, name: str, optimum: float = math.nan) -> str:
    """A ``Comparison.table`` as the README shows it (CSV keeps every column): markdown."""
    table.to_csv(settings.out / f"{name}.csv", index=False)
    rows = []
    for r in table.to_dict("records"):
        row = {"router": r["router"], "mean latency (s)": with_ci(r["mean"], r["mean_low"], r["mean_high"])}
        for q, title in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            row[f"{title} (s)"] = with_ci(r[q], r[f"{q}_low"], r[f"{q}_high"])
        if math.isfinite(optimum):
            row["mean / optimum"] = with_ci(r["ratio_to_optimum"], r["ratio_to_optimum_low"], r["ratio_to_optimum_high"])
        rows.append(row)
    text = markdown(pd.DataFrame(rows))
    (settings.out / f"{name}.md").write_text(text + "\n")
    return text


# -- runs in parallel (lbsim.experiments' executor) -----------------------------------------
def simulate_tables(job: tuple) -> dict:
    """One simulation of a scenario dict (an executor's task): the tables asked for, and the summary.

    ``job`` is ``(config, router, params)`` or ``(config, router, params, tables)``; tables default to routing.
    """
    import lbsim
    from lbsim.scenario import Scenario

    config, router, params, *rest = job
    tables = rest[0] if rest else ("routing",)
    result = lbsim.simulate(Scenario.from_dict(config), router=router, **params)
    out = {name: getattr(result, name) for name in tables}
    out["summary"] = result.summary()
    return out


def parallel_map(function: Callable, jobs: Sequence, workers: int) -> list:
    """``[function(job) for job in jobs]`` on lbsim's executor: a process pool when ``workers > 1`` (same order)."""
    from lbsim.experiments import map_ordered

    return map_ordered(function, list(jobs), workers=max(1, min(workers, len(jobs))))
