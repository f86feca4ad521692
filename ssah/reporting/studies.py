"""Table kinds of the studies' plans (conf/plan/defence.yaml): what a selection row chose and
why, and a rates table whose columns are the plan's own (not the world's).

Why separate from plan_report: these kinds read a row's meta (the selection record) and take
their columns from the table spec; plan_report registers them in its KINDS and hands over its
paired test, so the paired difference is computed in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ssah.tables import Column, md

Paired = Callable[[Any, str, str, str], str]  # (report, ref row, row, metric key) -> cell


def _choice(path: Any) -> dict[str, Any] | None:
    f = path / "meta.json"
    if not f.is_file():
        return None
    meta = json.loads(f.read_text())
    choice = meta.get("choice")
    return choice if isinstance(choice, dict) else None


def _num(v: Any) -> str:
    return f"{100 * float(v):.1f}" if isinstance(v, int | float) else "-"


def selection(spec: Mapping[str, Any], rep: Any) -> str:
    """Per selection row and instance: the rule, every candidate's value and bounds, which met
    them and which was chosen, with the overrides the later rows received."""
    parts = []
    for label, name in spec.get("rows") or ():
        for run in rep.runs.get(str(name), []):
            choice = _choice(run.path)
            if choice is None:
                continue
            bounds = [
                b["bound"]
                for b in (choice["candidates"][0]["bounds"] if choice["candidates"] else [])
            ]
            head = [
                "candidate",
                f"{choice['metric']} %",
                "n",
                *(f"{b} (%)" for b in bounds),
                "meets bounds",
                "",
            ]
            body = []
            for c in choice["candidates"]:
                n = c.get("n")
                cells = [c["row"], _num(c["value"]), "-" if n is None else f"{n:.0f}"]
                for b in c["bounds"]:
                    ref = f" (ref {_num(b['reference'])})" if b.get("reference") is not None else ""
                    cells.append(_num(b["value"]) + ref)
                cells += [
                    "yes" if c["eligible"] else "no",
                    "**chosen**" if c["row"] == choice["chosen"] else "",
                ]
                body.append(cells)
            chosen = choice["chosen"] or "none (no candidate met the bounds)"
            hands = " ".join(f"`{o}`" for o in choice.get("overrides") or []) or "-"
            parts.append(
                f"**{label}** ({run.settings.get('world', '')}): rule: {choice['rule']}. "
                f"Chosen: **{chosen}**; later rows get {hands}.\n\n" + md(head, body)
            )  # fmt: skip
    return "\n".join(parts)


def rates(spec: Mapping[str, Any], rep: Any, paired: Paired) -> str:
    """One line per row: each of the table's columns as rate [95% interval] and n; then the
    paired difference of each row against its reference row (`[label, row, ref]`)."""
    cols = [Column(str(h), str(k), float(s)) for h, k, s in spec.get("columns") or ()]
    got = []
    for entry in spec.get("rows") or ():
        label, name, ref = (list(entry) + [None])[:3]
        r = rep.row(str(name))
        if r is not None:
            got.append((str(label), str(name), None if ref is None else str(ref), r))
    if not got:
        return ""
    cols = [c for c in cols if any(c.key in r.metrics for *_, r in got)]

    def cell(c: Column, m: Mapping[str, Any]) -> str:
        n = m.get(f"{c.key}/n")
        return c.cell(m) + (f" n={n:.0f}" if isinstance(n, int | float) else "")

    text = md(
        ["row", *(c.header for c in cols)],
        [[lb, *(cell(c, r.metrics) for c in cols)] for lb, _, _, r in got],
    )
    pairs = [(lb, n, ref) for lb, n, ref, _ in got if ref and ref in rep.runs]
    if pairs:
        body = [
            [f"{lb} vs {ref}", *(paired(rep, ref, n, c.key) for c in cols)] for lb, n, ref in pairs
        ]
        text += "\nPaired difference on the same prompts (exact McNemar):\n\n"
        text += md(["row", *(c.header for c in cols)], body)
    return text
