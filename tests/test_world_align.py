"""The smollm2 world's alignment build (ssah/worlds/smollm2/build.py build_aligned) on the tiny
toy world's model and data: the recipe's own overrides switch model, task and eval to the toy
ones (the last override wins), so the build runs in seconds without the smollm2 wheels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOY = ["toy=tiny", "model=toy_base", "task=toy_align", "eval=toy", "trainer.max_steps=2"]


def _world(tmp_path: Path):
    from ssah.worlds.smollm2.paths import World

    recipe = {"name": "smollm2", "cache_dir": str(tmp_path), "align": {"seed": 0, "overrides": TOY}}
    return recipe, World(tmp_path / "smollm2", {"aligned": "k"})


def _build(recipe, world) -> dict:
    from ssah.worlds.smollm2.build import build_aligned
    from ssah.worlds.smollm2.world import build_artifact

    build_artifact(world.dir("aligned"), lambda out: build_aligned(recipe, world, out))
    return json.loads((world.dir("aligned") / "DONE").read_text())


@pytest.mark.slow
def test_the_builds_numbers_are_the_train_stages(tiny_toy, outputs_dir, tmp_path) -> None:
    """Trained, then its saved model evaluated: the weights and the validation numbers of one
    `python -m ssah.train` run with the same overrides (train and evaluate in one go)."""
    import torch
    from omegaconf import open_dict
    from safetensors.torch import load_file

    from ssah.config import compose
    from ssah.finetune import finetune
    from ssah.worlds.smollm2.build import align_overrides, recipe_node

    recipe, world = _world(tmp_path)
    tcfg = compose("train", align_overrides(recipe))
    with open_dict(tcfg):
        tcfg.world = recipe_node(recipe)
    plain = finetune(tcfg, tmp_path / "plain")
    done = _build(recipe, world)
    assert done["val"] == {
        k: v for k, v in plain.items() if k.startswith(("safety/", "utility/", "train/"))
    }
    assert "safety/asr/direct/keyword" in done["val"] and "train/loss" in done["val"]
    a = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    b = load_file(world.dir("aligned") / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_an_alignment_whose_evaluation_failed_is_not_trained_again(
    tiny_toy, outputs_dir, tmp_path, monkeypatch
) -> None:
    """The validation evaluation crashes once after training: the trained model is kept, and
    the next build evaluates it without training again (it used to train again: ~15 min)."""
    import ssah.eval.suite
    import ssah.finetune
    from ssah.worlds.smollm2.build import trained_dir

    fits: list[int] = []
    real_fit, real_suite = ssah.finetune.fit, ssah.eval.suite.run_suite
    monkeypatch.setattr(ssah.finetune, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))

    def crash_once(*a, **k):
        if not crashed:
            crashed.append(1)
            raise RuntimeError("the judge crashed")
        return real_suite(*a, **k)

    crashed: list[int] = []
    monkeypatch.setattr(ssah.eval.suite, "run_suite", crash_once)
    recipe, world = _world(tmp_path)
    with pytest.raises(RuntimeError, match="the judge crashed"):
        _build(recipe, world)
    assert fits == [1] and not world.built("aligned")
    assert (trained_dir(world) / "model" / "model.safetensors").is_file()  # kept
    done = _build(recipe, world)
    assert fits == [1]  # evaluated only
    assert world.built("aligned") and not trained_dir(world).exists()
    assert "safety/asr/direct/keyword" in done["val"] and "train/loss" in done["val"]
    assert (world.dir("aligned") / "model" / "config.json").is_file()
    assert (world.dir("aligned") / "records.jsonl").is_file()
