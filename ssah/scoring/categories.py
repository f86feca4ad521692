"""SCU / UCU / CU / RU attribution from two scores per unit.

Standardise each score within each layer (`unit_z`); rank all units of all layers
together; count ratios in parameters (a unit weighs the parameters it owns). Applied in
order, later overwriting earlier: RU = lowest z(S)+z(U), SCU = highest z(S)-z(U),
UCU = lowest z(S)-z(U); CU is the rest. Ties keep flat order (layer, mlp before attn, index).
A selection is the longest prefix of the ranking whose parameters do not exceed
ratio x all unit parameters, so its share is within one unit of the ratio.

How heads get their z (`head_z`):
  squared_channels (default; the authors' lib/prune.py, structure "AL-AM", itself FLAP's):
    square the score of every o_proj input channel, z-standardise the squared scores within
    the layer over all heads' channels together (std with ddof), head z = the mean of its
    head_dim channels' z. MLP neurons: z of the (unsquared) score within the layer.
  per_head (ssah's earlier default): z-standardise the layer's per-head scores (one value
    per head, from `head_reduction`) among themselves. With few heads per layer this gives
    heads unit-variance z while neurons (WIFV >= 0, skewed) have a floor near -0.4, so heads
    crowd the RU and UCU tails; kept as an ablation.
The z the ranking uses are rounded to float32 first (the units file stores them as
`safety_z`/`utility_z`), so the categories follow exactly from the stored fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssah.errors import SsahError
from ssah.units import CATEGORY_NAMES, KINDS, UnitIndex

RU, SCU, UCU, CU = 0, 1, 2, 3
HEAD_Z = ("squared_channels", "per_head")
Scores = dict[tuple[int, str], torch.Tensor]
Channels = dict[int, torch.Tensor]  # layer -> o_proj input-channel scores, head-major


class ZScores(dict):
    """{(layer, kind): z} already standardised (a units file's safety_z / utility_z):
    rankings use them as they are instead of standardising raw scores again."""


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


def _check_finite(scores: Scores | Channels) -> None:
    for key, v in scores.items():
        if not torch.isfinite(v).all():
            raise SsahError(
                f"scores of {key} contain NaN/inf; check the model and calibration data."
            )


def head_z_from_channels(channel: torch.Tensor, num_heads: int, ddof: int = 1) -> torch.Tensor:
    """Authors' order: square channel scores, z over the layer's channels, mean per head."""
    z = zscore(channel.to(torch.float64).square(), ddof)
    return z.reshape(num_heads, -1).mean(dim=1)


def unit_z(
    index: UnitIndex,
    scores: Scores,
    channels: Channels | None = None,
    head_z: str = "squared_channels",
    ddof: int = 1,
) -> Scores:
    """z per (layer, kind), float32 (what the units file stores and the ranking uses)."""
    if head_z not in HEAD_Z:
        raise SsahError(f"scoring.head_z={head_z!r} is unknown; use one of {HEAD_Z}.")
    _check_finite(scores)
    if head_z == "squared_channels":
        if channels is None or any(channels.get(i) is None for i in range(index.num_layers)):
            raise SsahError(
                "scoring.head_z=squared_channels needs the o_proj channel scores, which these "
                "scores lack (a units file or cache entry from before they were stored); "
                "rescore with `python -m ssah.score`, or set scoring.head_z=per_head."
            )
        _check_finite(channels)
    out: Scores = {}
    for (layer, kind), v in scores.items():
        if kind == "attn" and head_z == "squared_channels":
            z = head_z_from_channels(channels[layer], index.num_heads, ddof)  # type: ignore[index]
        else:
            z = zscore(v.to(torch.float32), ddof)
        out[(layer, kind)] = z.to(torch.float32)
    return out


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


def assign_z(index: UnitIndex, zs: Scores, zu: Scores, ratios: Ratios) -> Assignment:
    """Categories of every unit from its stored z-scores (float32 -> float64, then the rule)."""
    fs = index.flatten({k: v.to(torch.float32) for k, v in zs.items()}).to(torch.float64)
    fu = index.flatten({k: v.to(torch.float32) for k, v in zu.items()}).to(torch.float64)
    w = index.flat_weights()
    sel = {
        "ru": select(fs + fu, w, ratios.ru, highest=False),
        "scu": select(fs - fu, w, ratios.scu, highest=True),
        "ucu": select(fs - fu, w, ratios.ucu, highest=False),
    }
    cat = torch.full((w.numel(),), CU, dtype=torch.uint8)
    for name, code in (("ru", RU), ("scu", SCU), ("ucu", UCU)):
        cat[sel[name]] = code
    return Assignment(cat, sel)


def assign(
    index: UnitIndex,
    safety: Scores,
    utility: Scores,
    ratios: Ratios,
    ddof: int = 1,
    channel_safety: Channels | None = None,
    channel_utility: Channels | None = None,
    head_z: str = "squared_channels",
) -> Assignment:
    """Categories of every unit from float32 scores (rounded first, so files reproduce it)."""
    s32 = {k: v.to(torch.float32) for k, v in safety.items()}
    u32 = {k: v.to(torch.float32) for k, v in utility.items()}
    zs = unit_z(index, s32, _f32(channel_safety), head_z, ddof)
    zu = unit_z(index, u32, _f32(channel_utility), head_z, ddof)
    return assign_z(index, zs, zu, ratios)


def _f32(ch: Channels | None) -> Channels | None:
    return None if ch is None else {k: v.to(torch.float32) for k, v in ch.items()}


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
