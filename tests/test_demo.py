"""`make run` end to end on two tiny toy worlds: every table of the paper in miniature lands
in report.md, which opens with the claims table; rows aggregate over the worlds."""

from __future__ import annotations

import json

import pytest

from ssah.config import compose


@pytest.mark.slow
def test_demo_two_worlds_claims_first_and_aggregated(tiny_toy, tmp_path):
    from ssah import demo

    cfg = compose(
        "demo",
        [
            "toy=tiny",
            "worlds=[0,1]",
            "full_worlds=1",
            "jobs=1",
            "ft_steps=2",
            "align_steps=2",
            "stage_logger=csv",
            # the tiny aligned model never refuses: score it on the data's refusals
            'score_overrides=["scoring.calibration.safety.response=field",'
            '"scoring.calibration.safety.columns={refusal:response}"]',
        ],
    )
    summary = demo.run(cfg, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report.index("## Claims") < report.index("## Starting point")
    for title in ("Table 1", "Tables 2/3", "Table 4", "Figs. 2-4"):
        assert title in report
    for claim in ("pruning SCU raises ASR (avg)", "RU-only alignment costs less utility"):
        assert claim in report
    assert any(v in report for v in ("**supported**", "**inconclusive**", "**contradicted**"))
    # world 0 ran every row, world 1 the claim rows only
    for row in ("base", "prune_scu", "ft_benign_scu_all_cu", "align_ru_only", "probe"):
        for w in (0, 1):
            assert json.loads((tmp_path / f"world{w}" / row / "metrics.json").read_text()), row
    assert (tmp_path / "world0" / "transfer_base_to_aligned" / "transfer.png").is_file()
    assert not (tmp_path / "world1" / "prune_ucu").exists()
    assert (tmp_path / "world1" / "report.md").is_file()
    # two worlds, different models: aggregated rows carry n = 2 and a 95% interval
    key = "prune_scu/safety/asr/direct/keyword"
    assert summary[f"{key}/seeds"] == 2
    assert summary[f"{key}/ci_low"] <= summary[key] <= summary[f"{key}/ci_high"]
    assert "prune_ucu/safety/asr/direct/keyword/seeds" not in summary  # one world: its Wilson
    assert "prune_ucu/safety/asr/direct/keyword/ci_low" in summary
    assert "claims/t1_scu_asr/ci_low" in summary
    w0 = json.loads((tmp_path / "world0" / "base" / "metrics.json").read_text())
    w1 = json.loads((tmp_path / "world1" / "base" / "metrics.json").read_text())
    assert w0["utility/accuracy/n"] > 0 and w0 != w1  # another world, other numbers
