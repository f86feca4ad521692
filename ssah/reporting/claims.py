"""The paper's claims, our number with its 95% interval and n, and a verdict.

A claim compares two rows on the same prompts (`a` and `b`: settings every matching row has,
e.g. {target: dense} vs {target: scu}; the demo matches {row: prune_scu}) and states the sign
of b - a on one metric (`direction` +1: b - a > margin; -1: b - a < margin; 0: |b - a| <
margin, "similar"), or, without `a`, the sign of b's value itself (one-sample claims such as
the probe's gap). What is computed:

- per seed (members of a row that differ only in seed are paired by their seed values):
  b - a from the metrics; with >= 2 seeds the claim's interval is the Student t interval of
  these per-seed differences (it carries world-to-world and seed-to-seed spread), widened
  where needed to cover the pooled paired interval below (seeds that agree exactly would
  otherwise give a zero-width interval);
- per prompt (the outcomes of both runs, ssah.results.per_prompt, joined on prompt_id): the stratified
  paired test over seeds x prompts (ssah.stats.stratified_paired: exact McNemar on the pooled
  discordant pairs for 0/1 outcomes), its p-value and, with one seed, its interval;
- the verdict (ssah.stats.verdict): an interval that straddles the margin is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ssah.reporting.aggregate import Row
from ssah.reporting.collect import Run
from ssah.results import per_prompt
from ssah.stats import INCONCLUSIVE, mean_ci, newcombe_unpaired, stratified_paired, verdict, wilson
from ssah.tables import md

NOT_RUN = "not run"


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as a contrast on our runs (see the module docstring)."""

    id: str
    table: str
    text: str
    b: Mapping[str, str]
    metric: str
    a: Mapping[str, str] | None = None
    direction: int = 1
    margin: float = 0.0
    scale: float = 100.0  # 100: rates as percentage points
    paper: float | None = None  # the paper's b - a (or b), same units as ours after scale
    paper_note: str = ""

    @classmethod
    def from_cfg(cls, c: Mapping[str, Any]) -> Claim:
        return cls(
            id=str(c["id"]),
            table=str(c.get("table", "")),
            text=str(c["claim"]),
            b={str(k): str(v) for k, v in dict(c["b"]).items()},
            a={str(k): str(v) for k, v in dict(c["a"]).items()} if c.get("a") else None,
            metric=str(c["metric"]),
            direction=int(c.get("direction", 1)),
            margin=float(c.get("margin", 0.0)),
            scale=float(c.get("scale", 100.0)),
            paper=None if c.get("paper") is None else float(c["paper"]),
            paper_note=str(c.get("paper_note", "")),
        )


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    effect: float  # b - a (or b), unscaled
    ci_low: float
    ci_high: float
    interval: str  # how the interval was made
    seeds: int
    pairs: int  # prompt pairs behind the paired test (0: no records)
    p: float  # stratified paired test, two-sided (nan: no records)
    test: str
    verdict: str
    where: str = ""  # the other axes of this pair of rows, when a claim matches several


def _matches(rows_: Sequence[Row], spec: Mapping[str, str], metric: str) -> list[Row]:
    return [
        r
        for r in rows_
        if metric in r.metrics and all(r.settings.get(k) == v for k, v in spec.items())
    ]


def _pairs(claim: Claim, rows_: Sequence[Row]) -> list[tuple[Row | None, Row]]:
    """(a, b) rows: every b row, with the a row that agrees with it on every other axis."""
    out: list[tuple[Row | None, Row]] = []
    for b in _matches(rows_, claim.b, claim.metric):
        if claim.a is None:
            out.append((None, b))
            continue
        keys = set(claim.a) | set(claim.b)
        same = [
            a
            for a in _matches(rows_, claim.a, claim.metric)
            if a is not b and all(a.axes.get(k) == v for k, v in b.axes.items() if k not in keys)
        ]
        if same:
            out.append((same[0], b))
    return out


def _by_seed(row: Row) -> dict[str, Run]:
    return dict(zip(row.seeds, row.members, strict=True))


def _value(run: Run, key: str) -> float:
    v = run.metrics.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def evaluate(claim: Claim, rows_: Sequence[Row], avg_over: Sequence[str] = ()) -> list[ClaimResult]:
    """Our number for one claim (one result per matching pair of rows), or one NOT_RUN."""
    pairs = _pairs(claim, rows_)
    if not pairs:
        return [ClaimResult(claim, *(math.nan,) * 3, "", 0, 0, math.nan, "", NOT_RUN)]
    out = []
    for a_row, b_row in pairs:
        others = {k: v for k, v in b_row.axes.items() if k not in claim.b}
        where = ", ".join(f"{k}={v}" for k, v in others.items()) if len(pairs) > 1 else ""
        out.append(_evaluate_pair(claim, a_row, b_row, avg_over, where))
    return out


def _evaluate_pair(
    claim: Claim, a_row: Row | None, b_row: Row, avg_over: Sequence[str], where: str
) -> ClaimResult:
    b_runs = _by_seed(b_row)
    a_runs = _by_seed(a_row) if a_row is not None else {}
    seeds = [s for s in b_runs if a_row is None or s in a_runs]
    base = [_value(a_runs[s], claim.metric) if a_runs else 0.0 for s in seeds]
    per_seed = [_value(b_runs[s], claim.metric) - x for s, x in zip(seeds, base, strict=True)]
    strata = []
    if a_row is not None:
        for s in seeds:
            oa = per_prompt(a_runs[s].outcomes, claim.metric, avg_over)
            ob = per_prompt(b_runs[s].outcomes, claim.metric, avg_over)
            if oa and ob:
                keys = [k for k in oa if k in ob]
                strata.append(([oa[k] for k in keys], [ob[k] for k in keys]))
    paired = stratified_paired(strata) if strata and any(a for a, _ in strata) else None
    pairs = paired.n if paired else 0
    p, test = (paired.p, paired.test) if paired else (math.nan, "")
    if len(seeds) >= 2:
        s = mean_ci(per_seed)
        effect, lo, hi, how = s.mean, s.ci_low, s.ci_high, f"t over {s.n} seeds"
        if paired is not None:  # never narrower than the pooled paired prompts
            lo, hi = min(lo, paired.ci_low), max(hi, paired.ci_high)
            how += ", covers the paired interval"
    elif paired is not None:
        effect, lo, hi, how = paired.diff, paired.ci_low, paired.ci_high, "paired, 1 seed"
    elif seeds:
        (lo, hi), how = _one_run(claim, b_runs[seeds[0]], a_runs, seeds[0])
        effect = per_seed[0]
    else:
        effect, lo, hi, how = math.nan, math.nan, math.nan, ""
    if claim.scale == 100 and math.isfinite(lo) and math.isfinite(hi):  # rates, differences
        lo, hi = max(lo, -1.0 if a_row is not None else 0.0), min(hi, 1.0)
    v = verdict(lo, hi, claim.direction, claim.margin) if seeds else INCONCLUSIVE
    return ClaimResult(claim, effect, lo, hi, how, len(seeds), pairs, p, test, v, where)


def _one_run(
    claim: Claim, b: Run, a_runs: Mapping[str, Run], seed: str
) -> tuple[tuple[float, float], str]:
    """One seed and no records: Wilson of b (one-sample) or unpaired Newcombe of b - a."""
    nb = b.metrics.get(f"{claim.metric}/n")
    if not isinstance(nb, int | float) or nb <= 0:
        return (math.nan, math.nan), "no interval (1 seed, no n)"
    pb = _value(b, claim.metric)
    if not a_runs:
        return wilson(pb * nb, int(nb)), "Wilson, 1 seed"
    a = a_runs[seed]
    na = a.metrics.get(f"{claim.metric}/n")
    if not isinstance(na, int | float) or na <= 0:
        return (math.nan, math.nan), "no interval (1 seed, no n)"
    return newcombe_unpaired(pb, int(nb), _value(a, claim.metric), int(na)), "Newcombe unpaired"


def evaluate_all(
    specs: Sequence[Mapping[str, Any]], rows_: Sequence[Row], avg_over: Sequence[str] = ()
) -> list[ClaimResult]:
    return [r for c in specs for r in evaluate(Claim.from_cfg(c), rows_, avg_over)]


def _num(x: float, scale: float, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    v = x * scale
    return f"{v:+.1f}" if signed and scale == 100 else f"{v:+.3g}" if signed else f"{v:.3g}"


def claims_markdown(results: Sequence[ClaimResult]) -> str:
    """The claims table: claim, the paper's number, ours [95% CI], n, paired p, verdict."""
    header = ["table", "claim", "paper", "ours [95% CI]", "n", "paired test p", "verdict"]
    body = []
    for r in results:
        c = r.claim
        unit = " pts" if c.scale == 100 else ""
        paper = "n/r" if c.paper is None else f"{c.paper:+g}{unit}"
        if c.paper_note:
            paper += f" ({c.paper_note})"
        if r.verdict == NOT_RUN:
            body.append([c.table, c.text, paper, "-", "-", "-", NOT_RUN])
            continue
        ours = _num(r.effect, c.scale)
        if math.isfinite(r.ci_low) and math.isfinite(r.ci_high):
            ours += f" [{_num(r.ci_low, c.scale)}, {_num(r.ci_high, c.scale)}]"
        n = f"{r.seeds} seed{'s' * (r.seeds != 1)}"
        n += f", {r.pairs} prompt pairs" if r.pairs else ""
        n += f"; {r.interval}" if r.interval else ""
        p = f"{r.p:.2g} ({r.test})" if math.isfinite(r.p) else "-"
        text = f"{c.text} ({r.where})" if r.where else c.text
        body.append([c.table, text, paper, ours, n, p, f"**{r.verdict}**"])
    return md(header, body)


CLAIMS_NOTE = (
    "Ours: b - a in percentage points (rates) or raw units, mean over seeds with its 95% "
    "Student-t interval across seeds, widened to cover the pooled paired per-prompt interval "
    "(Newcombe) where that is wider (one seed: the paired interval alone). Paired test: "
    "exact sign-flip over seeds x prompts on the same prompts (exact McNemar on the pooled "
    "discordant pairs). Verdict at 95%: supported when the whole interval lies on the claimed "
    "side of the margin, contradicted when it lies wholly on the other side, inconclusive "
    "when it straddles it. n/r: not reported by the paper; the paper's numbers are on 7B "
    "models and real benchmarks, so compare signs, not sizes.\n"
)
