"""The example scenarios shipped with lbsim, found where the installation put them.

The repository's ``scenarios/`` directory is their only source. A wheel
carries a copy as package data in ``lbsim/scenarios/`` (``setup.py`` copies
it at build time); a source checkout or an editable install reads
``scenarios/`` beside the package. So ``lbsim example two_regions > my.toml``
works from ``pip install lbsim`` as from a clone.

A scenario that names another file by a relative path (``sweep_example``
names ``two_regions.toml``) resolves it next to wherever it is written.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ScenarioError, unknown

__all__ = ["example_names", "example_path", "example_summary", "example_text", "scenario_dir"]

PACKAGE = Path(__file__).resolve().parent


def scenario_dir() -> Path:
    """The directory of the example scenarios: the wheel's ``lbsim/scenarios`` or the checkout's ``scenarios``."""
    candidates = (PACKAGE / "scenarios", PACKAGE.parent / "scenarios")
    for candidate in candidates:
        if any(candidate.glob("*.toml")):
            return candidate
    raise ScenarioError("example", f"no example scenarios in {' or '.join(map(str, candidates))}")


def example_names() -> list[str]:
    """The examples' names: their file names without ``.toml``, sorted."""
    return sorted(path.stem for path in scenario_dir().glob("*.toml"))


def example_path(name: str) -> Path:
    """The file of example ``name`` (``two_regions`` or ``two_regions.toml``)."""
    stem = name.removesuffix(".toml")
    names = example_names()
    if stem not in names:
        raise ScenarioError("example", unknown("example", name, names))
    return scenario_dir() / f"{stem}.toml"


def example_text(name: str) -> str:
    """The TOML text of example ``name``, comments included."""
    return example_path(name).read_text(encoding="utf-8")


def example_summary(name: str) -> str:
    """The first line of the example's opening comment: what it is."""
    for line in example_text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
