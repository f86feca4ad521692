"""A plan's report from any set of row results: the claims, then each table of conf/plan/.

Rows are aggregated over the instances (seeds, toy worlds) that ran them with the code that
serves `python -m ssah.report` (ssah.reporting.aggregate): one instance keeps its own Wilson
intervals, several get the mean with a Student-t interval never narrower than the pooled
Wilson one. Paired tests (row vs the table's reference, and the claims) are exact McNemar
tests on the same prompts, stratified by instance (ssah.stats.stratified_paired). A table is
rendered by its `kind` (KINDS below): adding a table is a conf entry, plus a renderer when no
kind fits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssah.eval.judge_error import Measured, correct_with
from ssah.reporting.aggregate import Row, make_row
from ssah.reporting.claims import CLAIMS_NOTE, NOT_RUN, claims_markdown, evaluate_all
from ssah.reporting.collect import Run
from ssah.reporting.curves import curves
from ssah.reporting.studies import rates, selection
from ssah.results import per_prompt
from ssah.stats import stratified_paired
from ssah.tables import Column, md

CATEGORIES = ("SCU", "UCU", "CU", "RU")


@dataclass
class Report:
    """What a plan's report is made of: per row the instances' runs, the world's parts."""

    title: str
    intro: str
    runs: dict[str, list[Run]]  # row -> one Run per instance that finished it
    columns: list[Column]
    world_text: str = ""
    avg_over: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # row/instance -> seconds
    commands: dict[str, str] = field(default_factory=dict)  # row -> stage command
    at: Path | None = None  # the dir report.md lives in: links are relative to it
    judges: dict[str, Measured] = field(default_factory=dict)  # judge -> its measured error
    judges_source: str = ""  # where they were measured (a path, for the report's text)
    figures: Path | None = None  # where tables write their PNGs (None: text only, a check)

    def row(self, name: str) -> Row | None:
        members = self.runs.get(name)
        if not members:
            return None
        r = make_row(name, members, ["world"])
        r.settings = {"row": name}
        return r


def paired_cell(rep: Report, ref: str, row: str, key: str) -> str:
    """Exact McNemar of `row` vs `ref` on the same prompts (the per-prompt outcomes behind
    `key`, ssah.results.per_prompt), stratified by instance: `+12.0 pp [+3.1, +20.9],
    p=0.003`."""
    by_seed_a = {r.settings.get("world"): r for r in rep.runs.get(ref, [])}
    strata = []
    for rb in rep.runs.get(row, []):
        ra = by_seed_a.get(rb.settings.get("world"))
        if ra is None:
            continue
        fa = per_prompt(ra.outcomes, key, rep.avg_over) or {}
        fb = per_prompt(rb.outcomes, key, rep.avg_over) or {}
        ids = [i for i in fa if i in fb]
        if ids:
            strata.append(([fa[i] for i in ids], [fb[i] for i in ids]))
    if not strata:
        return "-"
    t = stratified_paired(strata)
    return f"{100 * t.diff:+.1f} pp [{100 * t.ci_low:+.1f}, {100 * t.ci_high:+.1f}], p={t.p:.3g}"


def _cols(spec: Mapping[str, Any], rep: Report) -> list[Column]:
    extra = [Column(str(h), str(k), float(s)) for h, k, s in spec.get("extra") or ()]
    return [*extra, *rep.columns]


def safety(spec: Mapping[str, Any], rep: Report) -> str:
    """One line per row that ran: n, the world's columns, the paired test vs `ref`."""
    got = [(str(label), rep.row(str(name)), str(name)) for label, name in spec.get("rows") or ()]
    got = [(label, r, name) for label, r, name in got if r is not None]
    if not got:
        return ""
    cols = [c for c in _cols(spec, rep) if any(c.key in r.metrics for _, r, _ in got)]
    ref = spec.get("ref")
    ref = ref if ref and ref in rep.runs else None
    key = rep.columns[0].key if rep.columns else ""
    head = ["row", "n", *(c.header for c in cols)]
    head += (
        [f"vs {ref} ({key.split('/')[2]}, {key.split('/')[-1]})"]
        if ref and key.count("/") == 3
        else []
    )
    body = []
    for label, r, name in got:
        cells = [label, str(r.n), *(c.cell(r.metrics) for c in cols)]
        if len(head) > len(cols) + 2:
            cells.append("ref" if name == ref else paired_cell(rep, ref, name, key))
        body.append(cells)
    text = md(head, body)
    for a, b in spec.get("pairs") or ():
        if a in rep.runs and b in rep.runs:
            text += f"\n{b} vs {a}: {paired_cell(rep, str(a), str(b), key)}\n"
    return text + corrected(got, cols, rep)


def judge_of(key: str) -> str | None:
    """The judge of an ASR key (safety/asr/<suite>/<judge>), else None."""
    parts = key.split("/")
    return parts[3] if len(parts) == 4 and parts[:2] == ["safety", "asr"] else None


def corrected(got: Sequence[tuple[str, Row, str]], cols: Sequence[Column], rep: Report) -> str:
    """Every ASR column whose judge was measured on this world, again corrected for that
    judge's error (Rogan-Gladen; the interval adds the judge's uncertainty), and each judge's
    measured precision and recall: a rate travels with the error of the judge that made it."""
    asr = [c for c in cols if judge_of(c.key) in rep.judges]
    if not asr:
        return ""
    body, misfit = [], False
    for label, r, _ in got:
        cells = [label]
        for c in asr:
            raw, n = r.metrics.get(c.key), r.metrics.get(f"{c.key}/n")
            if not isinstance(raw, int | float) or not isinstance(n, int | float) or n <= 0:
                cells.append("-")
                continue
            k = correct_with(rep.judges[str(judge_of(c.key))], float(raw), int(n))
            misfit |= k.outside
            cells.append(
                "n/a*"
                if k.outside
                else f"{100 * k.value:.1f} [{100 * k.ci_low:.1f}, {100 * k.ci_high:.1f}]"
            )
        body.append(cells)
    named = "; ".join(
        f"`{j}` precision {m.precision.fmt()}, recall {m.recall.fmt()}, specificity {m.specificity.fmt()}"
        for j, m in sorted(rep.judges.items()) if any(judge_of(c.key) == j for c in asr)
    )  # fmt: skip
    return (
        f"\nCorrected for each judge's measured error on this world ({rep.judges_source}, test half: "
        f"{named}); Rogan-Gladen, 95% interval with the judge's uncertainty:\n\n"
        + md(["row", *(f"{c.header}, corrected" for c in asr)], body)
        + (
            "\n\n\\* n/a: the whole corrected interval lies outside [0, 100]: this row's raw rate is "
            "not what the judge's pooled error could produce (e.g. fewer answers flagged than its "
            "false-positive rate alone would flag), so its error on this row's answers differs "
            "from the pooled one and no corrected rate is shown.\n"
            if misfit
            else ""
        )
    )


def categories(spec: Mapping[str, Any], rep: Report) -> str:
    cols = [
        Column(f"{c} {w} %", f"score/{w}_share/{c.lower()}", 100)
        for w in ("units", "params")
        for c in CATEGORIES
    ]
    got = [(str(label), rep.row(str(name))) for label, name in spec.get("rows") or ()]
    got = [(label, r) for label, r in got if r is not None]
    if not got:
        return ""
    body = [[label, str(r.n), *(c.cell(r.metrics) for c in cols)] for label, r in got]
    return md(["row", "n", *(c.header for c in cols)], body)


def probe(spec: Mapping[str, Any], rep: Report) -> str:
    cols = [
        Column("aligned gap", "probe/aligned/gap_mean", 1),
        Column("base gap", "probe/base/gap_mean", 1),
        Column("aligned - base", "probe/gap_difference", 1),
    ]
    got = [(str(label), rep.row(str(name)), str(name)) for label, name in spec.get("rows") or ()]
    got = [x for x in got if x[1] is not None]
    if not got:
        return ""
    cols = [c for c in cols if any(c.key in r.metrics for _, r, _ in got)]
    body = [[label, str(r.n), *(c.cell(r.metrics) for c in cols)] for label, r, _ in got]
    figs = [f"![probe]({_link(rep, name, 'probe_distances.png')})" for _, _, name in got[:1]]
    return md(["row", "n", *(c.header for c in cols)], body) + "\n" + "\n".join(figs) + "\n"


def transfer(spec: Mapping[str, Any], rep: Report) -> str:
    """The first instance's transition tables (markdown the transfer stage wrote)."""
    parts = []
    for label, name in spec.get("rows") or ():
        runs = rep.runs.get(str(name))
        if not runs:
            continue
        table = runs[0].path / "transfer.md"
        if table.is_file():
            parts.append(
                f"### {label}\n\n{table.read_text()}\n![{name}]({_link(rep, str(name), 'transfer.png')})\n"
            )
    return "\n".join(parts)


def world(spec: Mapping[str, Any], rep: Report) -> str:
    return rep.world_text


def _link(rep: Report, row: str, file: str) -> str:
    runs = rep.runs.get(row)
    if not runs:
        return file
    path = runs[0].path / file
    return os.path.relpath(path, rep.at) if rep.at is not None else str(path)


KINDS: dict[str, Callable[[Mapping[str, Any], Report], str]] = {
    "safety": safety,
    "categories": categories,
    "probe": probe,
    "transfer": transfer,
    "world": world,
    "selection": selection,
    "rates": lambda spec, rep: rates(spec, rep, paired_cell),
    "curves": curves,
}


def claims_section(claims: Sequence[Mapping[str, Any]], rep: Report) -> str:
    rows = [r for r in (rep.row(n) for n in rep.runs) if r is not None]
    results = [r for r in evaluate_all(list(claims), rows, rep.avg_over) if r.verdict != NOT_RUN]
    if not results:
        return ""
    return "## Claims\n\n" + claims_markdown(results) + "\n" + CLAIMS_NOTE


def claim_metrics(claims: Sequence[Mapping[str, Any]], rep: Report) -> dict[str, float]:
    """claims/<id>/{effect,ci_low,ci_high,p,supported} for the run's metrics.json."""
    rows = [r for r in (rep.row(n) for n in rep.runs) if r is not None]
    out: dict[str, float] = {}
    for c in evaluate_all(list(claims), rows, rep.avg_over):
        if c.verdict == NOT_RUN:
            continue
        key = f"claims/{c.claim.id}"
        out.update(
            {f"{key}/effect": c.effect, f"{key}/ci_low": c.ci_low, f"{key}/ci_high": c.ci_high}
        )
        out.update({f"{key}/p": c.p, f"{key}/supported": float(c.verdict == "supported")})
    return out


def time_section(rep: Report) -> str:
    if not rep.times:
        return ""
    total = sum(rep.times.values())
    per = ", ".join(f"{k} {v / 60:.1f}" for k, v in rep.times.items())
    return f"## Where the time went\n\n{total / 60:.1f} row-minutes. Per row (min): {per}.\n"


def render(
    tables: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    rep: Report,
    switched_on: Mapping[str, bool],
) -> str:
    parts = [f"# {rep.title}\n", f"{rep.intro}\n"]  # no time: a re-rendering is the same text
    c = claims_section(claims, rep)
    parts += [c] if c else []
    for spec in tables:
        if not switched_on.get(str(spec["id"]), True):
            continue
        body = KINDS[str(spec.get("kind", "safety"))](spec, rep)
        if not body:
            continue
        parts += [f"## {spec['title']}\n", body]
        parts += [f"{spec['note']}\n"] if spec.get("note") else []
        parts += [f"Paper: {spec['paper']}.\n"] if spec.get("paper") else []
    if rep.commands:
        parts += [
            "## Commands\n",
            "\n".join(f"- `{r}`: `{c}`" for r, c in rep.commands.items()) + "\n",
        ]
    t = time_section(rep)
    parts += [t] if t else []
    return "\n".join(parts)
