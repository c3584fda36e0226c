"""The resumable store: one JSON record per finished run, so a killed experiment resumes where it stopped.

A directory (``out/runs``) holds ``<key>.json`` per finished run, where
``key`` is :func:`~lbsim.experiments.specs.config_key` of the run's
configuration. A record is ``{"key", "params", "summary", "config", ...}``:
``params`` are the run's coordinates in the experiment, ``summary`` what
it measured, ``config`` everything it depends on (so a record is checked
against its key when it is read, and holds all it takes to run it again),
``lbsim_version`` the version that computed it. A run's tables (a
comparison's measured jobs) sit beside its record as
``<key>.<name>.parquet``, written before the record.

**Versions are never mixed.** A record written by another lbsim version
(or by one that did not record its version) makes :meth:`RunStore.finished`
refuse the directory with one line naming it and both versions: a resumed
experiment holds the numbers of one version only.

Files appear whole: each is written to a temporary file
``.<key>.json.<pid>.tmp``, synced, then renamed, so a record that exists
is a run that finished, even after a crash or ``kill -9``. Temporary files
of processes that are gone are deleted when the store is opened; those of
a live process (another sweep writing to the same directory) are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ScenarioError
from ..files import remove_stale_temporaries, write_parquet, write_text
from ..outputs import lbsim_version
from .specs import config_key

if TYPE_CHECKING:  # pandas loads on first use
    import pandas as pd

__all__ = ["RunStore"]


class RunStore:
    """The finished runs of an experiment, one record file per run key, in ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        """A finished run's record, or None if it is missing, not this run's or lacks a table (then it runs again)."""
        try:
            record = json.loads(self.path(key).read_text())
            tables = record.get("tables", [])
            whole = all(self._table_path(key, name).is_file() for name in tables)
            if (
                record["key"] == key
                and config_key(record["config"]) == key
                and isinstance(record["summary"], dict)
                and whole
            ):
                return record
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def finished(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The records of the runs among ``keys`` that finished (:class:`ScenarioError` if another version's)."""
        records = {key: record for key in keys if (record := self.load(key)) is not None}
        self.check_version(records.values())
        return records

    def check_version(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Refuse records computed by another lbsim version: one line naming the directory and both versions."""
        ours = lbsim_version()
        for record in records:
            theirs = record.get("lbsim_version", "unknown (before 0.1.0 recorded it)")
            if theirs != ours:
                raise ScenarioError(
                    str(self.directory),
                    f"holds runs of lbsim {theirs}, this is lbsim {ours}: "
                    "resume with that version, or use another --out (or --force where the command has it)",
                )

    def table(self, key: str, name: str) -> pd.DataFrame:
        """A finished run's table ``name`` (saved with :meth:`save`)."""
        import pandas as pd

        return pd.read_parquet(self._table_path(key, name))

    def _table_path(self, key: str, name: str) -> Path:
        return self.directory / f"{key}.{name}.parquet"

    def save(
        self,
        key: str,
        params: Mapping[str, Any],
        summary: Mapping[str, Any],
        config: Mapping[str, Any],
        tables: Mapping[str, pd.DataFrame] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Write a finished run's tables, then its record (whole and synced), and return the record."""
        for name, frame in (tables or {}).items():
            write_parquet(self._table_path(key, name), frame, sync=True)
        record = {
            "key": key,
            "lbsim_version": lbsim_version(),
            "params": params,
            "summary": summary,
            "config": config,
            **({"tables": sorted(tables)} if tables else {}),
            **extra,
        }
        # fsync too: a run file that exists is a run that finished, even after a crash
        write_text(self.path(key), json.dumps(record, indent=1, allow_nan=True) + "\n", sync=True)
        return record
