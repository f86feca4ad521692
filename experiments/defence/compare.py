"""Table of evaluate runs against an undefended one: each rate with n and its Wilson 95%
interval, and the paired difference to the baseline (same prompts: Newcombe interval, exact
McNemar p), from the runs' records.jsonl.

    python experiments/defence/compare.py BASE_DIR NAME=DIR [NAME=DIR ...] [--judge keyword]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssah.stats import fmt_ci, mcnemar, wilson


def outcomes(run: Path, judge: str) -> dict[str, dict[int, float]]:
    """suite -> prompt_id -> 1/0 (attack: the judge says fulfilled; benign: refused; QA:
    correct)."""
    out: dict[str, dict[int, float]] = {}
    for line in (run / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        kind, suite, i = r.get("kind"), str(r.get("suite")), int(r.get("prompt_id", -1))
        if kind == "attack" and f"judge/{judge}" in r:
            out.setdefault(suite, {})[i] = float(r[f"judge/{judge}"])
        elif kind == "over_refusal":
            out.setdefault("over_refusal", {})[i] = float(r["refused"])
        elif kind == "utility" and "correct" in r:
            out.setdefault("qa", {})[i] = float(r["correct"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("runs", nargs="+", help="NAME=DIR")
    ap.add_argument("--judge", default="keyword")
    a = ap.parse_args()
    base = outcomes(Path(a.base), a.judge)
    runs = [(s.split("=", 1)[0], outcomes(Path(s.split("=", 1)[1]), a.judge)) for s in a.runs]
    print(f"judge: {a.judge}\n")
    print("| measure | condition | rate [95% CI] | n | paired diff vs none [95% CI] | McNemar p |")
    print("|---|---|---|---:|---|---:|")
    for suite in sorted(base):
        b = base[suite]
        lo, hi = wilson(sum(b.values()), len(b))
        print(f"| {suite} | none | {fmt_ci(sum(b.values()) / len(b), lo, hi)} | {len(b)} | | |")
        for name, o in runs:
            if suite not in o:
                continue
            ids = sorted(set(b) & set(o[suite]))
            xa, xb = [b[i] for i in ids], [o[suite][i] for i in ids]
            k = sum(xb)
            lo, hi = wilson(k, len(ids))
            pr = mcnemar(xa, xb)
            print(
                f"| {suite} | {name} | {fmt_ci(k / len(ids), lo, hi)} | {len(ids)} | "
                f"{fmt_ci(pr.diff, pr.ci_low, pr.ci_high)} | {pr.p:.3g} |"
            )


if __name__ == "__main__":
    main()
