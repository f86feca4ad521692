"""`make run` end to end on the tiny toy world: every table of the paper in miniature lands in
report.md, with one metrics.json per row."""

from __future__ import annotations

import json

import pytest

from ssah.config import compose


@pytest.mark.slow
def test_demo_writes_every_table(tiny_toy, tmp_path):
    from ssah import demo

    cfg = compose(
        "demo",
        [
            "toy=tiny",
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
    for title in ("Starting point", "Table 1", "Table 2/3", "Table 4", "Figs. 2-4", "Figs. 5-6"):
        assert title in report
    for row in (
        "base",
        "aligned",
        "prune_scu",
        "ft_benign_scu_all_cu",
        "align_ru_only",
        "probe",
        "transfer_aligned_to_ft",
    ):
        assert json.loads((tmp_path / row / "metrics.json").read_text()), row
    assert summary["ft_benign_scu_all_cu/freeze/frozen_params_fraction"] > 0
    assert (tmp_path / "transfer_base_to_aligned" / "transfer.png").is_file()
