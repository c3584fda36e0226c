"""Build step: the wheel carries the repository's ``scenarios/`` as ``lbsim/scenarios`` package data.

Everything else is in ``pyproject.toml``. ``scenarios/`` at the repository
root stays the one source of the example scenarios (README, tests and
analysis scripts name them there); this copies them into the built package,
where ``lbsim.examples`` finds them once installed. ``CITATION.cff`` goes
into the package too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SCENARIOS = ROOT / "scenarios"


class BuildPyWithScenarios(build_py):
    """``build_py`` that also copies ``scenarios/*.toml`` into ``lbsim/scenarios`` of the build,
    and ``CITATION.cff`` into ``lbsim/`` (how to cite travels with the code)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads scenarios/ in place
            return
        target = Path(self.build_lib) / "lbsim" / "scenarios"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(SCENARIOS.glob("*.toml")):
            shutil.copyfile(path, target / path.name)
        shutil.copyfile(ROOT / "CITATION.cff", target.parent / "CITATION.cff")


setup(cmdclass={"build_py": BuildPyWithScenarios})
