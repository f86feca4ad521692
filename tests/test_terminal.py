"""What a user sees at the end of a stage: progress and a summary from ssah, and none of the
third-party noise (Lightning's litlogger tip, W&B's anonymous-setting warning, pytree
deprecations, warnings about a run's deliberately small logging interval)."""

from __future__ import annotations

import pytest

NOISE = ("Tip:", "litlogger", "anonymous setting", "LeafSpec", "logging interval", "TPU available")


@pytest.mark.slow
def test_train_prints_progress_and_summary_without_noise(tiny_toy, stage_runner, tmp_path):
    res = stage_runner(
        "train", "toy=tiny", "trainer.max_steps=2", "logger=wandb", f"hydra.run.dir={tmp_path}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert [n for n in NOISE if n in out] == []
    assert "[train] step 2/2" in out and "done in" in out
    assert "[ssah] train finished in" in out and str(tmp_path / "metrics.json") in out
    assert "safety/asr/direct/keyword = " in out and "(n=" in out


def test_gguf_tokenizer_notice_is_dropped_and_other_lines_kept() -> None:
    """transformers' 'default legacy behaviour' notice (printed when the smollm2 world reads
    the GGUF tokenizer) is filtered; any other line of that logger still prints."""
    import logging

    import transformers  # noqa: F401  (its loggers as they are in a real run: no propagation)

    from ssah.quiet import silence_third_party

    silence_third_party()
    log = logging.getLogger("transformers.models.llama.tokenization_llama_fast")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: seen.append(r.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        log.warning("You are using the default legacy behaviour of the <class 'X'>. ...")
        log.warning("something a user should see")
    finally:
        log.removeHandler(handler)
    assert seen == ["something a user should see"]
