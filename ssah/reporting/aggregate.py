"""Rows that differ only in seed, aggregated: mean, 95% t-interval across seeds, n.

The same code serves `python -m ssah.report DIR` (a sweep), W&B groups (downloaded into a
sweep-like dir) and the demo (one run per toy world). A row of one run keeps that run's own
intervals (Wilson, from the evaluation); a row of several runs gets, for every numeric key,
the mean over runs with `key/ci_low`, `key/ci_high` (Student t over the per-run values, so
the world-to-world and seed-to-seed spread is in it; for rates whose runs report their n,
widened where needed to cover the Wilson interval of the pooled prompt outcomes, so seeds
that agree exactly do not give a zero-width interval), `key/seeds` (runs) and `key/n`
(prompt outcomes summed over runs).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ssah.reporting.collect import Run
from ssah.stats import mean_ci, wilson

INTERVAL_SUFFIXES = ("/n", "/ci_low", "/ci_high", "/seeds")


def is_interval_key(key: str) -> bool:
    return key.endswith(INTERVAL_SUFFIXES)


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def aggregate_metrics(dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of runs that differ only in seed -> one metrics dict with interval keys."""
    if len(dicts) == 1:
        return dict(dicts[0])
    keys = list(dict.fromkeys(k for d in dicts for k, v in d.items() if _numeric(v)))
    out: dict[str, Any] = {}
    for k in (k for k in keys if not is_interval_key(k)):
        vals = [float(d[k]) for d in dicts if _numeric(d.get(k))]
        s = mean_ci(vals)
        out[k] = s.mean
        out[f"{k}/ci_low"], out[f"{k}/ci_high"], out[f"{k}/seeds"] = s.ci_low, s.ci_high, s.n
        ns = [d.get(f"{k}/n") for d in dicts]
        if all(_numeric(n) for n in ns) and len(ns) == len(vals):
            total = int(sum(ns))  # type: ignore[arg-type]
            out[f"{k}/n"] = total
            lo, hi = wilson(s.mean * total, total)  # never narrower than the pooled prompts
            lo, hi = max(0.0, min(s.ci_low, lo)), min(1.0, max(s.ci_high, hi))  # a rate
            out[f"{k}/ci_low"], out[f"{k}/ci_high"] = lo, hi
    return out


@dataclass
class Row:
    """Runs that differ only in `group_over` keys (seeds), aggregated."""

    label: str
    axes: dict[str, str]
    settings: dict[str, str]
    metrics: dict[str, Any]
    n: int
    std: dict[str, float] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    paper_table: str = ""
    members: list[Run] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)  # each member's group_over values


def make_row(label: str, members: Sequence[Run], group_over: Sequence[str] = ()) -> Row:
    """One row from runs of the same setting (different seeds)."""
    nums: dict[str, list[float]] = {}
    for m in members:
        for k, v in m.metrics.items():
            if _numeric(v) and not is_interval_key(k):
                nums.setdefault(k, []).append(float(v))
    std = {k: statistics.stdev(v) for k, v in nums.items() if len(v) > 1}
    common = {
        k: v for k, v in members[0].settings.items() if all(m.settings.get(k) == v for m in members)
    }
    seeds = [
        ",".join(f"{g}={m.settings.get(g, m.overrides.get(g, '-'))}" for g in group_over) or str(i)
        for i, m in enumerate(members)
    ]
    metrics = aggregate_metrics([m.metrics for m in members])
    return Row(label, {}, common, metrics, len(members), std, members=list(members), seeds=seeds)


def rows(runs: Sequence[Run], axes: Sequence[str], group_over: Sequence[str]) -> list[Row]:
    """Group runs by their axis values (minus group_over) and aggregate over the rest."""
    label_axes = [a for a in axes if a not in group_over]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(a, "-") for a in label_axes), []).append(r)
    out = []
    for key, members in groups.items():
        ax = dict(zip(label_axes, key, strict=True))
        label = ", ".join(f"{a}={v}" for a, v in ax.items()) or members[0].path.name
        row = make_row(label, members, group_over)
        row.axes = ax
        out.append(row)
    return out


def attach_paper(rows_: Sequence[Row], paper: Sequence[Mapping[str, Any]]) -> None:
    """Paper numbers (percent) beside a row whose settings match every `match` entry."""
    for row in rows_:
        for entry in paper:
            if all(row.settings.get(str(k)) == str(v) for k, v in entry["match"].items()):
                row.paper = {str(k): float(v) for k, v in entry["metrics"].items()}
                row.paper_table = str(entry.get("table", ""))
