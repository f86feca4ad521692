"""Evaluation prompt sets (AdvBench, HEx-PHI, HarmBench, JailbreakBench, StrongREJECT, XSTest,
toy sets) from a config block, through ssah.data.records.load_records.

A dataset block (conf/eval/harmful/*.yaml, conf/eval/benign/*.yaml):
  source:  hub id or local .jsonl/.json/.csv/.parquet file
  subset, split: hub config name and split
  columns: {source column: our column}; our columns are `prompt` (required), plus optional
           `target` / `compliance` (a compliant answer, used by the prefill attack), `category`
  filter:  {column: value or [values]} keeps matching rows (after renaming), e.g. XSTest safe
  limit:   first N rows after filtering (null = all)
  gated:   true for datasets behind a hub licence (HEx-PHI): without an HF token we stop with
           a message instead of a 401 traceback
  local_path / local_columns: a local copy that replaces `source` when set (no network)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import datasets
from omegaconf import DictConfig, OmegaConf

from ssah.data.records import load_records
from ssah.errors import SsahError


def _plain(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def has_hf_token() -> bool:
    """A hub token is configured (env var or `huggingface-cli login`)."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return False


def load_prompt_set(spec: Mapping[str, Any] | DictConfig, what: str = "eval data") -> list[dict]:
    """Rows (plain dicts with at least `prompt`) for one dataset block; SsahError when unusable."""
    s = _plain(spec)
    if not s.get("source") and not s.get("local_path"):
        raise SsahError(f"{what}: no `source` configured; give a hub id or a local file.")
    name = s.get("name") or s.get("source")
    if s.get("local_path"):
        source, columns = s["local_path"], s.get("local_columns", s.get("columns"))
    else:
        source, columns = s["source"], s.get("columns")
        is_local = str(source).startswith(("/", ".", "~")) or str(source).endswith(
            (".jsonl", ".json", ".csv", ".parquet")
        )
        if s.get("gated") and not is_local and not has_hf_token():
            raise SsahError(
                f"{what}: dataset {name!r} is gated on the Hugging Face hub and no token is set; "
                f"accept its terms at https://huggingface.co/datasets/{source}, then set HF_TOKEN "
                "(or point local_path at a local copy)."
            )
    limit = s.get("limit")
    filt = s.get("filter") or {}
    quiet = not datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one "Generating train split" bar per file is noise here
    try:
        ds = load_records(
            source,
            split=s.get("split", "train"),
            columns=columns or None,
            limit=None if filt else limit,
            subset=s.get("subset"),
        )
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    rows = [dict(r) for r in ds]
    if "prompt" not in rows[0]:
        raise SsahError(
            f"{what}: {name!r} has no `prompt` column (it has {sorted(rows[0])}); map one with "
            "`columns: {<its column>: prompt}`."
        )
    for col, want in filt.items():
        wanted = set(want) if isinstance(want, list) else {want}
        rows = [r for r in rows if r.get(col) in wanted]
    if filt and not rows:
        raise SsahError(f"{what}: no rows of {name!r} pass filter {filt}; check the values.")
    if limit is not None:
        rows = rows[: int(limit)]
    return rows
