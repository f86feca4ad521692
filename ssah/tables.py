"""Tables from metrics: Markdown, LaTeX and CSV, every rate with its 95% interval.

A cell reads `key` and, when present, `key/ci_low` and `key/ci_high` of the same metrics
dict: a single run's Wilson interval (written by the evaluation) or, for rows aggregated over
seeds, the t-interval across seeds (ssah.reporting.aggregate). So one format serves both:
`23.4 [14.8, 35.0]`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ssah.stats import fmt_ci


@dataclass(frozen=True)
class Column:
    """A table column: header, metrics key, scale (100 turns a fraction into a percentage)."""

    header: str
    key: str
    scale: float = 1.0

    def cell(self, metrics: Mapping[str, Any]) -> str:
        v = metrics.get(self.key)
        if not isinstance(v, int | float) or isinstance(v, bool):
            return "-"
        lo, hi = metrics.get(f"{self.key}/ci_low"), metrics.get(f"{self.key}/ci_high")
        if self.scale == 100:
            return fmt_ci(float(v), _num(lo), _num(hi), 100.0, 1)
        s = f"{v * self.scale:.3g}"
        if _num(lo) is not None and _num(hi) is not None:
            s += f" [{lo * self.scale:.3g}, {hi * self.scale:.3g}]"
        return s


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


def columns(spec: Sequence[Mapping[str, Any]]) -> list[Column]:
    """Columns from config entries {header, key, scale}."""
    return [Column(str(c["header"]), str(c["key"]), float(c.get("scale", 1.0))) for c in spec]


def markdown_table(rows: Sequence[tuple[str, Mapping[str, Any]]], cols: Sequence[Column]) -> str:
    """One row per (label, metrics); a column every row lacks is dropped."""
    cols = [c for c in cols if any(c.key in m for _, m in rows)]
    header = ["run", *(c.header for c in cols)]
    return md(header, [[label, *(c.cell(m) for c in cols)] for label, m in rows])


def md(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def latex(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> str:
    def esc(s: str) -> str:
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("_", r"\_"),
            ("%", r"\%"),
            ("&", r"\&"),
            ("#", r"\#"),
        ):
            s = s.replace(a, b)
        return s

    spec = "l" + "r" * (len(header) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{esc(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(esc(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def table_cells(rows_: Sequence[Any], cols: Sequence[Column]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table (rows: aggregate.Row): ours, then the paper's."""
    cols = [c for c in cols if any(c.key in r.metrics for r in rows_)]
    paper_keys = [c for c in cols if any(c.key in r.paper for r in rows_)]
    header = ["run", "n"] + [c.header for c in cols] + [f"paper {c.header}" for c in paper_keys]
    body = []
    for r in rows_:
        cells = [r.label, str(r.n)] + [c.cell(r.metrics) for c in cols]
        cells += [f"{r.paper[c.key]:g}" if c.key in r.paper else "-" for c in paper_keys]
        body.append(cells)
    return header, body


def pivot(
    rows_: Sequence[Any], axes: Sequence[str], metric: Column
) -> tuple[list[str], list[list[str]]]:
    """Two-axis table like the paper's Table 2: rows = first axis, columns = second axis."""
    a, b = axes[0], axes[1]
    avals = list(dict.fromkeys(r.axes[a] for r in rows_))
    bvals = list(dict.fromkeys(r.axes[b] for r in rows_))
    header = [f"{a} \\ {b}"] + [f"{b}={v}" for v in bvals]
    body = []
    for av in avals:
        cells = [av]
        for bv in bvals:
            hit = [r for r in rows_ if r.axes[a] == av and r.axes[b] == bv]
            cells.append(metric.cell(hit[0].metrics) if hit else "-")
        body.append(cells)
    return header, body


def csv_text(rows_: Sequence[Any]) -> str:
    """One line per row: axes, n, every numeric metric (with its interval keys), paper:<key>."""
    keys = sorted({k for r in rows_ for k in r.metrics})
    pkeys = sorted({k for r in rows_ for k in r.paper})
    axes = list(dict.fromkeys(a for r in rows_ for a in r.axes))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", *axes, "n", *keys, *(f"paper:{k}" for k in pkeys)])
    for r in rows_:
        w.writerow(
            [
                r.label,
                *(r.axes.get(a, "") for a in axes),
                r.n,
                *(r.metrics.get(k, "") for k in keys),
                *(r.paper.get(k, "") for k in pkeys),
            ]
        )
    return buf.getvalue()
