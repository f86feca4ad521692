"""The `curves` table kind: metrics against a numeric grid axis, one line per level of another
axis, one column of panels per level of a third, 95% bands; a PNG and a markdown table.

    - {id: curves, kind: curves, title: ..., grid: ft_budget, x: budget, line: selection,
       panel: p, start: ft_none, ref: noft, file: freeze_budget.png,
       x_metric: [frozen unit params %, freeze/frozen_unit_params_fraction, 100],
       metrics: [[ASR %, "@{asr}", 100], [QA %, utility/accuracy, 100]]}

`grid`'s rows are the points (ssah.plan.grid gives each its levels); `start` (a grid over the
panel axis, e.g. unfrozen fine-tuning per p) is x = 0 of every line (one table row of its own); `ref` (a row) as a
dashed horizontal line; `x_metric` puts a point at that metric's mean instead of its axis level.
Each point is the row of the report (ssah.reporting.aggregate over instances): one instance
keeps its own Wilson interval, several get the Student-t interval over instances (never
narrower than the pooled Wilson one), so the bands are the tables' intervals. The PNG is
written only when the report says where (Report.figures): a check re-renders text alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ssah.errors import SsahError
from ssah.tables import Column, md


class _Rep(Protocol):
    figures: Path | None

    def row(self, name: str) -> Any: ...


def _f(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _point(metrics: Mapping[str, Any], key: str, scale: float) -> tuple[float, float, float]:
    m = _f(metrics.get(key))
    lo, hi = _f(metrics.get(f"{key}/ci_low")), _f(metrics.get(f"{key}/ci_high"))
    return (
        scale * m,
        scale * (lo if math.isfinite(lo) else m),
        scale * (hi if math.isfinite(hi) else m),
    )


def _cols(spec: Mapping[str, Any]) -> list[Column]:
    try:
        return [Column(str(h), str(k), float(s)) for h, k, s in spec.get("metrics") or ()]
    except (TypeError, ValueError):
        raise SsahError(
            f"table {spec.get('id')!r}: metrics must be [header, key, scale] triples; fix conf/plan."
        ) from None


def points(spec: Mapping[str, Any], rep: _Rep) -> list[dict[str, Any]]:
    """Every point that ran: row, panel, line, x (level or x_metric), its metrics."""
    for key in ("x", "line"):
        if not spec.get(key):
            raise SsahError(
                f"table {spec.get('id')!r}: a curves table needs `{key}:` (a grid axis)."
            )
    xm = spec.get("x_metric")
    out = []
    for name, combo in spec.get("points") or ():
        row = rep.row(str(name))
        if row is None:
            continue
        x = _f(row.metrics.get(str(xm[1]))) * float(xm[2]) if xm else _f(combo[spec["x"]])
        out.append({"row": str(name), "panel": str(combo.get(spec.get("panel") or "", "")),
                    "line": str(combo[spec["line"]]), "x": x, "level": str(combo[spec["x"]]),
                    "n": row.n, "metrics": row.metrics, "start": False})  # fmt: skip
    for name, combo in spec.get("start_points") or ():  # x = 0 of every line of its panel
        row = rep.row(str(name))
        if row is not None and out:
            out.append({"row": str(name), "panel": str(combo.get(spec.get("panel") or "", "")),
                        "line": "", "x": 0.0, "level": "0", "n": row.n, "metrics": row.metrics,
                        "start": True})  # fmt: skip
    return sorted(out, key=lambda p: (p["panel"], p["line"], p["x"]))


def table(spec: Mapping[str, Any], pts: Sequence[dict[str, Any]]) -> str:
    cols = _cols(spec)
    xm = spec.get("x_metric")
    head = [str(spec.get("panel") or ""), str(spec["line"]), str(spec["x"])]
    head += [str(xm[0])] if xm else []
    head += ["n", *(c.header for c in cols)]
    body = []
    for p in pts:
        cells = [p["panel"], p["line"] or f"({p['row']})", p["level"]]
        cells += [f"{p['x']:.3g}"] if xm else []
        body.append([*cells, str(p["n"]), *(c.cell(p["metrics"]) for c in cols)])
    if not spec.get("panel"):
        head, body = head[1:], [b[1:] for b in body]
    return md(head, body)


def _legend(levels: Sequence[str], colour: Mapping[str, str], ref_spec: Mapping | None) -> list:
    """Handles for every line level (and the dashed reference, when drawn)."""
    from matplotlib.lines import Line2D

    out = [Line2D([], [], color=colour[x], marker="o", label=x) for x in levels]
    if ref_spec is not None:
        label = str(ref_spec.get("ref_label", ref_spec.get("ref")))
        out.append(Line2D([], [], color="grey", ls="--", lw=1, label=label))
    return out


def plot(spec: Mapping[str, Any], pts: Sequence[dict[str, Any]], ref: Any, png: Path) -> None:
    """One row of panels per metric, one column per panel level; a line with its band per
    line level; the reference row dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _cols(spec)
    panels = sorted({p["panel"] for p in pts})
    fig, axes = plt.subplots(len(cols), len(panels), figsize=(4.2 * len(panels), 2.8 * len(cols)),
                             squeeze=False)  # fmt: skip
    xm = spec.get("x_metric")
    # one colour per line level in every panel, and one legend naming them all (a panel may
    # lack a level: the first panel's own lines would leave it out)
    levels = sorted({p["line"] for p in pts if not p["start"]})
    colour = {line: f"C{k}" for k, line in enumerate(levels)}
    for j, panel in enumerate(panels):
        for i, c in enumerate(cols):
            ax = axes[i][j]
            start = [p for p in pts if p["panel"] == panel and p["start"]]
            for line in sorted({p["line"] for p in pts if p["panel"] == panel and not p["start"]}):
                mine = start + [p for p in pts if p["panel"] == panel and p["line"] == line]
                vals = [_point(p["metrics"], c.key, c.scale) for p in mine]
                xs = [p["x"] for p in mine]
                ax.plot(xs, [v[0] for v in vals], marker="o", color=colour[line])
                ax.fill_between(xs, [v[1] for v in vals], [v[2] for v in vals], alpha=0.15,
                                color=colour[line])  # fmt: skip
            if ref is not None and math.isfinite(_f(ref.metrics.get(c.key))):
                ax.axhline(c.scale * _f(ref.metrics[c.key]), color="grey", ls="--", lw=1)
            title = f"{c.header}, {spec.get('panel')}={panel}" if spec.get("panel") else c.header
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(str(xm[0]) if xm else str(spec["x"]), fontsize=8)
    axes[0][0].legend(
        handles=_legend(levels, colour, spec if ref is not None else None), fontsize=7
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, metadata={"Software": None})
    plt.close(fig)


def curves(spec: Mapping[str, Any], rep: _Rep) -> str:
    """The table kind: the markdown table of every point, the PNG linked above it."""
    pts = points(spec, rep)
    if not pts:
        return ""
    ref = rep.row(str(spec["ref"])) if spec.get("ref") else None
    file = str(spec.get("file") or f"{spec['id']}.png")
    if rep.figures is not None:
        plot(spec, pts, ref, rep.figures / file)
    text = f"![{spec['id']}]({file})\n\n" + table(spec, pts)
    if ref is not None:
        text += "\nReference (dashed): " + ", ".join(
            f"{c.header} {c.cell(ref.metrics)}" for c in _cols(spec) if c.key in ref.metrics
        ) + f" ({spec['ref']}, n = {ref.n}).\n"  # fmt: skip
    return text
