"""Output directories that appear whole, say where they came from, and are never mixed with another command's.

Two kinds of output directory (docs/model.md section 3.3):

- **A run's** (``lbsim run``, ``lbsim fluid``): everything is written into a
  fresh temporary sibling ``.<name>.<pid>.tmp`` and moved into place only
  when every file is written (:func:`output_directory`), so a reader sees
  the whole run or none of it, and a run over a previous run cannot leave
  the earlier run's ``routing.parquet`` or ``jobs.parquet`` behind. A
  non-empty destination is refused unless ``force`` replaces it whole.
- **An experiment's** (``lbsim compare``, ``lbsim scaling``): finished runs
  accumulate in ``out/runs`` (:class:`~lbsim.experiments.store.RunStore`,
  which survives ``kill -9``) and the final tables are written file by file,
  each atomically (:mod:`lbsim.files`). ``command.json`` records what the
  directory is for (:func:`experiment_directory`): the same command resumes,
  another one is refused unless ``force`` starts the directory afresh.

The pid in a temporary name tells a later process whose leftover it is: the
siblings of processes that are gone (killed before they could clean up) are
deleted the next time that destination is written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ScenarioError
from .files import process_alive, remove_stale_temporaries, write_json

__all__ = ["COMMAND_FILE", "check_out", "experiment_directory", "lbsim_version", "output_directory"]

#: the file that says which command an experiment directory belongs to
COMMAND_FILE = "command.json"


def lbsim_version() -> str:
    """The running lbsim's version (read at call time, so a test can stand in another one)."""
    import lbsim

    return str(lbsim.__version__)


def check_out(out: str | Path | None, key: str = "--out") -> Path:
    """``out`` as a Path, or :class:`ScenarioError` if it can never be written: before anything runs.

    Refused: an empty path, a path that is (or lies under) a regular file,
    and a place where the nearest existing folder is not writable.
    """
    if out is None or str(out).strip() == "":
        raise ScenarioError(key, "must be a directory path, got ''")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ScenarioError(key, f"{path} is a file, not a directory")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ScenarioError(key, f"{path} lies under {existing}, which is a file")
    # os.access says yes to root on a read-only file system: try it (a probe folder, removed at once)
    probe = existing / f".lbsim-probe.{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise ScenarioError(key, f"cannot write {path}: {existing} is not writable ({exc.strerror})") from None
    return path


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_fresh(out: str | Path, force: bool = False, key: str = "--out") -> Path:
    """:func:`check_out`, and a non-empty ``out`` is refused unless ``force`` (which will replace it whole)."""
    path = check_out(out, key)
    if not force and _non_empty(path):
        raise ScenarioError(key, f"{path} is not empty: pass --force to replace it whole, or choose another --out")
    return path


@contextmanager
def output_directory(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``out`` to write into; move it into place when the block ends.

    If the block raises (Ctrl-C included) the temporary directory is deleted
    and ``out`` is untouched. A non-empty ``out`` is refused before the block
    runs unless ``force``; then it is replaced whole (renamed aside, the new
    directory renamed in, the old one deleted), so no file of the earlier
    output survives.
    """
    path = check_fresh(out, force)
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    _clean_siblings(path)
    tmp = _sibling(path, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _move_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sibling(path: Path, kind: str) -> Path:
    return path.absolute().parent / f".{path.name}.{os.getpid()}.{kind}"


def _move_into_place(tmp: Path, path: Path) -> None:
    if not path.exists():
        os.rename(tmp, path)
        return
    # rename(2) replaces only an empty directory: move the old one aside first
    old = _sibling(path, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _clean_siblings(path: Path) -> None:
    """Delete ``.<name>.<pid>.tmp``/``.old`` siblings of ``path`` left by processes that are gone."""
    parent = path.absolute().parent
    if not parent.is_dir():
        return
    for leftover in parent.glob(f".{path.name}.*.*"):
        stem, _, kind = leftover.name.rpartition(".")
        pid_text = stem.rpartition(".")[2]
        if kind in ("tmp", "old") and pid_text.isdigit() and not process_alive(int(pid_text)):
            shutil.rmtree(leftover, ignore_errors=True)


def experiment_directory(out: str | Path, command: Mapping[str, Any], force: bool = False) -> Path:
    """Prepare ``out`` for an experiment described by ``command`` (JSON data); resume it if it is this one's.

    A directory that holds this command's ``command.json`` is resumed (its
    finished runs are reused); an empty or missing one is started; any other
    non-empty directory (another command's, or not an experiment's) is
    refused unless ``force``, which deletes it and starts afresh.
    """
    path = check_out(out)
    record = {"lbsim_version": lbsim_version(), **command}
    wanted = json.loads(json.dumps(command, allow_nan=True))
    if _non_empty(path):
        try:
            found = json.loads((path / COMMAND_FILE).read_text())
            same = {k: v for k, v in found.items() if k != "lbsim_version"} == wanted
        except (OSError, ValueError):
            same = False
        if not same and not force:
            raise ScenarioError(
                "--out",
                f"{path} holds the output of another command: pass --force to replace it, or choose another --out",
            )
        if not same:
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # a final table half-written when a killed process wrote it
    write_json(path / COMMAND_FILE, record)
    return path
