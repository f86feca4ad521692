"""Bad input at the edge ends in one line, never a traceback: a damaged cached world is seen
as unbuilt (and rebuilt at the door), scoring values are typed, a checkpoint dir without a
tokenizer is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssah.config import compose
from ssah.errors import SsahError
from ssah.io import damage, file_sizes
from ssah.schema import validate


def _artifact(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.safetensors").write_bytes(b"x" * 100)
    (root / "model" / "config.json").write_text("{}")
    (root / "DONE").write_text(json.dumps({"file_sizes": file_sizes(root)}))
    return root / "model" / "model.safetensors"


def test_a_truncated_or_missing_file_is_damage(tmp_path: Path) -> None:
    from ssah.worlds.smollm2.paths import World
    from ssah.worlds.toy.cache import ToyWorld

    weights = _artifact(tmp_path / "toy")
    assert damage(tmp_path / "toy") is None and ToyWorld(tmp_path / "toy").built
    weights.write_bytes(b"x" * 10)  # truncated
    assert "has 10 bytes, its build wrote 100" in damage(tmp_path / "toy")
    assert not ToyWorld(tmp_path / "toy").built  # the door builds it again
    smol = World(tmp_path / "smollm2", {"base": "k"})
    w = _artifact(smol.dir("base"))
    assert smol.built("base")
    w.unlink()
    assert "is missing" in damage(smol.dir("base")) and not smol.built("base")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "DONE").write_text("ok\n")  # older builds recorded no sizes: trusted
    assert damage(tmp_path / "old") is None


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("scoring.calibration.max_length=abc", "scoring.calibration.max_length='abc' is a str"),
        ("scoring.calibration.safety.n_samples=x", "scoring.calibration.safety.n_samples="),
        ("scoring.ratios.scu=zz", "scoring.ratios.scu='zz' is a str; expected float"),
        ("+scoring.calibration.utility.nope=1", "nope is not a known key"),
    ],
)
def test_scoring_values_are_typed(override: str, needle: str) -> None:
    with pytest.raises(SsahError, match=None) as err:
        validate(compose("score", [override]))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoint_without_tokenizer_is_named(tmp_path: Path) -> None:
    from ssah.models import ModelConfig, load_tokenizer

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(SsahError, match="has no tokenizer files"):
        load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
