"""A few optimizer steps on a tiny model lower the loss; NaN loss fails with one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from ssah.data.datamodule import TaskConfig
from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.module import CausalLMModule, OptimConfig
from ssah.training import fit, quiet_trainer


def _tiny(tok) -> LlamaForCausalLM:
    return tiny_llama(len(tok), layers=1, pad_token_id=None, max_position_embeddings=2048).train()


def _task(tmp_path, n=32) -> TaskConfig:
    src = tmp_path / "d.jsonl"
    src.write_text(
        "".join(
            json.dumps({"prompt": "say red", "response": "red red red ."}) + "\n" for _ in range(n)
        )
    )
    return TaskConfig(name="t", source=str(src), batch_size=8, val_fraction=0.0)


def _loss(model, tok, task) -> float:
    from ssah.data.datamodule import ChatDataModule

    dm = ChatDataModule(tok, task)
    dm.setup()
    with torch.no_grad():
        return float(model(**next(iter(dm.train_dataloader()))).loss)


def test_few_steps_lower_the_loss(toy_tokenizer, tmp_path):
    model, task = _tiny(toy_tokenizer), _task(tmp_path)
    before = _loss(model, toy_tokenizer, task)
    stats = fit(model, toy_tokenizer, task, OptimConfig(lr=1e-2, warmup_steps=0), quiet_trainer(8))
    after = _loss(model.eval(), toy_tokenizer, task)
    assert stats["train/steps"] == 8
    assert after < 0.8 * before


def test_nan_loss_is_a_clear_error(toy_tokenizer, tmp_path):
    model = _tiny(toy_tokenizer)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(SsahError, match="loss became nan"):
        fit(model, toy_tokenizer, _task(tmp_path), OptimConfig(lr=1e-3), quiet_trainer(2))


def test_weight_decay_reaches_adamw_and_spares_norms(toy_tokenizer):
    module = CausalLMModule(_tiny(toy_tokenizer), OptimConfig(weight_decay=0.1))
    decay, no_decay = __import__("ssah.module", fromlist=["param_groups"]).param_groups(
        module.model, module.optim
    )
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all("norm" not in names[id(p)] for p in decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])


def test_bad_optim_values_are_refused():
    with pytest.raises(SsahError, match="optim.lr"):
        OptimConfig(lr=0)
    with pytest.raises(SsahError, match="optim.weight_decay"):
        OptimConfig(weight_decay=-1)
