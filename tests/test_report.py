"""ssah.report on synthetic sweep dirs: tables, paper columns, plots, the one-line error."""

from __future__ import annotations

import json
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


def test_column_and_markdown_table_api_kept():
    from ssah.report import Column, markdown_table

    t = markdown_table([("a", {"x": 0.5}), ("b", {})], [Column("X %", "x", 100), Column("Y", "y")])
    assert "| a | 50.0 |" in t and "| b | - |" in t and "Y" not in t
