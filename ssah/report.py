"""Tables from metrics: shared by the demo and `python -m ssah.report DIR`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """A table column: header, metrics key, scale (100 turns a fraction into a percentage)."""

    header: str
    key: str
    scale: float = 1.0

    def cell(self, metrics: Mapping[str, Any]) -> str:
        v = metrics.get(self.key)
        if not isinstance(v, int | float):
            return "-"
        v = v * self.scale
        return f"{v:.1f}" if self.scale == 100 else f"{v:.3g}"


def markdown_table(rows: Sequence[tuple[str, Mapping[str, Any]]], cols: Sequence[Column]) -> str:
    """One row per (label, metrics); a column every row lacks is dropped."""
    cols = [c for c in cols if any(c.key in m for _, m in rows)]
    lines = ["| run | " + " | ".join(c.header for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {label} | " + " | ".join(c.cell(m) for c in cols) + " |" for label, m in rows]
    return "\n".join(lines) + "\n"
