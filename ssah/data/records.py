"""Read prompt/response records through `datasets`: local JSONL/JSON files or hub datasets.

Every stage reads data through `load_records`, so the toy world and real datasets
(AdvBench, Alpaca, ...) share one path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from ssah.errors import SsahError

datasets.disable_progress_bars()  # one "Generating split" bar per file floods stage logs

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


_MIRROR: dict[str, str] = {}


def set_mirror(mapping: Mapping[str, str] | None) -> None:
    """`paths.data_mirror` of the running stage: hub id (or "*" for all) -> local file."""
    _MIRROR.clear()
    _MIRROR.update({str(k): str(v) for k, v in (mapping or {}).items()})


def load_records(
    source: str | Path,
    split: str = "train",
    columns: dict[str, str] | None = None,
    limit: int | None = None,
    subset: str | None = None,
) -> datasets.Dataset:
    """Load a dataset and rename `columns` (source name -> our name, e.g. goal -> prompt).

    `source` is a local file (.jsonl/.json/.csv/.parquet) or a hub dataset id. Hub
    datasets need network access, which tests and the toy world never use.
    """
    src = str(source)
    if src.endswith(LOCAL_SUFFIXES) or Path(src).exists():
        ds = _load_local(Path(src))
    elif mirror := _MIRROR.get(src, _MIRROR.get("*")):
        ds = _load_local(Path(mirror))
    else:
        ds = _load_hub(src, split, subset)
    if columns:
        missing = [c for c in columns if c not in ds.column_names]
        if missing:
            raise SsahError(
                f"dataset {src!r} has no column(s) {missing}; it has {ds.column_names}. "
                "Fix the `columns` mapping in its config."
            )
        renames = {k: v for k, v in columns.items() if k != v}
        shadowed = [v for v in renames.values() if v in ds.column_names and v not in renames]
        ds = ds.remove_columns(shadowed).rename_columns(renames)  # mapped column wins
    if len(ds) == 0:
        raise SsahError(f"dataset {src!r} is empty; point the config at a file with records.")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


def _load_local(path: Path) -> datasets.Dataset:
    if not path.is_file():
        raise SsahError(f"data file {str(path)!r} does not exist; check the path in the config.")
    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(
        path.suffix, "json"
    )
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as e:  # datasets raises many types for malformed files
        raise SsahError(f"cannot read {str(path)!r} as {kind}: {e}") from None


def _load_hub(name: str, split: str, subset: str | None) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, subset, split=split)
    except Exception as e:
        text = str(e)
        hint = (
            "it is gated: accept its terms on the hub and set HF_TOKEN"
            if "gated" in text.lower() or "401" in text
            else "check the id or give a local file instead"
        )
        raise SsahError(f"cannot load dataset {name!r} ({hint}): {text.splitlines()[0]}") from None


def to_dicts(ds: datasets.Dataset | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain list of dict rows."""
    return list(ds) if not isinstance(ds, list) else ds
