"""`<key>/n`, `<key>/ci_low`, `<key>/ci_high` beside every rate an evaluation reports.

Generic over the rate keys, so a new suite (or a new judge) gets its interval without code
here: the count is read from the evaluation's own records (one per generation, carrying
`suite`, `prompt_id` and `judge/<name>`). n counts distinct prompts, so several samples of
one prompt (averaged) do not shrink the interval; the Wilson interval of such an average,
and of `safety/asr/avg/<judge>` (suites of the same prompts averaged), is conservative
because a [0, 1] per-prompt outcome with mean p has variance <= p(1 - p).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ssah.stats import wilson

SUFFIXES = ("/n", "/ci_low", "/ci_high")


def is_interval_key(key: str) -> bool:
    """True for the keys this module adds (so tables and summaries can skip them)."""
    return key.endswith(SUFFIXES)


def interval(key: str, value: float, n: int) -> dict[str, float]:
    """The three keys of one rate: n and its Wilson 95% interval."""
    lo, hi = wilson(value * n, n) if n > 0 and math.isfinite(value) else (math.nan, math.nan)
    return {f"{key}/n": n, f"{key}/ci_low": lo, f"{key}/ci_high": hi}


def _prompts(recs: Iterable[Mapping[str, Any]]) -> int:
    ids = {(r.get("prompt_id"), r.get("prompt")) for r in recs}
    return len(ids)


def rate_counts(
    metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]], avg_over: Sequence[str] = ()
) -> dict[str, int]:
    """Number of distinct prompts behind every rate key whose records are known."""
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_suite.setdefault(str(r.get("suite")), []).append(r)
    counts: dict[str, int] = {}
    for key in metrics:
        parts = key.split("/")
        if len(parts) == 4 and parts[:2] == ["safety", "asr"]:
            suite, judge = parts[2], parts[3]
            names = [s for s in avg_over if s in by_suite] if suite == "avg" else [suite]
            ns = [_prompts(r for r in by_suite.get(s, []) if f"judge/{judge}" in r) for s in names]
            if ns and min(ns) > 0:
                counts[key] = min(ns)
        elif len(parts) in (2, 3) and parts[0] == "safety" and parts[1].startswith("over_refusal"):
            if is_interval_key(key):
                continue
            suite = "benign" + parts[1].removeprefix("over_refusal")
            cat = parts[2] if len(parts) == 3 else None  # per category of the benign set
            recs = (r for r in by_suite.get(suite, []) if "refused" in r)
            n = _prompts(r for r in recs if cat is None or r.get("category") == cat)
            if n:
                counts[key] = n
    return counts


def add_intervals(
    metrics: dict[str, Any],
    records: Sequence[Mapping[str, Any]],
    avg_over: Sequence[str] = (),
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Add n and interval keys (in place) for every rate with a known count; returns metrics.

    `counts` overrides or adds counts the records cannot tell (rates without records)."""
    known = {**rate_counts(metrics, records, avg_over), **(counts or {})}
    for key, n in known.items():
        v = metrics.get(key)
        if f"{key}/n" in metrics or not isinstance(v, int | float) or isinstance(v, bool):
            continue
        metrics.update(interval(key, float(v), int(n)))
    return metrics
