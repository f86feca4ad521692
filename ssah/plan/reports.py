"""A plan's report from a set of row results alone, and `make reports`: every
experiments/*/report.md re-rendered from the results committed beside it.

A study folder holds results/<world>/<row>-<key>/ (what `python -m ssah.plan ... export=DIR`
copied: metrics.json, meta.json, outcomes.jsonl) and report.md. The report is a function of
those files and the plan's conf (tables, claims, the world's columns) only: rows are found by
their meta (row, instance), not by re-composing their configs, so results made by an older
config still render (except a row behind a selection whose newest result chose otherwise:
`superseded`); no model runs, no world is built, and nothing of the machine that renders
it (the time, absolute paths, local caches) enters the text, so any clone renders it byte for
byte (tests/test_reports.py checks every committed report).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssah.errors import SsahError
from ssah.plan import select as selection
from ssah.plan.spec import REF, Plan, WorldPlan
from ssah.reporting.collect import Run
from ssah.reporting.judges import measured_from
from ssah.reporting.plan_report import Report, claim_metrics, render
from ssah.results import Result, scan
from ssah.tables import Column

EXPERIMENTS = Path("experiments")
ROW_DIR = re.compile(r"[^\s=,'\"\[\]]*/([A-Za-z0-9_]+-[0-9a-f]{12})(?=/|\s|$|['\",\]])")
RESULTS_ROOT = "<results>"


def intro(plan: str, world: str, instances: Sequence[str], results: str) -> str:
    """The paragraph under the title: what a cell is, which tests, where the rows are."""
    return (
        f"Plan `{plan}` on world `{world}`, instances {', '.join(instances)}. "
        "Rates in %, each cell the mean over the instances that ran the row with its 95% interval "
        "(one instance: its Wilson interval; several: Student t across instances, never narrower "
        "than the Wilson interval of the pooled prompts); n = instances. Paired tests: exact "
        "McNemar on the same prompts, stratified by instance. A row's results (metrics.json, "
        f"per-prompt outcomes, meta.json) are under `{results}/`; the command of every row is "
        "listed at the end."
    )


def latest(results: Iterable[Result]) -> dict[tuple[str, str], Result]:
    """One result per (row, instance): the one finished last, when a row was run again."""
    out: dict[tuple[str, str], Result] = {}
    for r in sorted(results, key=lambda r: (str(r.meta.get("finished", "")), r.dir.name)):
        out[(r.row, r.instance)] = r
    return out


def superseded(picked: Mapping[tuple[str, str], Result], plan: Plan) -> dict[tuple[str, str], str]:
    """(row, instance) -> why it is not rendered: a row behind a selection made under an
    earlier choice (its overrides lack what the selection's newest result chose, or that
    result chose nothing), or a row that needs such a row. A rule changed since the row ran
    must not render the old choice's numbers under the new one; a selection not among the
    results cannot be checked, and its rows render."""
    out: dict[tuple[str, str], str] = {}

    def why(row: str, inst: str) -> str | None:  # the plan's needs have no circles (Plan checks)
        if (row, inst) in out:
            return out[(row, inst)]
        spec = plan.rows.get(row)
        if spec is None:
            return None
        have = {str(o) for o in picked[(row, inst)].meta.get("overrides") or ()}
        for need in spec.needs:
            sel = picked.get((need, inst))
            if sel is not None and plan.rows[need].stage == selection.STAGE:
                choice = sel.meta.get("choice") or {}
                if choice.get("chosen") is None:
                    return f"{need} now chooses none"
                if not set(map(str, choice.get("overrides") or ())) <= have:
                    return f"{need} now chooses {choice['chosen']}"
            elif (need, inst) in picked and why(need, inst) is not None:
                return f"it needs {need}, made under an earlier choice"
        return None

    for row, inst in sorted(picked):
        reason = why(row, inst)
        if reason is not None:
            out[(row, inst)] = reason
    return out


def runs_of(results: Iterable[Result], alias: Mapping[str, str]) -> dict[str, list[Run]]:
    """row -> one Run per instance that finished it; a row another stands for gets its runs."""
    runs: dict[str, list[Run]] = {}
    for res in results:
        names = [res.row, *(a for a, target in alias.items() if target == res.row)]
        for name in names:
            settings = {"row": name, "world": str(res.seed)}
            run = Run(res.dir, {}, settings, res.metrics, _outcomes=res.outcomes)
            runs.setdefault(name, []).append(run)
    return runs


def portable(arg: str, rows: Mapping[str, Path], at: Path) -> str:
    """An override as a reader of the report can follow it: a path to one of these rows (under
    whatever results dir it ran) -> relative to the report; `<results>` likewise."""

    def sub(m: re.Match[str]) -> str:
        d = rows.get(m.group(1))
        return os.path.relpath(d, at) if d is not None else m.group(0)

    return ROW_DIR.sub(sub, arg)


def plan_settings(world: str, plan: str) -> tuple[Plan, WorldPlan, dict[str, Any]]:
    """The plan's rows, tables and claims and the world's plan part, as `python -m ssah.plan
    world=W plan=P` composes them (no row is composed)."""
    from ssah.config import compose

    cfg = compose("plan", [f"world={world}", f"plan={plan}"])
    w = OmegaConf.to_container(cfg.world, resolve=True)
    assert isinstance(w, dict)
    if "plan" not in w:
        raise SsahError(f"world={world}: this world has no `plan:`; see conf/world/toy.yaml.")
    p = OmegaConf.to_container(cfg.plan, resolve=True)
    assert isinstance(p, dict)
    return Plan.from_cfg(p), WorldPlan.from_cfg(w["plan"]), w


def spell_text(text: str, vars_: Mapping[str, Any]) -> str:
    """`@{var}` anywhere in a claim's metric or label replaced by the world's value (a value
    naming another var is followed; an unknown name or a list is left as written), so a label
    says the world's own numbers ("k = @{defence_val_k}": 10 on smollm2, 4 on the toy)."""

    def sub(m: re.Match[str]) -> str:
        v = vars_.get(m.group(1))
        return m.group(0) if v is None or isinstance(v, list | tuple) else str(v)

    for _ in range(5):
        spelled = REF.sub(sub, text)
        if spelled == text:
            break
        text = spelled
    return text


def spell_claim(c: Mapping[str, Any], vars_: Mapping[str, Any]) -> dict[str, Any]:
    """A claim whose metric is `@{var}` names the world's metric (e.g. its ASR key); its
    label (`claim`) is spelled the same way."""
    out = {**c, "metric": spell_text(str(c.get("metric", "")), vars_)}
    if isinstance(c.get("claim"), str):
        out["claim"] = spell_text(c["claim"], vars_)
    return out


def spell_table(t: Mapping[str, Any], vars_: Mapping[str, Any]) -> dict[str, Any]:
    """A table's metric keys written `@{var}` name the world's metric (e.g. its ASR key)."""
    if not t.get("metrics"):
        return dict(t)
    return {**t, "metrics": [[h, spell_claim({"metric": k}, vars_)["metric"], s]
                             for h, k, s in t["metrics"]]}  # fmt: skip


def report_from(
    results: Sequence[Result], plan: Plan, wplan: WorldPlan, world: str, at: Path, root: Path
) -> Report:
    """The Report of `results` (one world's rows under `root`), its links relative to `at`."""
    picked = latest(results)
    stale = superseded(picked, plan)
    picked = {k: r for k, r in picked.items() if k not in stale}
    by_name = {r.dir.name: r.dir for r in picked.values()}
    commands: dict[str, str] = {}
    for name in plan.rows:
        for (row, _), r in sorted(picked.items()):
            if row == name and name not in commands and r.meta.get("stage") != "select":
                args = [portable(str(a), by_name, at) for a in r.meta.get("overrides") or ()]
                args = [a.replace(RESULTS_ROOT, os.path.relpath(root, at)) for a in args]
                commands[name] = f"python -m ssah.{r.meta.get('stage', '?')} " + " ".join(args)
    instances = sorted({inst for _, inst in picked})
    seconds = {
        f"{r.instance}/{r.row}": float(r.meta["seconds"])
        for r in sorted(picked.values(), key=lambda r: str(r.meta.get("finished", "")))
        if isinstance(r.meta.get("seconds"), int | float)
    }  # what each row took where it ran (meta.json), in the order the rows finished
    commits = sorted({str(r.meta.get("commit", "unknown")) for r in picked.values()})
    finished = sorted(str(r.meta["finished"]) for r in picked.values() if r.meta.get("finished"))
    ran = f" The rows ran at commit{'s' * (len(commits) > 1)} {', '.join(commits)}"
    ran += f", finished {finished[0]} to {finished[-1]} (meta.json)." if finished else "."
    if stale:
        ran += (
            " Not rendered, made under an earlier choice: "
            + "; ".join(
                f"{inst}/{row} ({why})"
                for (row, inst), why in sorted(stale.items(), key=lambda x: x[0][::-1])
            )
            + "."
        )
    return Report(
        f"ssah: the paper in miniature on {world}",
        intro(plan.name, world, instances, os.path.relpath(root, at)) + (ran if picked else ""),
        runs_of(sorted(picked.values(), key=lambda r: (r.instance, r.dir.name)), wplan.alias),
        [Column(h, k, s) for h, k, s in wplan.columns],
        "",
        [str(x) for x in wplan.vars.get("avg_over", [])],
        seconds,
        commands,
        at,
        judges=measured_from(wplan.judge_error),
        judges_source=str(wplan.judge_error or ""),
    )


def render_results(
    results: Sequence[Result],
    plan: Plan,
    wplan: WorldPlan,
    world: str,
    at: Path,
    root: Path,
    tables_on: Mapping[str, bool] | None = None,
    figures: Path | None = None,
) -> tuple[str, dict[str, float]]:
    """report.md's text for one world's rows (kept under root/<world>/), and the claims'
    numbers (claims/<id>/...) for a metrics.json; figures (PNGs) into `figures` when given."""
    rep = report_from(results, plan, wplan, world, at, root)
    rep.figures = figures
    claims = [spell_claim(c, wplan.vars) for c in plan.claims]
    tables = [spell_table(t, wplan.vars) for t in plan.tables]
    text = render(tables, claims, rep, wplan.tables if tables_on is None else tables_on)
    return text, claim_metrics(claims, rep)


def numbers(results: Iterable[Result]) -> dict[str, float]:
    """Every row's numbers as <instance>/<row>/<key> (a plan run's metrics.json)."""
    out: dict[str, float] = {}
    for r in results:
        for k, v in r.metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{r.instance}/{r.row}/{k}"] = v
    return out


def judge_audits(root: Path = EXPERIMENTS) -> list[tuple[Path, str]]:
    """(report.md, its text) of every judges audit, experiments/<study>/results/verdicts.jsonl
    (ssah.reporting.judges), rendered from its committed verdicts alone."""
    from ssah.reporting.judges import render as render_audit
    from ssah.results import read_jsonl

    return [(v.parent.parent / "report.md", render_audit(read_jsonl(v)))
            for v in sorted(root.glob("*/results/verdicts.jsonl"))]  # fmt: skip


def recipe_studies() -> list[tuple[Path, str]]:
    """(README.md, its text) of the smollm2 world's recipe study, from its committed records."""
    from ssah.worlds.smollm2 import recipes

    study = recipes.Study.load()
    records = recipes.load_records(study.out)
    return [(study.out / "README.md", recipes.render(study, records))] if records else []


def studies(root: Path = EXPERIMENTS) -> list[tuple[Path, str, str]]:
    """(study dir, world, plan) of every experiments/<study>/results/<world>/ holding plan rows."""
    out = []
    for d in sorted(p for p in root.glob("*/results/*") if p.is_dir()):
        found = scan(d)
        if found:
            plans = {str(r.meta.get("plan", "paper")) for r in found}
            if len(plans) > 1:
                raise SsahError(f"{d}: rows of several plans {sorted(plans)}; keep one a folder.")
            out.append((d.parent.parent, d.name, plans.pop()))
    return out


def render_study(study: Path, world: str, plan_name: str, figures: bool = False) -> str:
    """experiments/<study>/report.md's text, from experiments/<study>/results/<world>/ (and
    its figures beside it when `figures`)."""
    plan, wplan, _ = plan_settings(world, plan_name)
    root = study / "results"
    results = [r for r in scan(root / world) if r.world == world]
    at = study if figures else None
    return render_results(results, plan, wplan, world, study, root, figures=at)[0]


def main(argv: Sequence[str] = ()) -> int:
    """`python -m ssah.plan.reports [--check]`: write (or compare) every study's report.md."""
    check = "--check" in argv
    stale = []
    rendered = [
        (study / "report.md", render_study(study, world, plan, figures=not check))
        for study, world, plan in studies()
    ]
    rendered += judge_audits()
    rendered += recipe_studies()
    for out, text in rendered:
        if check:
            if not out.is_file() or out.read_text() != text:
                stale.append(str(out))
            continue
        out.write_text(text)
        print(f"[reports] {out}")
    if stale:
        print(f"error: {', '.join(stale)} differ from their results; run make reports.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
