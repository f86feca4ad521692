"""`python -m ssah.evaluate` as a user runs it: outputs on success, one error line on failure."""

from __future__ import annotations

import json

import pytest

SMALL = [
    "toy=tiny", "logger=csv", "eval.harmful.limit=4", "eval.benign.limit=3",
    "eval.suites.jailbreak.limit=2", "eval.suites.prefill.depths=[0,4]",
    "eval.generation.max_new_tokens=8", "eval.utility.generation.data.limit=4",
    "eval.utility.ppl.data.limit=4", "eval.utility.mc.tasks.toy_answers.from_answers.data.limit=8",
]  # fmt: skip


@pytest.mark.slow
def test_evaluate_stage_writes_metrics_records_plot(tiny_toy, stage_runner, tmp_path):
    run = tmp_path / "ok"
    p = stage_runner("evaluate", *SMALL, f"hydra.run.dir={run}")
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((run / "metrics.json").read_text())
    assert "safety/asr/direct/keyword" in m and "safety/asr/direct_sys/keyword" in m
    assert "safety/over_refusal" in m and "utility/accuracy" in m and "utility/ppl" in m
    assert all("/" in k for k in m)
    rows = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    assert rows and {"prompt", "response", "suite"} <= set(rows[0])
    assert (run / "prefill_depth.png").is_file()


def _main_in_process(monkeypatch, capsys, *overrides: str) -> tuple[int, str]:
    """The stage's Hydra entry point in this process (saves the interpreter start-up)."""
    import sys

    from ssah.evaluate import main

    monkeypatch.setattr(sys, "argv", ["ssah.evaluate", *overrides])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code), capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+eval.judges.guard={_target_:ssah.eval.classifier.ClassifierJudge,model:/nonexistent/g}",
            "error: judge model cannot be loaded",
        ),
        ("eval.harmful.source=/nonexistent/harmful.jsonl", "error: data file '/nonexistent/harm"),
        (
            "eval/harmful=hexphi",
            "error: eval.harmful: dataset 'hexphi' is gated on the Hugging Face hub",
        ),
    ],
)
def test_evaluate_stage_fails_cleanly(
    tiny_toy, outputs_dir, tmp_path, monkeypatch, capsys, override, message
):
    monkeypatch.setattr("ssah.eval.datasets.has_hf_token", lambda: False)
    run = tmp_path / "bad"
    code, err = _main_in_process(monkeypatch, capsys, *SMALL, override, f"hydra.run.dir={run}")
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()[-1]) < 400
    assert not (run / "metrics.json").exists()
