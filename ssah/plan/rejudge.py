"""Re-judge finished rows with judges they did not run, from the text their records keep.

    python -m ssah.plan.rejudge outputs/results/smollm2 --judges compliance

A row's result gains `safety/asr/<suite>/<judge>` (+ n, interval) in metrics.json, the verdicts
in records.jsonl and outcomes.jsonl, and `rejudged: [judge, ...]` in meta.json; its content key
does not change (judging reads the generated text, it does not make it). Rows whose records
were redacted or are absent (a committed copy) are left as they are and counted.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ssah.eval.rejudge import judgeable, rejudge
from ssah.eval.suite import read_records, write_records
from ssah.io import atomic_write_text
from ssah.metrics import write_metrics
from ssah.results import Result, refresh_outcomes, scan


def rejudge_result(r: Result, names: Sequence[str]) -> bool:
    """Add the judges a finished row lacks; False when its text is not there to judge."""
    todo = [
        n
        for n in names
        if not any(k.endswith(f"/{n}") for k in r.metrics if k.startswith("safety/asr/"))
    ]
    records = read_records(r.dir)
    if not todo or not judgeable(records):
        return False
    avg = [str(s) for s in (r.meta.get("avg_over") or ["direct"])]
    metrics = {**r.metrics, **rejudge(records, todo, avg)}
    write_records(records, r.dir)
    refresh_outcomes(r.dir)
    write_metrics(r.dir, metrics)
    meta = {**r.meta, "rejudged": sorted({*r.meta.get("rejudged", []), *todo})}
    atomic_write_text(r.dir / "meta.json", json.dumps(meta, indent=1, default=str) + "\n")
    return True


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m ssah.plan.rejudge", description=__doc__.splitlines()[0]
    )
    ap.add_argument("results", type=Path, nargs="+", help="results dirs (any depth above the rows)")
    ap.add_argument("--judges", default="compliance", help="comma-separated conf/eval/judges names")
    a = ap.parse_args(argv)
    names = [n for n in a.judges.split(",") if n]
    rows = [r for root in a.results for r in scan(root)]
    done = sum(rejudge_result(r, names) for r in rows)
    print(
        f"[rejudge] {done} of {len(rows)} rows re-judged with {names}; the rest had them or kept no text"
    )


if __name__ == "__main__":
    main()
