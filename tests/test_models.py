"""Model loading settings: activation checkpointing changes memory, not the gradients."""

from __future__ import annotations

import torch

from ssah.eval.tiny import tiny_pair
from ssah.models import ModelConfig, prepare_for_training


def _grads(model) -> dict[str, torch.Tensor]:
    model.train()
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_is_switched_on_and_keeps_gradients():
    plain, _ = tiny_pair(seed=1)
    ckpt, _ = tiny_pair(seed=1)
    cfg = ModelConfig(name_or_path="unused", gradient_checkpointing=True)
    prepare_for_training(ckpt, cfg)
    assert ckpt.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    assert ckpt.config.use_cache is False
    a, b = _grads(plain), _grads(ckpt)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    prepare_for_training(plain, ModelConfig(name_or_path="unused"))
    assert not plain.is_gradient_checkpointing
