"""Bad input at the edge: each case below ends in one SsahError line naming the key and the
value, before any model loads; the stage door prints it as `error: ...` with exit code 2."""

from __future__ import annotations

import json

import pytest

from ssah.config import compose
from ssah.errors import SsahError
from ssah.schema import validate

CASES = [
    (["trainer.max_steps=abc"], r"trainer\.max_steps='abc' is a str; expected int"),
    (["seed=xyz"], r"seed='xyz' is a str; expected int"),
    (["task.batch_size=1.5"], r"task\.batch_size=1\.5 is a float; expected int"),
    (["optim.lr=fast"], r"optim\.lr='fast' is a str; expected float"),
    (["+model.dtyp=bf16"], r"model\.dtyp is not a known key of model"),
    (["scoring.ratios.ru=0.6", "scoring.ratios.ucu=0.6"], r"scoring\.ratios add up to 1\.21"),
    (["scoring.ratios.scu=1.5"], r"scoring\.ratios\.scu=1\.5 must be a fraction"),
]


@pytest.mark.parametrize(("overrides", "message"), CASES)
def test_bad_values_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(SsahError, match=message) as err:
        validate(compose("train", overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("stage", ["train", "score", "prune", "evaluate", "probe", "plan"])
def test_shipped_defaults_pass(stage):
    validate(compose(stage, []))


def test_online_wandb_without_credentials_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(SsahError, match="WANDB_API_KEY"):
        validate(compose("train", ["logger.offline=false"]))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    validate(compose("train", ["logger.offline=false"]))  # the key comes from the environment


def test_model_dir_without_weights_is_one_line(tmp_path):
    from ssah.models import ModelConfig, load_model

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(SsahError, match=r"config\.json but no \*\.safetensors"):
        load_model(ModelConfig(name_or_path=str(tmp_path)))


def test_the_door_prints_one_line_and_exits_2(stage_runner):
    res = stage_runner("train", "trainer.max_steps=abc", "logger=csv")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert lines == ["error: trainer.max_steps='abc' is a str; expected int. "
                     "Fix the value on the command line or in conf/."]  # fmt: skip
