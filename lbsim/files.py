"""Files that appear whole or not at all.

Every output lbsim writes goes to a temporary name beside its destination
and is renamed into place, so a reader, or a sweep resumed after ``kill -9``,
sees the complete file or none. The pid in the temporary name tells a later
process whose leftover a stray temporary file is.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete the temporary files in ``directory`` left by processes that are gone (``kill -9``).

    Those of a live process (another command writing to the same directory) are left alone.
    """
    for tmp in Path(directory).glob(".*.tmp"):
        if not tmp.is_file():
            continue
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except ValueError:
            pid = None
        if pid is None or not process_alive(pid):
            tmp.unlink(missing_ok=True)


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


def write_parquet(path: str | Path, frame: pd.DataFrame, *, sync: bool = False) -> None:
    """A DataFrame without its index; byte-identical for identical frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write(path, lambda p: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), p), sync=sync)


def write_toml(path: str | Path, data: Mapping[str, Any]) -> None:
    """``data`` (a scenario dict) as a TOML file that :mod:`tomllib` reads back to the same dict."""
    write_text(path, toml_text(data))


def toml_text(data: Mapping[str, Any]) -> str:
    """TOML text of a table of plain data (TOML v1.0.0, https://toml.io/en/v1.0.0).

    Values go first, then sub-tables as ``[name]`` and lists of tables as
    ``[[name]]`` sections, one level deep; anything deeper is written inline
    (``{ kind = "saturating", c = 4.0 }``). ``None`` has no TOML form: such
    keys are left out, as a scenario's unset keys are.
    """
    lines: list[str] = []
    sections: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            sections += ["", f"[{_toml_key(key)}]", *_toml_pairs(value)]
        elif _is_table_list(value):
            for item in value:
                sections += ["", f"[[{_toml_key(key)}]]", *_toml_pairs(item)]
        else:
            lines.append(f"{_toml_key(key)} = {toml_inline(value)}")
    return "\n".join(lines + sections).strip("\n") + "\n"


def toml_inline(value: Any) -> str:
    """One TOML value on one line; floats keep their repr, so they read back exactly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # a JSON string is a TOML basic string, but for DEL, which TOML wants escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {toml_inline(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    if hasattr(value, "item"):  # a numpy scalar
        return toml_inline(value.item())
    raise TypeError(f"no TOML form for {value!r}")


def _toml_pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_toml_key(k)} = {toml_inline(v)}" for k, v in table.items() if v is not None]


def _is_table_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def _toml_key(key: Any) -> str:
    text = str(key)
    if text and all(c.isascii() and (c.isalnum() or c in "_-") for c in text):
        return text
    return json.dumps(text)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
