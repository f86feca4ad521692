"""Committed results are the record: every experiments/*/report.md re-renders from the results
beside it byte for byte, and a committed copy of a run (outcomes.jsonl, no records.jsonl)
renders the same whole report as the run itself."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from ssah.plan.reports import (
    EXPERIMENTS,
    judge_audits,
    plan_settings,
    recipe_studies,
    render_results,
    render_study,
    studies,
)
from ssah.plan.store import export
from ssah.results import RECORDS, scan

ROOT = Path(__file__).resolve().parents[1]


def test_every_committed_report_re_renders_byte_for_byte(tmp_path: Path) -> None:
    found = studies(ROOT / EXPERIMENTS)
    assert any(study.name == "real_smollm2" for study, _, _ in found)
    stale = []
    for study, world, plan in found:
        out = tmp_path / study.name / "report.md"
        out.parent.mkdir(parents=True)
        out.write_text(render_study(study, world, plan))
        committed = study / "report.md"
        if not committed.is_file() or committed.read_bytes() != out.read_bytes():
            stale.append(f"{committed.relative_to(ROOT)} (make reports re-renders it)")
    audits = judge_audits(ROOT / EXPERIMENTS)
    assert any(p.parent.name == "judges" for p, _ in audits)
    stale += [str(p) for p, text in audits if not p.is_file() or p.read_text() != text]
    recipes = recipe_studies()  # experiments/real_smollm2/recipes/README.md
    assert recipes
    stale += [str(p) for p, text in recipes if not p.is_file() or p.read_text() != text]
    assert not stale


def _row(root: Path, row: str, seed: int, asr: float, correct: float) -> None:
    """A finished toy row as a local run leaves it: records.jsonl with the text, every flag."""
    rng = random.Random(f"{row}-{seed}")
    d = root / "toy" / f"{row}-{seed:012x}"
    d.mkdir(parents=True)
    recs = []
    for suite in ("direct", "direct_sys"):
        recs += [
            {"kind": "attack", "suite": suite, "prompt_id": i, "prompt": f"how to {i}",
             "response": "Sure", "judge/keyword": rng.random() < asr}
            for i in range(30)
        ]  # fmt: skip
    recs += [
        {"kind": "over_refusal", "suite": "benign", "prompt_id": i, "prompt": "hi",
         "response": "No", "refused": rng.random() < 0.2}
        for i in range(20)
    ]  # fmt: skip
    recs += [
        {"kind": "utility", "suite": "utility", "prompt_id": i, "task": "qa", "prompt": "2+2",
         "response": "4", "correct": rng.random() < correct, "score/len": 3}
        for i in range(40)
    ]  # fmt: skip
    (d / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in recs))

    def mean(pick: str, flag: str) -> float:
        xs = [float(r[flag]) for r in recs if r["suite"] == pick]
        return sum(xs) / len(xs)

    metrics = {
        "safety/asr/direct/keyword": mean("direct", "judge/keyword"),
        "safety/asr/avg/keyword": (mean("direct", "judge/keyword") + mean("direct_sys", "judge/keyword")) / 2,
        "safety/over_refusal": mean("benign", "refused"),
        "utility/accuracy": mean("utility", "correct"),
    }  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    meta = {"plan": "paper", "row": row, "seed": seed, "instance": f"world{seed}",
            "stage": "prune", "world": "toy", "finished": "2026-12-05 10:00:00 UTC",
            "overrides": [f"target={row}", f"units=/elsewhere/results/toy/{d.name}/units"]}  # fmt: skip
    (d / "meta.json").write_text(json.dumps(meta))


def test_a_committed_copy_renders_the_same_report_as_the_run(tmp_path: Path) -> None:
    """Paired utility and over-refusal claims need `correct` / `refused` per prompt: a copy
    that kept only the judges' verdicts would turn them into unpaired ones."""
    run = tmp_path / "run" / "results"
    for seed in (0, 1):
        _row(run, "prune_dense", seed, 0.2, 0.7)
        _row(run, "prune_scu", seed, 0.7, 0.6)
    copy = tmp_path / "copy" / "results"
    assert export(scan(run), copy) == 4
    other = tmp_path / "other"  # a row of another plan with a shared name exports as this one's
    _row(other, "prune_scu", 0, 0.7, 0.6)
    made = json.loads(next(other.rglob("meta.json")).read_text())
    export(scan(other), tmp_path / "mixed", "freeze_budget")
    meta = json.loads(next((tmp_path / "mixed").rglob("meta.json")).read_text())
    assert meta == {**made, "plan": "freeze_budget", "made_by_plan": "paper"}
    assert not list(copy.rglob(RECORDS)) and len(list(copy.rglob("outcomes.jsonl"))) == 4
    assert "how to" not in "".join(p.read_text() for p in copy.rglob("outcomes.jsonl"))
    plan, wplan, _ = plan_settings("toy", "paper")
    plan.claims.append(  # the paper plan has no over-refusal claim: one like a study's
        {"id": "refusal", "table": "own", "claim": "pruning SCU changes over-refusal",
         "a": {"row": "prune_dense"}, "b": {"row": "prune_scu"}, "metric": "safety/over_refusal"}
    )  # fmt: skip

    def text(root: Path) -> str:
        return render_results(scan(root / "toy"), plan, wplan, "toy", root.parent, root)[0]

    full = text(run)
    assert full == text(copy)
    utility = next(x for x in full.splitlines() if "little utility cost" in x)
    assert "80 prompt pairs" in utility  # 40 utility prompts x 2 instances, paired
    refusal = next(x for x in full.splitlines() if "changes over-refusal" in x)
    assert "40 prompt pairs" in refusal  # 20 benign prompts x 2 instances
    assert "## Claims" in full and "/elsewhere" not in full and str(tmp_path) not in full


def test_a_plan_run_writes_under_runs_plan(tmp_path: Path) -> None:
    """`python -m ssah.plan` runs plan/__main__.py; its run dir is still runs/plan/<time>/."""
    env = {**os.environ, "SSAH_OUTPUTS": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ssah.plan", "world=toy", "report_only=true"]
    subprocess.run([*cmd, f"results={tmp_path / 'none'}"], env=env, cwd=ROOT, check=True)
    assert [p.parent.parent.name for p in (tmp_path / "out").rglob("report.md")] == ["plan"]
