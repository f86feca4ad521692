"""Two variants of the same plan rows, compared prompt by prompt (e.g. float32 vs the fast
options, experiments/throughput): for every row both ran, every per-prompt rate (each judge's
ASR per suite, over-refusal, QA accuracy) as A, B and B - A with its paired 95% interval
(Newcombe) and exact McNemar p, on the prompts both answered; and whether every difference's
interval holds 0. Units files of scoring rows are compared category by category.

    python -m ssah.reporting.compare A_DIR B_DIR [--labels float32,fast] [--out report.md]
    python -m ssah.reporting.compare --units A/units.safetensors B/units.safetensors --out agreement.json

Reads committed results (outcomes.jsonl) or full run dirs alike, so the report re-renders.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssah.io import atomic_write_text
from ssah.results import Result, per_prompt, rates, scan
from ssah.stats import mcnemar
from ssah.tables import md


def label(metric: str) -> str:
    """A rate's name in the table: `safety/asr/direct/keyword` -> `ASR direct (keyword)`."""
    p = metric.split("/")
    if p[:2] == ["safety", "asr"]:
        return f"ASR {p[2]} ({p[3]})"
    if p[0] == "safety":
        return "over-refusal" + p[1].removeprefix("over_refusal")
    return "QA accuracy"


def compare_rows(a: Result, b: Result) -> list[dict[str, Any]]:
    """Every per-prompt rate both rows measured (ssah.results.rates), paired on the prompts
    both answered."""
    rows = []
    for metric in sorted(set(rates(a.outcomes)) & set(rates(b.outcomes))):
        pa, pb = per_prompt(a.outcomes, metric) or {}, per_prompt(b.outcomes, metric) or {}
        ids = [i for i in pa if i in pb]
        if not ids:
            continue
        t = mcnemar([pa[i] for i in ids], [pb[i] for i in ids])
        rows.append({"rate": label(metric), "n": t.n, "a": t.a_rate, "b": t.b_rate,
                     "diff": t.diff, "low": t.ci_low, "high": t.ci_high, "p": t.p})  # fmt: skip
    return rows


def by_row(results: Sequence[Result]) -> dict[tuple[str, int], Result]:
    return {(r.row, r.seed): r for r in results}


def render(a: Sequence[Result], b: Sequence[Result], labels: tuple[str, str]) -> str:
    """The comparison as markdown: one table per row both sides ran, then the verdict."""
    ra, rb = by_row(a), by_row(b)
    parts, outside = [], []
    for key in sorted(set(ra) & set(rb)):
        rows = compare_rows(ra[key], rb[key])
        if not rows:
            continue
        body = []
        for c in rows:
            inside = c["low"] <= 0 <= c["high"]
            if not inside:
                outside.append(f"{key[0]}: {c['rate']}")
            body.append([c["rate"], str(c["n"]), f"{100 * c['a']:.1f}", f"{100 * c['b']:.1f}",
                         f"{100 * c['diff']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]",
                         f"{c['p']:.2g}", "yes" if inside else "**no**"])  # fmt: skip
        head = [
            "rate",
            "n",
            f"{labels[0]} %",
            f"{labels[1]} %",
            "difference (paired 95%)",
            "McNemar p",
            "0 inside",
        ]
        parts += [f"### {key[0]} (seed {key[1]})\n", md(head, body), ""]
    only = sorted({k[0] for k in set(ra) ^ set(rb)})
    verdict = (
        "Every difference's paired 95% interval holds 0."
        if not outside
        else "Differences whose paired 95% interval excludes 0: " + "; ".join(outside) + "."
    )
    tail = [f"Rows run on one side only: {', '.join(only)}." if only else ""]
    return (
        "\n".join(
            [f"## {labels[1]} against {labels[0]}, prompt by prompt\n", *parts, verdict, *tail]
        )
        + "\n"
    )


def units_agreement(a: Path, b: Path) -> dict[str, Any]:
    """Share of units (MLP neurons and heads) whose category is the same in both units files."""
    from safetensors.torch import load_file

    ua, ub = load_file(str(a)), load_file(str(b))
    same = total = 0
    per_kind: dict[str, list[int]] = {}
    for k, v in ua.items():
        if not k.endswith(".category"):
            continue
        eq = int((v == ub[k]).sum())
        kind = k.split(".")[2]
        per_kind.setdefault(kind, [0, 0])
        per_kind[kind][0] += eq
        per_kind[kind][1] += v.numel()
        same, total = same + eq, total + v.numel()
    return {"agreement": same / total, "units": total,
            **{f"agreement/{k}": s / n for k, (s, n) in per_kind.items()}}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m ssah.reporting.compare", description=__doc__.splitlines()[0]
    )
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--labels", default="A,B")
    ap.add_argument("--units", action="store_true", help="a and b are units.safetensors files")
    ap.add_argument("--out", type=Path, default=None)
    x = ap.parse_args(argv)
    if x.units:
        text = json.dumps(units_agreement(x.a, x.b), indent=1, sort_keys=True) + "\n"
    else:
        la, lb = (x.labels.split(",") + ["B"])[:2]
        text = render(scan(x.a), scan(x.b), (la, lb))
    if x.out:
        atomic_write_text(x.out, text)
    print(text if not x.out else f"-> {x.out}")


if __name__ == "__main__":
    main()
