"""The documentation in ``docs/`` runs: every example in it is a test, so it cannot drift from the code.

- every ``docs/*.md`` is run with :func:`doctest.testfile` (the ``>>>``
  examples inside its python blocks), from the repository's root;
- every python block without ``>>>`` is executed as a script;
- every toml block parses, and a whole scenario (one with ``[[frontends]]``
  and ``[[backends]]``) loads with :meth:`lbsim.Scenario.from_dict`;
- the routers, rate families and size distributions the docs list are exactly
  the registered ones (a new one without documentation fails here);
- ``lbsim rates`` and ``lbsim distributions`` list the registries.
"""

from __future__ import annotations

import doctest
import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import lbsim
from lbsim.cli import main
from lbsim.distributions import DISTRIBUTIONS
from lbsim.rates import RATE_FAMILIES
from lbsim.routers import ROUTERS

ROOT = Path(__file__).parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _blocks(language: str) -> list[tuple[str, str]]:
    """``(label, code)`` of every fenced block of ``language`` in the docs, label ``file:line``."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{path.name}:{line}", match.group(2)))
    return found


def _listed(path: Path, block: str) -> set[str]:
    """The names in the first column of the table between ``<!-- block:begin -->`` and ``<!-- block:end -->``."""
    text = path.read_text()
    match = re.search(rf"<!-- {block}:begin -->(.*?)<!-- {block}:end -->", text, re.DOTALL)
    assert match, f"{path.name}: no <!-- {block}:begin/end --> table"
    rows = [line for line in match.group(1).strip().splitlines() if line.startswith("|")][2:]  # past the header
    return {m.group(1) for line in rows if (m := re.match(r"\| `([^`]+)` \|", line))}


def _registered(registry: dict) -> set[str]:
    # Tests register helpers of their own under names starting with "_" (a spy router).
    return {name for name in registry if not name.startswith("_")}


@pytest.fixture
def at_root(monkeypatch):
    """Run from the repository's root, and leave the registries as they were (examples register classes)."""
    monkeypatch.chdir(ROOT)
    saved = [(registry, dict(registry)) for registry in (ROUTERS, RATE_FAMILIES, DISTRIBUTIONS)]
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)


def test_there_are_docs():
    assert {p.name for p in DOCS} >= {"index.md", "model.md", "routers.md", "extending.md"}


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_doctests(path, at_root, capsys):
    results = doctest.testfile(str(path), module_relative=False, optionflags=OPTIONS, encoding="utf-8")
    report = capsys.readouterr().out
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {path.name}:\n{report}"


def test_python_blocks_without_prompts_run(at_root):
    blocks = [(label, code) for label, code in _blocks("python") if ">>>" not in code]
    assert blocks, "expected at least one plain python block"
    for label, code in blocks:
        exec(compile(code, label, "exec"), {"__name__": "__docs__"})  # noqa: S102  (running the docs is the point)


def test_every_python_block_is_a_doctest_or_a_script():
    # A block that mixes prompts and plain code would run only in part.
    for label, code in _blocks("python"):
        lines = [line for line in code.splitlines() if line.strip()]
        if ">>>" in code:
            assert lines[0].startswith(">>>"), f"{label}: a doctest block must start with >>>"


def test_toml_blocks_parse_and_scenarios_load():
    blocks = _blocks("toml")
    assert blocks
    scenarios = 0
    for label, code in blocks:
        try:
            data = tomllib.loads(code)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{label}: not valid TOML: {exc}")
        if "frontends" in data and "backends" in data:
            try:
                lbsim.Scenario.from_dict(data)
            except lbsim.ScenarioError as exc:
                pytest.fail(f"{label}: the scenario does not load: {exc}")
            scenarios += 1
    assert scenarios >= 1


def test_rate_families_in_the_docs_are_the_registered_ones():
    assert _listed(ROOT / "docs" / "model.md", "rate-families") == _registered(RATE_FAMILIES)


def test_distributions_in_the_docs_are_the_registered_ones():
    assert _listed(ROOT / "docs" / "model.md", "distributions") == _registered(DISTRIBUTIONS)


def test_routers_in_the_docs_are_the_registered_ones():
    assert _listed(ROOT / "docs" / "routers.md", "routers") == _registered(ROUTERS)


def test_every_registered_router_has_a_section_or_a_bullet():
    text = (ROOT / "docs" / "routers.md").read_text().split("<!-- routers:end -->")[1]
    for name in _registered(ROUTERS):
        assert f"`{name}`" in text, f"docs/routers.md describes no router `{name}` below its table"


def test_every_router_parameter_is_documented():
    from lbsim.routers import parameter_table

    text = (ROOT / "docs" / "routers.md").read_text()
    for row in parameter_table():
        if row["router"].startswith("_"):
            continue
        for p in row["params"]:
            assert f"`{p['name']}`" in text, f"docs/routers.md: parameter {p['name']} of {row['router']} is missing"


#: the project's design notes live outside the repository: users have only docs/ (model.md, routers.md)
OUTSIDE = re.compile(r"\bshared[/]|\b(DESIGN|ALGORITHMS)[.]md")


def test_links_between_pages_resolve_and_nothing_points_outside_the_repository():
    for path in [*DOCS, ROOT / "README.md"]:
        text = path.read_text()
        assert not OUTSIDE.search(text), f"{path.name} points outside the repository"
        for target in re.findall(r"\]\(([\w./-]+\.(?:md|toml|py|png))(?:#[^)]*)?\)", text):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
                assert (path.parent / target).resolve().is_relative_to(ROOT.resolve()), f"{path.name}: {target}"


# -- the generated references -------------------------------------------------------------------
def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("command", "registry", "key"),
    [("rates", RATE_FAMILIES, "kind"), ("distributions", DISTRIBUTIONS, "name")],
)
def test_listing_json_is_the_registry(command, registry, key):
    rows = json.loads(_invoke(command, "--json"))
    assert [row[key] for row in rows] == sorted(registry)
    for row in rows:
        cls = registry[row[key]]
        assert row["description"] and row["description"] in " ".join((cls.__doc__ or "").split())
        assert [p["name"] for p in row["params"]] == list(cls.model_fields)
        for p in row["params"]:
            assert set(p) == {"name", "default", "required", "constraints", "description"}
            assert p["description"], f"{command}: {row[key]}.{p['name']} has no description"
            assert p["required"] == (p["default"] is None and cls.model_fields[p["name"]].is_required())


def test_rates_text_lists_every_family_with_its_bounds():
    text = _invoke("rates")
    for kind in RATE_FAMILIES:
        assert re.search(rf"^{kind}: ", text, re.MULTILINE), kind
    assert "    a (required, > 0, <= 1): exponent" in text  # power's a
    assert "formula" not in text


def test_distributions_text_lists_every_distribution_with_defaults():
    text = _invoke("distributions")
    for name in DISTRIBUTIONS:
        assert re.search(rf"^{name}: ", text, re.MULTILINE), name
    assert "    alpha (default 2.5, > 1): tail index" in text
    assert "    spread (default 1.0, >= 0, <= 1)" in text


def test_rate_formulas_in_the_json_are_the_classes():
    rows = {row["kind"]: row for row in json.loads(_invoke("rates", "--json"))}
    assert rows["saturating"]["formula"] == "c*x/(x+k)"
    assert rows["batch"]["formula"] == "x/(a+b*x)"
    assert rows["servers"]["params"][1] == {
        "name": "k",
        "default": None,
        "required": True,
        "constraints": "> 0",
        "description": "load at which all servers are busy (work units)",
    }
