"""The freeze-budget study's plan, result summaries and report (no model runs: fake results)."""

from __future__ import annotations

import json
import random

import pytest

from ssah.config import compose
from ssah.errors import SsahError
from ssah.plan import freeze_budget as fb
from ssah.schema import validate


def small() -> fb.Study:
    return fb.load_study(seeds=(0, 1), budgets=(0.05, 0.63), ratios=(0.0, 0.1),
                         selections=("safety", "random"))  # fmt: skip


def test_grid_is_the_sweep_preset_plus_references():
    full = fb.load_study()
    assert full.budgets == (0.01, 0.05, 0.2, 0.63) and full.ratios == (0.0, 0.1)
    assert full.selections == ("safety", "random") and full.seeds == (0, 1, 2)
    rows = full.rows()
    frozen = [r for r in rows if r.selection not in ("none", "noft")]
    assert len(frozen) == 2 * 4 * 2 * 3
    assert len([r for r in rows if r.selection == "none"]) == 2 * 3  # unfrozen per (p, seed)
    assert len([r for r in rows if r.selection == "noft"]) == 3  # one per alignment seed
    assert len({r.name for r in rows}) == len(rows)
    with pytest.raises(SsahError, match="unknown selection"):
        fb.load_study(selections=("loudest",))


@pytest.mark.parametrize("i", range(6))
def test_every_row_command_composes_and_validates(i):
    rows = small().rows()
    row = rows[i * len(rows) // 6]
    module, *overrides = fb.command(row, small())
    stage = module.removeprefix("ssah.")
    cfg = compose(stage, overrides)
    validate(cfg)
    if row.selection in ("safety", "random"):
        assert cfg.freeze.budget == row.budget and cfg.task.mix_ratio == row.p
        assert cfg.seed == row.seed and cfg.trainer.max_steps == 20
    if row.align_seed:
        assert cfg.world.align.seed == row.align_seed


def fake_run(tmp_path, name: str, asr: list[int], refused: list[int], metrics: dict) -> tuple:
    d = tmp_path / name
    d.mkdir()
    recs = [{"suite": "direct", "prompt_id": i, "judge/keyword": bool(x), "judge/keyword_paper": bool(x)}
            for i, x in enumerate(asr)]  # fmt: skip
    recs += [{"suite": "benign", "prompt_id": i, "refused": bool(x)} for i, x in enumerate(refused)]
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = {fb.ASR: sum(asr) / len(asr), f"{fb.ASR}/n": len(asr), **metrics}
    (d / "metrics.json").write_text(json.dumps(m))
    return d


def test_summary_keeps_numbers_and_verdict_bits_but_no_text(tmp_path):
    d = fake_run(tmp_path, "r", [1, 0, 1], [0, 1], {"task/heldout_loss": 1.5, "note": "x"})
    s = fb.summarize(d, fb.Row("safety", 0.05, 0.1, 2, 2), ["ssah.train", "seed=2"], 60.0)
    assert s["flags"] == {
        "direct/keyword": "101",
        "direct/keyword_paper": "101",
        "benign/refused": "01",
    }
    assert s["metrics"]["task/heldout_loss"] == 1.5 and "note" not in s["metrics"]
    assert s["row"] == "a2_s2_p0.1_safety_b0.05" and s["command"] == "python -m ssah.train seed=2"


def results(tmp_path, safety_asr: float, random_asr: float, seeds=(0, 1, 2)) -> dict:
    """Fake result summaries: per seed, 100 prompts (successes placed at random), safety /
    random / unfrozen rows whose ASR is the given rate plus the seed (in points)."""
    out = {}
    for s in seeds:
        for sel, rate in (("safety", safety_asr), ("random", random_asr), ("none", 0.6)):
            for b in (0.05, 0.63) if sel != "none" else (0.0,):
                row = fb.Row(sel, b, 0.0, s, s)
                k = round(100 * rate) + s
                pos = set(random.Random(f"{s}{sel}{b}").sample(range(100), k))
                flags = "".join("1" if i in pos else "0" for i in range(100))
                m = {fb.ASR: flags.count("1") / 100, f"{fb.ASR}/n": 100, "task/heldout_loss": 1.0,
                     "utility/accuracy": 0.7, "freeze/frozen_unit_params_fraction": b}  # fmt: skip
                out[row.name] = {"row": row.name, "selection": sel, "budget": b, "p": 0.0,
                                 "seed": s, "align_seed": s, "metrics": m, "wall_s": 420.0,
                                 "flags": {"direct/keyword": flags}}  # fmt: skip
    return out


def test_claims_table_tests_safety_against_random_stratified_by_seed(tmp_path):
    study = fb.load_study(
        seeds=(0, 1), budgets=(0.05, 0.63), ratios=(0.0,), selections=("safety", "random")
    )
    table = fb.claims(results(tmp_path, 0.2, 0.6), study)
    lines = [ln for ln in table.splitlines() if ln.startswith("| 0 |")]
    assert len(lines) == 2 and all("**supported**" in ln and "2 seed(s)" in ln for ln in lines)
    null = fb.claims(results(tmp_path, 0.4, 0.4, seeds=(0,)), study)
    assert "**supported**" not in null and "1 seed: paired" in null


def test_report_writes_curves_and_counts_cpu_hours(tmp_path):
    res_dir = tmp_path / "results"
    res_dir.mkdir()
    for name, r in results(tmp_path, 0.2, 0.6, seeds=(0, 1)).items():
        (res_dir / f"{name}.json").write_text(json.dumps(r))
    study = fb.load_study(
        seeds=(0, 1), budgets=(0.05, 0.63), ratios=(0.0,), selections=("safety", "random")
    )
    md = fb.report(study, res_dir, tmp_path)
    text = md.read_text()
    assert (tmp_path / "freeze_budget.png").stat().st_size > 1000
    assert "10 rows, 1.17 CPU-hours" in text and "a1_s1_p0_safety_b0.63" in text
    with pytest.raises(SsahError, match="no results"):
        fb.report(study, tmp_path / "empty", tmp_path)


def test_sweep_preset_is_a_multirun_on_the_smollm2_world():
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from ssah.cli import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
        cfg = hcompose("train", ["+sweep=freeze_budget"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.sweep_name == "freeze_budget"
    assert dict(cfg.hydra.sweeper.params)["freeze"] == "budget,budget_random"
    assert cfg.task.name == "smollm2_benign_mix" and cfg.freeze.units is None
    assert cfg.world.align.seed == cfg.seed and cfg.threads == 1
