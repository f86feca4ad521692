"""Synthetic units files (contract 4) for tests and benchmarks: random scores, categories with
given shares of units, and the model's hash, so freezing never depends on running a scorer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ssah.scoring.unitsfile import model_digest, write_units
from ssah.units import KINDS, UnitIndex

DEFAULT_SHARES = {"RU": 0.15, "SCU": 0.05, "UCU": 0.15}  # the rest is CU
CODES = {"RU": 0, "SCU": 1, "UCU": 2}


def synthetic_units(
    model: nn.Module,
    path: str | Path,
    seed: int = 0,
    shares: dict[str, float] | None = None,
    model_name: str = "synthetic",
) -> Path:
    """Write a units file for `model` with random scores and categories (per layer and kind,
    at least one unit of every category where the layer has room)."""
    shares = shares or DEFAULT_SHARES
    index = UnitIndex(model)
    gen = torch.Generator().manual_seed(seed)
    safety, utility, category = {}, {}, {}
    for i in range(index.num_layers):
        for k in KINDS:
            n = index.num_units(k)
            safety[(i, k)] = torch.rand(n, generator=gen)
            utility[(i, k)] = torch.rand(n, generator=gen)
            cat = torch.full((n,), 3, dtype=torch.uint8)
            order = torch.randperm(n, generator=gen)
            pos = 0
            for name, share in shares.items():
                m = max(1, round(share * n)) if n >= 4 else 0
                cat[order[pos : pos + m]] = CODES[name]
                pos += m
            category[(i, k)] = cat
    meta = {"model": model_name, "model_hash": model_digest(model), "scorer": "synthetic"}
    return write_units(path, index, safety, utility, category, meta)
