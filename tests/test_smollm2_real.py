"""`python -m ssah.real`'s report pieces on synthetic rows (no model): rates with intervals,
paired tests read from each row's records.jsonl, and the row cache of a re-run."""

from __future__ import annotations

import json
from pathlib import Path

from ssah.config import compose
from ssah.errors import SsahError
from ssah.real import Real, check, paired, plan, rate, safety_table


def _row(out: Path, name: str, flags: list[bool], metrics: dict) -> None:
    d = out / name
    d.mkdir(parents=True)
    recs = [
        {"kind": "attack", "suite": "direct", "prompt_id": i, "judge/keyword": f}
        for i, f in enumerate(flags)
    ]
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "metrics.json").write_text(json.dumps(metrics))


def test_rate_shows_value_interval_and_n() -> None:
    m = {"k": 0.25, "k/ci_low": 0.1, "k/ci_high": 0.5, "k/n": 20}
    assert rate(m, "k") == "25.0 [10.0, 50.0] n=20"
    assert rate({}, "k") == "-"
    assert rate({"k": float("nan")}, "k") == "-"


def test_paired_reads_records_and_rows_are_reused(tmp_path: Path, outputs_dir: Path) -> None:
    cfg = compose("real", [])
    d = Real(cfg, tmp_path)
    base = [True] * 10 + [False] * 10
    after = [False] * 10 + [False] * 10  # 10 prompts flipped to refusal, none the other way
    _row(tmp_path, "a", base, {"safety/asr/direct/keyword": 0.5})
    k = "safety/asr/direct/keyword"
    _row(tmp_path, "b", after, {k: 0.0, f"{k}/ci_low": 0.0, f"{k}/ci_high": 0.16, f"{k}/n": 20})
    text = paired(d, "a", "b")
    assert text.startswith("-50.0 pp") and "p=0.00195" in text  # exact McNemar: 2 * 0.5**10
    d.stage("evaluate", "a")  # a row with metrics.json is known at once (a re-run reuses it)
    assert d.rows["a"] == {"safety/asr/direct/keyword": 0.5}
    d.stage("evaluate", "b")
    table = safety_table(d, [("A", "a"), ("B", "b")], "a")
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| A |") and lines[2].endswith("| ref |")
    assert "-50.0 pp" in lines[3] and "| 0.0 [0.0, 16.0] n=20 |" in lines[3]


def test_plan_orders_rows_by_their_inputs(tmp_path: Path, outputs_dir: Path) -> None:
    """Every table's rows as jobs: those reading units wait for the scoring row that writes
    them; scoring and the long fine-tuning rows start first."""
    d = Real(compose("real", ["tables.build=false"]), tmp_path)
    jobs = {j.name: j for j in plan(d)}
    order = list(jobs)
    assert order[0] == "score_aligned" and order.index("ft_benign_scu_all_cu") < order.index("base")
    assert {"prune_scu", "prune_random", "ft_benign_scu_top_cu", "ft_benign_rewind"} <= set(jobs)
    assert jobs["prune_scu"].after == ("score_aligned",)
    assert jobs["ft_benign_none"].after == ()
    assert jobs["align_ru_only"].after == ("score_base_utility_only",)
    assert jobs["score_ft"].after == ("ft_benign_none",)
    assert set(jobs["transfer_aligned_to_ft"].after) == {"score_aligned", "score_ft"}
    assert f"units={d.units}" in jobs["prune_scu"].args[1]
    assert all(j.log == tmp_path / "logs" / f"{n}.log" for n, j in jobs.items())
    assert d.commands["align_ru_only"].startswith("python -m ssah.train model=smollm2_135m_aligned")
    assert "model=smollm2_135m " in d.commands["align_ru_only"] + " "  # the base, last wins
    d.write_report()  # every section renders with no row run yet
    text = (tmp_path / "report.md").read_text()
    assert "## Table 4" in text and "## Figs. 5-6" in text and "## Commands" in text


def test_every_planned_row_composes_and_a_bad_one_is_named(
    tmp_path: Path, outputs_dir: Path
) -> None:
    """The default plan's rows all compose and pass the schema (Table 4's base scoring once
    failed an hour into a run); a bad override is refused before anything runs."""
    import pytest

    d = Real(compose("real", ["tables.build=false"]), tmp_path)
    plan(d)
    check(d)
    bad = Real(compose("real", ["tables.build=false", "ft_steps=abc"]), tmp_path)
    plan(bad)
    with pytest.raises(SsahError, match=r"^row \w+ \(python -m ssah\.\w+ \.\.\.\): .*max_steps"):
        check(bad)
