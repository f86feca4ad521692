"""`python -m ssah.train freeze=...` as a user runs it, on the tiny toy world: bad specs end
with one clear line and exit 2; a 2-process DDP run keeps frozen units bit-identical in model/."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from ssah.freeze.check import compare
from ssah.freeze.synthetic import synthetic_units

pytestmark = pytest.mark.slow
COMMON = ["toy=tiny", "evaluate=false", "logger=csv"]


def _units_for(path, model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return synthetic_units(model, tmp_path / "units.safetensors", seed=2)


def _clean_failure(res, *needles: str) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert line, res.stderr[-2000:]
    for n in needles:
        assert n in line[-1], line[-1]


def test_unknown_category_is_one_clear_line(tiny_toy, stage_runner, tmp_path):
    res = stage_runner(
        "train",
        *COMMON,
        "freeze=scu",
        "freeze.categories=[SCU,XCU]",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    _clean_failure(res, "'XCU'", "freeze.categories")


def test_units_file_for_another_model_is_refused(tiny_toy, stage_runner, tmp_path):
    from test_freeze import tiny  # a model the units file does not belong to

    synthetic_units(tiny(intermediate=48), tmp_path / "other.safetensors")
    res = stage_runner(
        "train",
        *COMMON,
        "freeze=scu_all_cu",
        f"freeze.units={tmp_path / 'other.safetensors'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    _clean_failure(res, "other.safetensors", "another model")


@pytest.mark.distributed
def test_ddp_run_keeps_frozen_units_bit_identical(tiny_toy, stage_runner, tmp_path):
    aligned = tiny_toy.path("aligned")
    units = _units_for(tmp_path, aligned, tmp_path)
    run = tmp_path / "run"
    res = stage_runner(
        "train",
        *COMMON,
        "freeze=scu_all_cu",
        f"freeze.units={units}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "trainer.gradient_clip_val=1.0",
        "trainer.accumulate_grad_batches=2",
        "optim.weight_decay=0.1",
        "optim.warmup_steps=0",
        "save_model=true",
        f"hydra.run.dir={run}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("freeze/frozen_units_fraction", "freeze/frozen_params_fraction", "time/train_s"):
        assert key in metrics
    assert metrics["train/steps"] == 4  # epochs_multiplier 2 of scu_all_cu
    assert metrics["freeze/final_check"] == 1.0
    got = compare(run, aligned)
    assert got["ok"] and got["frozen_slices"] > 0, got
    assert got["trainable_slices_changed"] == got["trainable_slices"], got
    assert sorted(p.name for p in run.glob("metrics*.json")) == ["metrics.json"]


def test_bf16_grouped_run_keeps_frozen_units_bit_identical(tiny_toy, stage_runner, tmp_path):
    """Every throughput option as a user turns it on (trainer=cpu_bf16 autocast, length-grouped
    batches, fused AdamW, the LM head on labelled tokens only): the saved model's frozen slices
    equal the starting model's, bit for bit."""
    from ssah.training import cpu_bf16_supported

    if not cpu_bf16_supported():
        pytest.skip("this CPU has no native bfloat16: the train door refuses trainer=cpu_bf16")
    aligned = tiny_toy.path("aligned")
    units = _units_for(tmp_path, aligned, tmp_path)
    run = tmp_path / "run"
    res = stage_runner(
        "train",
        *COMMON,
        "freeze=scu_all_cu",
        f"freeze.units={units}",
        "trainer=cpu_bf16",
        "+task.group_by_length=true",
        "+optim.fused=true",
        "+model.head_on_labels_only=true",
        "trainer.gradient_clip_val=1.0",
        "trainer.max_steps=2",
        "optim.weight_decay=0.1",
        "optim.warmup_steps=0",
        "save_model=true",
        f"hydra.run.dir={run}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["freeze/final_check"] == 1.0
    got = compare(run, aligned)
    assert got["ok"] and got["frozen_slices"] > 0, got
    assert got["trainable_slices_changed"] == got["trainable_slices"], got
