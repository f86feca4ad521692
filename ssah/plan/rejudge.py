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

from omegaconf import DictConfig, OmegaConf

from ssah.eval.rejudge import judgeable, rejudge
from ssah.eval.suite import read_records, write_records
from ssah.metrics import write_metrics
from ssah.results import Result, refresh_outcomes, scan, write_meta_file


def missing(metrics: dict, names: Sequence[str]) -> list[str]:
    """The judges no ASR key of `metrics` names yet."""
    have = {k.split("/")[3] for k in metrics if k.startswith("safety/asr/") and k.count("/") == 3}
    return [n for n in names if n not in have]


def apply(d: Path, metrics: dict, names: Sequence[str], avg_over: Sequence[str]) -> dict | None:
    """The judges `names` on the records of run dir `d`: records.jsonl gains the verdicts and
    metrics.json the rates; returns the new keys, None when there is no text to judge."""
    records = read_records(d)
    if not names or not judgeable(records):
        return None
    new = rejudge(records, names, avg_over)
    write_records(records, d)
    write_metrics(d, {**metrics, **new})
    return new


def rejudge_dir(d: Path, names: Sequence[str], cfg: DictConfig) -> dict:
    """In a plan row's own process, after its stage and before meta.json marks it done."""
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    avg = [str(s) for s in (OmegaConf.select(cfg, "eval.avg_over") or [])]
    return apply(d, metrics, missing(metrics, names), avg) or {}


def rejudge_result(r: Result, names: Sequence[str]) -> bool:
    """Add the judges a finished row lacks; False when they are there or its text is not."""
    todo = missing(r.metrics, names)
    avg = [str(s) for s in (r.meta.get("avg_over") or ["direct"])]
    if apply(r.dir, r.metrics, todo, avg) is None:
        return False
    refresh_outcomes(r.dir)
    meta = {**r.meta, "rejudged": sorted({*r.meta.get("rejudged", []), *todo})}
    write_meta_file(r.dir, meta)
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
