"""Files that appear whole or not at all.

Every output lbsim writes goes to a temporary name beside its destination
and is renamed into place, so a reader, or a sweep resumed after ``kill -9``,
sees the complete file or none. The pid in the temporary name tells a later
process whose leftover a stray temporary file is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | Path, write: Callable[[Path], object], *, sync: bool = False) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``; ``sync`` also survives a power cut."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, *, sync: bool = False) -> None:
    atomic_write(path, lambda p: p.write_text(text), sync=sync)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    """A DataFrame without its index; byte-identical for identical frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write(path, lambda p: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), p))
