"""Paper Table 1 in miniature: one row per pruning target, as data (W&B) or markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ssah.tables import md

TABLE1 = ("dense", "scu", "ucu", "ru", "random")

LABELS = {
    "dense": "dense",
    "scu": "- SCU",
    "ucu": "- UCU",
    "ru": "- RU",
    "cu": "- CU",
    "random": "- random (matched)",
    "topk": "- top-k",
}


TABLE_COLUMNS = (
    ("units %", "prune/units_fraction", 100.0),
    ("params %", "prune/params_fraction", 100.0),
    ("ASR %", "safety/asr/direct/{judge}", 100.0),
    ("ASR sys %", "safety/asr/direct_sys/{judge}", 100.0),
    ("ASR avg %", "safety/asr/avg/{judge}", 100.0),
    ("accuracy %", "utility/accuracy", 100.0),
    ("PPL", "utility/ppl", 1.0),
)


def table_data(
    rows: Sequence[dict[str, Any]], judge: str = "keyword"
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows (numbers already scaled; None when not measured), e.g. for W&B."""
    cols = [(n, k.format(judge=judge), sc) for n, k, sc in TABLE_COLUMNS]
    cols = [c for c in cols if any(c[1] in r for r in rows)]
    data = []
    for r in rows:
        vals = [None if r.get(k) is None else float(r[k]) * sc for _, k, sc in cols]
        data.append([LABELS.get(r["target"], r["target"]), *vals])
    return ["model", *(c[0] for c in cols)], data


def table_markdown(rows: Sequence[dict[str, Any]], judge: str = "keyword") -> str:
    """Markdown table: pruned share, ASR with/without the system prompt, utility."""
    columns, data = table_data(rows, judge)

    def cell(column: str, v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}" if column == "PPL" else f"{v:.1f}"

    return md(columns, [[row[0], *map(cell, columns[1:], row[1:])] for row in data])
