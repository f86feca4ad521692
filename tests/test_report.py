"""ssah.report on synthetic sweep dirs: tables, paper columns, plots, the one-line error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ssah.errors import SsahError


def fake_job(
    root: Path, num: int, overrides: list[str], choices: dict[str, str], metrics: dict
) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    lines = "".join(f"      {k}: {v}\n" for k, v in choices.items())
    (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n{lines}")
    (job / "metrics.json").write_text(json.dumps(metrics))


def metrics(asr: float, util: float, frozen: float) -> dict:
    return {
        "safety/asr/direct/keyword": asr,
        "safety/asr/direct_sys/keyword": asr / 2,
        "safety/asr/avg/keyword": 0.75 * asr,
        "safety/over_refusal": 0.1,
        "utility/accuracy": util,
        "freeze/frozen_params_fraction": frozen,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    n = 0
    for freeze, frozen in (("none", 0.0), ("scu_all_cu", 0.6)):
        for task in ("alpaca", "dolly"):
            for seed in (0, 1):
                asr = (0.5 if freeze == "none" else 0.1) + 0.1 * seed
                fake_job(
                    root,
                    n,
                    [f"freeze={freeze}", f"task={task}", f"seed={seed}", "sweep_name=t2"],
                    {"model": "llama2_7b_chat", "task": task, "freeze": freeze},
                    metrics(asr, 0.4 + 0.1 * seed, frozen),
                )
                n += 1
    return root


def test_report_tables_paper_columns_and_plots(sweep: Path):
    from ssah.config import compose
    from ssah.report import build

    res = build(sweep, compose("report", ["~logger"]))
    md = (sweep / "report.md").read_text()
    assert "# Report: t2" in md
    for label in ("freeze=none, task=alpaca", "freeze=scu_all_cu, task=dolly"):
        assert label in md
    # seeds averaged: ASR direct of freeze=none = mean(0.5, 0.6) -> 55.0 %, n = 2
    row = next(r for r in res["rows"] if r.label == "freeze=none, task=alpaca")
    assert row.n == 2 and row.metrics["safety/asr/direct/keyword"] == pytest.approx(0.55)
    assert row.paper == {"safety/asr/direct/keyword": 5.3}  # Table 2, Alpaca full FT
    assert "paper ASR direct %" in md and "| 5.3 |" in md
    assert "freeze \\ task" in md  # the two-axis pivot (Table 2 layout)
    csv_lines = (sweep / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("run,freeze,task,n,")
    assert "\\begin{tabular}" in (sweep / "report.tex").read_text()
    for png in ("asr_vs_frozen.png", "suites.png", "pareto.png"):
        assert (sweep / png).read_bytes()[:4] == b"\x89PNG"


def test_empty_dir_is_one_clear_error(tmp_path: Path, capsys):
    from ssah.report import collect, main

    with pytest.raises(SsahError, match="no metrics.json"):
        collect(tmp_path)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no metrics.json under")


def test_wandb_group_offline_is_one_clear_error(monkeypatch, capsys):
    from ssah.report import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["wandb:me/ssah/table2"]) == 2
    assert "needs online W&B" in capsys.readouterr().err


def test_column_and_markdown_table_show_intervals():
    from ssah.tables import Column, markdown_table

    t = markdown_table([("a", {"x": 0.5}), ("b", {})], [Column("X %", "x", 100), Column("Y", "y")])
    assert "| a | 50.0 |" in t and "| b | - |" in t and "Y" not in t
    m = {"x": 0.234, "x/ci_low": 0.148, "x/ci_high": 0.35, "x/n": 64}
    assert "| a | 23.4 [14.8, 35.0] |" in markdown_table([("a", m)], [Column("X %", "x", 100)])


def prune_job(root: Path, num: int, target: str, seed: int, asr: float, util: float) -> None:
    """A prune job with records.jsonl: the first round(asr * 10) of 10 prompts broke through."""
    fake_job(
        root,
        num,
        [f"target={target}", f"seed={seed}"],
        {"model": "toy"},
        {
            "safety/asr/avg/keyword": asr,
            "safety/asr/avg/keyword/n": 10,
            "utility/accuracy": util,
        },
    )
    recs = [
        {"kind": "attack", "suite": s, "prompt_id": i, "judge/keyword": i < round(asr * 10)}
        for s in ("direct", "direct_sys")
        for i in range(10)
    ] + [
        {"kind": "utility", "suite": "utility", "prompt_id": i, "correct": i < round(util * 10)}
        for i in range(10)
    ]
    (root / str(num) / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.fixture
def prune_sweep(tmp_path: Path) -> Path:
    root = tmp_path / "t1"
    asr = {"dense": (0.1, 0.1, 0.1), "scu": (0.5, 0.6, 0.7), "random": (0.5, 0.7, 0.4)}
    n = 0
    for target, rates in asr.items():
        for seed, a in enumerate(rates):
            prune_job(root, n, target, seed, a, 0.6)
            n += 1
    return root


def test_seeds_aggregated_with_t_interval_and_claims_table_first(prune_sweep: Path):
    from ssah.config import compose
    from ssah.report import build

    res = build(prune_sweep, compose("report", ["~logger", "plots=false"]))
    scu = next(r for r in res["rows"] if r.label == "target=scu")
    # mean 0.6, sd 0.1 over 3 seeds: half-width t(0.975, 2) * 0.1 / sqrt(3) = 0.248414
    assert scu.n == 3 and scu.metrics["safety/asr/avg/keyword"] == pytest.approx(0.6)
    assert scu.metrics["safety/asr/avg/keyword/ci_low"] == pytest.approx(0.6 - 0.248414, abs=1e-5)
    assert scu.metrics["safety/asr/avg/keyword/seeds"] == 3
    assert scu.metrics["safety/asr/avg/keyword/n"] == 30
    claims = {r.claim.id: r for r in res["claims"]}
    up = claims["t1_scu_asr"]  # per-seed differences 0.4, 0.5, 0.6
    assert up.verdict == "supported" and up.effect == pytest.approx(0.5) and up.seeds == 3
    assert up.ci_low == pytest.approx(0.5 - 0.248414, abs=1e-5)
    # pooled over seeds x prompts: 4 + 5 + 6 prompts only SCU-pruned broke, none the other way
    assert up.pairs == 30 and up.p == pytest.approx(2 / 2**15)
    rnd = claims["t1_random_asr"]  # differences 0.0, -0.1, +0.3: straddles zero
    assert rnd.ci_low < 0 < rnd.ci_high and rnd.verdict == "inconclusive"
    util = claims["t1_scu_utility"]  # no drop on any prompt: seeds agree exactly, yet the
    assert util.ci_low < 0 < util.ci_high  # interval keeps the paired prompts' width
    assert util.verdict == "supported"  # ... well inside the 5-point margin
    assert claims["figs2_4_probe"].verdict == "not run"
    md = (prune_sweep / "report.md").read_text()
    assert md.index("## Claims") < md.index("## Runs")
    assert "pruning SCU raises ASR (avg) | +56 pts" in md and "**inconclusive**" in md
    assert "Report: t1" in md and "figs" not in md.split("## Runs")[0].lower()


def test_one_seed_claim_uses_the_paired_prompts(tmp_path: Path):
    from ssah.config import compose
    from ssah.report import build

    root = tmp_path / "one"
    prune_job(root, 0, "dense", 0, 0.0, 0.6)
    prune_job(root, 1, "scu", 0, 0.5, 0.6)
    res = build(root, compose("report", ["~logger", "plots=false"]))
    up = next(r for r in res["claims"] if r.claim.id == "t1_scu_asr")
    # 5 of 10 prompts broke only after pruning: exact McNemar p = 2 / 2^5, Newcombe interval
    assert up.seeds == 1 and up.pairs == 10 and up.p == pytest.approx(1 / 16)
    assert up.ci_low == pytest.approx(0.5 - math.hypot(0.5 - 0.236593, 0.277533), abs=1e-5)
    assert up.verdict == "supported" and up.interval == "paired, 1 seed"


def test_sweep_end_callback_reports_with_the_same_aggregation(prune_sweep: Path):
    from omegaconf import OmegaConf

    from ssah.report import ReportOnSweepEnd

    ReportOnSweepEnd().on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(prune_sweep)}}})
    )
    md = (prune_sweep / "report.md").read_text()
    assert "## Claims" in md and "| target=scu | 3 |" in md


def test_rates_across_seeds_stay_inside_0_1():
    from ssah.reporting.aggregate import aggregate_metrics

    m = aggregate_metrics([{"a": 0.0, "a/n": 10, "ppl": 2.0}, {"a": 0.9, "a/n": 10, "ppl": 3.0}])
    assert m["a"] == pytest.approx(0.45) and (m["a/ci_low"], m["a/ci_high"]) == (0.0, 1.0)
    assert m["a/n"] == 20 and m["a/seeds"] == 2
    assert m["ppl/ci_low"] < 0  # not a rate: the t-interval as it is (t(0.975, 1) = 12.7)
