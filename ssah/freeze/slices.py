"""Unit masks -> parameter slices (contract 5), counts, and freeze_mask.safetensors.

A parameter whose every entry is frozen (all rows / all columns, or a parameter outside units
with outside_units=freeze) is frozen whole with requires_grad=False: the optimizer never sees
it, which is exact and needs no copy. The others are partially frozen: rows (dim 0) or
columns (dim 1) listed by a sorted index, handled by the callback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ssah.freeze.masks import Masks
from ssah.io import atomic_write_bytes
from ssah.scoring.unitsfile import serialize
from ssah.units import KINDS, UnitIndex


@dataclass
class FrozenSlices:
    """What is frozen, by full parameter name (names as in `model.named_parameters()`)."""

    partial: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)  # name -> dim, idx
    whole: list[str] = field(default_factory=list)
    frozen_elements: int = 0
    total_elements: int = 0

    @property
    def params_fraction(self) -> float:
        return self.frozen_elements / max(self.total_elements, 1)

    def is_empty(self) -> bool:
        return not self.partial and not self.whole


def expand(index: UnitIndex, masks: Masks, model: nn.Module, outside_units: str) -> FrozenSlices:
    """Contract-5 expansion of `masks` over `model`'s parameters."""
    params = dict(model.named_parameters())
    out = FrozenSlices(total_elements=sum(p.numel() for p in params.values()))
    for layer in range(index.num_layers):
        for kind in KINDS:
            for s in index.slices(layer, kind, masks[(layer, kind)]):
                if s.index.numel() == 0:
                    continue
                p = params[s.name]
                per_entry = p.numel() // p.shape[s.dim]
                out.frozen_elements += s.index.numel() * per_entry
                if s.index.numel() == p.shape[s.dim]:
                    out.whole.append(s.name)
                else:
                    out.partial[s.name] = (s.dim, s.index.clone())
    if outside_units == "freeze":
        owned = index.unit_param_names()
        for name, p in params.items():
            if name not in owned:
                out.whole.append(name)
                out.frozen_elements += p.numel()
    return out


def values(model: nn.Module, frozen: FrozenSlices) -> dict[str, torch.Tensor]:
    """CPU copies of the frozen entries (rewind restores them; fingerprints read them)."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, (dim, idx) in frozen.partial.items():
            p = params[name]
            out[name] = p.detach().index_select(dim, idx.to(p.device)).cpu().clone()
        for name in frozen.whole:
            out[name] = params[name].detach().cpu().clone()
    return out


def write_mask_file(path: Path, index: UnitIndex, masks: Masks, metadata: dict[str, str]) -> Path:
    """freeze_mask.safetensors: layers.{i}.mlp / layers.{i}.attn bool vectors, True = frozen."""
    tensors = {
        f"layers.{i}.{k}": masks[(i, k)].to(torch.bool).contiguous()
        for i in range(index.num_layers)
        for k in KINDS
    }
    meta = {"format": "ssah-freeze-mask/1", "true_means": "frozen", **metadata}
    return atomic_write_bytes(path, serialize(tensors, meta))
