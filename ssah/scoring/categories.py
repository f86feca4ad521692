"""SCU / UCU / CU / RU attribution from two scores per unit.

z-standardise each score within each (layer, unit kind); rank all units of all layers
together; count ratios in parameters (a unit weighs the parameters it owns). Applied in
order, later overwriting earlier: RU = lowest z(S)+z(U), SCU = highest z(S)-z(U),
UCU = lowest z(S)-z(U); CU is the rest. Ties keep flat order (layer, mlp before attn, index).
A selection is the longest prefix of the ranking whose parameters do not exceed
ratio x all unit parameters, so its share is within one unit of the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssah.errors import SsahError
from ssah.units import KINDS, UnitIndex

RU, SCU, UCU, CU = 0, 1, 2, 3
CATEGORY_NAMES = ("RU", "SCU", "UCU", "CU")
Scores = dict[tuple[int, str], torch.Tensor]


@dataclass
class Ratios:
    """Shares of unit parameters: a (RU), b (SCU), c (UCU); authors' defaults."""

    ru: float = 0.10
    scu: float = 0.01
    ucu: float = 0.10

    def __post_init__(self) -> None:
        for k in ("ru", "scu", "ucu"):
            v = float(getattr(self, k))
            if not 0.0 <= v <= 1.0:
                raise SsahError(f"scoring.ratios.{k}={v} is outside [0, 1]; give a fraction.")
            setattr(self, k, v)


def zscore(x: torch.Tensor, ddof: int = 1) -> torch.Tensor:
    """(x - mean) / std in float64; a constant vector gives zeros. ddof=1 as in FLAP."""
    x = x.to(torch.float64)
    if x.numel() <= ddof:
        return torch.zeros_like(x)
    std = x.std(correction=ddof)
    if not torch.isfinite(std) or std == 0:
        return torch.zeros_like(x)
    return (x - x.mean()) / std


def standardized(index: UnitIndex, scores: Scores, ddof: int = 1) -> torch.Tensor:
    """Flat vector of z-scores, standardised within each (layer, kind)."""
    for key, v in scores.items():
        if not torch.isfinite(v).all():
            raise SsahError(
                f"scores of {key} contain NaN/inf; check the model and calibration data."
            )
    return index.flatten({k: zscore(v, ddof) for k, v in scores.items()})


def select(key: torch.Tensor, weights: torch.Tensor, ratio: float, highest: bool) -> torch.Tensor:
    """Bool mask of the longest prefix of the ranking whose weight is <= ratio * total."""
    order = torch.sort(-key if highest else key, stable=True).indices
    budget = ratio * float(weights.sum())
    cum = torch.cumsum(weights[order], dim=0)
    k = int((cum <= budget * (1 + 1e-12) + 1e-9).sum())
    mask = torch.zeros(key.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


@dataclass
class Assignment:
    """Final categories (flat, uint8) and the raw selections before overwriting."""

    category: torch.Tensor
    selected: dict[str, torch.Tensor]


def assign(
    index: UnitIndex, safety: Scores, utility: Scores, ratios: Ratios, ddof: int = 1
) -> Assignment:
    """Categories of every unit from float32 scores (rounded first, so files reproduce it)."""
    zs = standardized(index, {k: v.to(torch.float32) for k, v in safety.items()}, ddof)
    zu = standardized(index, {k: v.to(torch.float32) for k, v in utility.items()}, ddof)
    w = index.flat_weights()
    sel = {
        "ru": select(zs + zu, w, ratios.ru, highest=False),
        "scu": select(zs - zu, w, ratios.scu, highest=True),
        "ucu": select(zs - zu, w, ratios.ucu, highest=False),
    }
    cat = torch.full((w.numel(),), CU, dtype=torch.uint8)
    for name, code in (("ru", RU), ("scu", SCU), ("ucu", UCU)):
        cat[sel[name]] = code
    return Assignment(cat, sel)


def per_layer(index: UnitIndex, flat: torch.Tensor) -> Scores:
    """Flat category vector -> {(layer, kind): vector}."""
    return index.unflatten(flat)


def summary(index: UnitIndex, asg: Assignment) -> dict[str, Any]:
    """Shares of units and of parameters per category, overall and per layer and kind."""
    w = index.flat_weights()
    cat = asg.category
    total_w, total_n = float(w.sum()), cat.numel()
    out: dict[str, Any] = {"units_share": {}, "params_share": {}, "selected_params_share": {}}
    for code, name in enumerate(CATEGORY_NAMES):
        m = cat == code
        out["units_share"][name.lower()] = int(m.sum()) / total_n
        out["params_share"][name.lower()] = float(w[m].sum()) / total_w
    for name, m in asg.selected.items():
        out["selected_params_share"][name] = float(w[m].sum()) / total_w
    layers = []
    cats = index.unflatten(cat)
    for layer in range(index.num_layers):
        row: dict[str, Any] = {}
        layer_w = {k: index.unit_weight(k) for k in KINDS}
        total = sum(cats[(layer, k)].numel() * layer_w[k] for k in KINDS)
        for kind in KINDS:
            c = cats[(layer, kind)]
            row[kind] = {
                name.lower(): int((c == code).sum()) / c.numel()
                for code, name in enumerate(CATEGORY_NAMES)
            }
        row["params"] = {
            name.lower(): sum(float((cats[(layer, k)] == code).sum()) * layer_w[k] for k in KINDS)
            / total
            for code, name in enumerate(CATEGORY_NAMES)
        }
        layers.append(row)
    out["per_layer"] = layers
    out["counts"] = {
        name.lower(): int((cat == code).sum()) for code, name in enumerate(CATEGORY_NAMES)
    }
    return out
