"""Baselines in the freezing harness: rewind (Wei et al. 2024) and LoRA through PEFT."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssah.errors import SsahError
from ssah.freeze.slices import FrozenSlices


def rewind(model: nn.Module, frozen: FrozenSlices, original: dict[str, torch.Tensor]) -> nn.Module:
    """Copy the original values back into the selected slices after unconstrained training."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, (dim, idx) in frozen.partial.items():
            p = params[name]
            p.index_copy_(dim, idx.to(p.device), original[name].to(p.device, p.dtype))
        for name in frozen.whole:
            p = params[name]
            p.copy_(original[name].to(p.device, p.dtype))
    return model


def wrap_lora(model: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """PEFT LoRA adapters on `lora.target_modules`; only the adapters train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:  # pragma: no cover - peft is a dependency
        raise SsahError("freeze=lora needs the `peft` package (pip install peft).") from None
    cfg = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),
        lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:
        raise SsahError(f"freeze.lora does not fit this model: {e}") from None


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights: a plain model for evaluation and save_pretrained."""
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def trainable_fraction(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(total, 1)
