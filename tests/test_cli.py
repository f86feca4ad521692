"""Stages as a user runs them: bad input ends in one clear line, a non-zero exit, no traceback;
a real train run writes metrics.json and an offline W&B run whose summary has the same keys."""

from __future__ import annotations

import json

import pytest

from ssah.tracking import offline_runs, read_offline_summary


def _assert_clean_failure(proc, *needles: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, out


@pytest.mark.slow
def test_missing_model_dir_is_one_clear_line(stage_runner, tiny_toy):
    proc = stage_runner("train", "toy=tiny", "model.name_or_path=/nonexistent/dir")
    _assert_clean_failure(proc, "/nonexistent/dir", "error:")


def test_unknown_task_names_the_value(stage_runner):
    proc = stage_runner("train", "toy=tiny", "task=does_not_exist")
    _assert_clean_failure(proc, "does_not_exist")


def test_a_config_group_set_to_null_is_one_line_with_the_way_out(stage_runner) -> None:
    """`logger=null` (Hydra: a traceback) names the group, `~logger` and the options; the same
    from compose (a plan's rows), and `~logger` runs without a logger."""
    from ssah.config import compose
    from ssah.errors import SsahError

    proc = stage_runner("evaluate", "logger=null")
    _assert_clean_failure(proc, "error: logger=null: logger is a config group", "~logger")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(SsahError, match=r"eval/judges=null: .* drop it with ~eval/judges"):
        compose("evaluate", ["eval/judges=null"])
    assert compose("evaluate", ["~logger"]).get("logger") is None


def test_bad_optim_value_names_the_key(stage_runner, tiny_toy):
    proc = stage_runner("train", "toy=tiny", "optim.lr=-1")
    _assert_clean_failure(proc, "optim.lr")


@pytest.mark.slow
def test_train_writes_metrics_and_matching_wandb_summary(stage_runner, tiny_toy, tmp_path):
    run = tmp_path / "run"
    proc = stage_runner(
        "train",
        "toy=tiny",
        "trainer.max_steps=3",
        "save_model=true",
        f"hydra.run.dir={run}",
        "eval.generation.max_new_tokens=8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/steps"] == 3
    assert "time/train_s" in metrics
    assert any(k.startswith("safety/asr/") for k in metrics)
    assert any(k.startswith("utility/") for k in metrics)
    assert (run / "model" / "model.safetensors").is_file()
    runs = offline_runs(run)
    assert len(runs) == 1, list(run.rglob("*"))[:50]
    summary = read_offline_summary(runs[0])
    assert set(metrics) <= set(summary)
    for key, value in metrics.items():
        if isinstance(value, float):
            assert summary[key] == pytest.approx(value)
