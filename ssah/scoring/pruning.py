"""Pruning units (paper Table 1): which units go (a category, top-k by z, random matched),
exact zeroing of the parameter slices they own (contract 5), and FLAP bias compensation.

Zeroing follows contract 5 (gate/up rows and down column of a neuron; q rows and o columns
of a head; k/v rows of a key/value head when all of its query heads go). Bias compensation
gives o_proj/down_proj a bias equal to the removed channels' mean input times their weights,
computed before zeroing (the authors' code and FLAP take the mean on the safety set, as the
mean of per-sample means).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ssah.errors import SsahError
from ssah.scoring.categories import select
from ssah.units import CATEGORY_NAMES, KINDS, UnitIndex

CATEGORIES = {name.lower(): code for code, name in enumerate(CATEGORY_NAMES)}
TARGETS = ("dense", *CATEGORIES, "topk", "random")
TOPK_KEYS = ("safety", "utility", "diff", "sum")
COMPENSATION_FOR = ("all", "utility")
Masks = dict[tuple[int, str], torch.Tensor]


@dataclass
class PruneConfig:
    """Top-level keys of conf/prune.yaml."""

    target: str = "scu"
    topk: dict[str, Any] = field(default_factory=dict)  # score, highest, ratio
    random: dict[str, Any] = field(default_factory=dict)  # match (category or ratio), seed
    bias_compensation: bool = False
    compensation_data: str = "safety"  # safety (authors' lib/prune.py) | utility calibration set
    compensation_mean: str = "sample"  # sample: mean of per-sample means (FLAP's, the authors')
    # | token: mean over all response tokens of the set
    # which measurements see the biases: all (ASR and utility) | utility (ASR on the plainly
    # zeroed model, as the paper's Table 1: the authors generated ASR with vLLM from the saved
    # checkpoint, whose Llama config has no o_proj/down_proj bias; PPL and zero-shot with them)
    compensation_for: str = "all"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise SsahError(f"target={self.target!r} is unknown; use one of {TARGETS}.")
        if self.compensation_data not in ("safety", "utility"):
            raise SsahError(f"compensation_data={self.compensation_data!r}; use safety or utility.")
        if self.compensation_for not in COMPENSATION_FOR:
            raise SsahError(
                f"compensation_for={self.compensation_for!r}; use one of {COMPENSATION_FOR}."
            )
        if self.compensation_mean not in ("sample", "token"):
            raise SsahError(f"compensation_mean={self.compensation_mean!r}; use sample or token.")
        key = self.topk.get("score", "safety")
        if key not in TOPK_KEYS:
            raise SsahError(f"topk.score={key!r} is unknown; use one of {TOPK_KEYS}.")
        r = float(self.topk.get("ratio", 0.01))
        if not 0.0 <= r <= 1.0:
            raise SsahError(f"topk.ratio={r} is outside [0, 1].")


# ---- choosing units ------------------------------------------------------------------------
def choose(
    pcfg: PruneConfig,
    index: UnitIndex,
    category: Masks,
    safety_z: Masks,
    utility_z: Masks,
) -> Masks:
    """Bool mask per (layer, kind) of the units to zero (`topk` ranks by the stored z)."""
    n = index.total_units()
    flat_cat = index.flatten(category)
    w = index.flat_weights()
    if pcfg.target == "dense":
        flat = torch.zeros(n, dtype=torch.bool)
    elif pcfg.target in CATEGORIES:
        flat = flat_cat == CATEGORIES[pcfg.target]
    elif pcfg.target == "topk":
        zs = index.flatten(safety_z).to(torch.float64)
        zu = index.flatten(utility_z).to(torch.float64)
        key = {"safety": zs, "utility": zu, "diff": zs - zu, "sum": zs + zu}[
            pcfg.topk.get("score", "safety")
        ]
        ratio = float(pcfg.topk.get("ratio", 0.01))
        flat = select(key, w, ratio, highest=bool(pcfg.topk.get("highest", True)))
    else:
        match = pcfg.random.get("match", "scu")
        if isinstance(match, str):
            if match not in CATEGORIES:
                raise SsahError(
                    f"random.match={match!r}; use a category {list(CATEGORIES)} or a ratio."
                )
            ratio = float(w[flat_cat == CATEGORIES[match]].sum() / w.sum())
        else:
            ratio = float(match)
        gen = torch.Generator().manual_seed(int(pcfg.random.get("seed", 0)))
        flat = random_fill(torch.randperm(n, generator=gen), w, ratio * float(w.sum()))
    return index.unflatten(flat)


def random_fill(order: torch.Tensor, weights: torch.Tensor, budget: float) -> torch.Tensor:
    """Walk a random order, taking each unit that still fits: the parameter count ends
    within one (smallest) unit of `budget`, even when single heads outweigh it."""
    mask = torch.zeros(weights.numel(), dtype=torch.bool)
    left = budget * (1 + 1e-12) + 1e-9
    smallest = float(weights.min()) if weights.numel() else 0.0
    for i in order.tolist():
        wi = float(weights[i])
        if wi <= left:
            mask[i] = True
            left -= wi
            if left < smallest:
                break
    return mask


# ---- zeroing -------------------------------------------------------------------------------
@torch.no_grad()
def compensation_biases(
    model: nn.Module,
    index: UnitIndex,
    masks: Masks,
    mean_inputs: dict[tuple[int, str], torch.Tensor],
) -> dict[tuple[int, str], torch.Tensor]:
    """FLAP: bias of B = B[:, removed] @ mean input[removed] (B = down_proj / o_proj)."""
    out = {}
    for (layer, kind), m in masks.items():
        if not m.any():
            continue
        which = index.second_matrix(kind)
        chans = (
            m.nonzero().flatten() if kind == "mlp" else index.head_channels(m.nonzero().flatten())
        )
        weight = index.module(model, layer, which).weight
        mu = mean_inputs[(layer, which)].to(weight.device, torch.float64)[chans.to(weight.device)]
        out[(layer, which)] = weight[:, chans.to(weight.device)].double() @ mu
    return out


@torch.no_grad()
def zero_units(
    model: nn.Module,
    index: UnitIndex,
    masks: Masks,
    biases: dict[tuple[int, str], torch.Tensor] | None = None,
) -> None:
    """Zero every parameter slice the masked units own; add compensation biases."""
    params = dict(model.named_parameters())
    for (layer, kind), m in masks.items():
        if m.any():
            for s in index.slices(layer, kind, m):
                p = params[s.name]
                p.index_fill_(s.dim, s.index.to(p.device), 0.0)
    for (layer, which), b in (biases or {}).items():
        mod = index.module(model, layer, which)
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros_like(b, dtype=mod.weight.dtype))
        mod.bias.add_(b.to(mod.bias.dtype))


def pruned_fractions(index: UnitIndex, masks: Masks) -> dict[str, float]:
    flat = index.flatten(masks)
    w = index.flat_weights()
    return {
        "prune/units": float(flat.sum()),
        "prune/units_fraction": float(flat.sum()) / flat.numel(),
        "prune/params_fraction": float(w[flat].sum() / w.sum()),
        **{
            f"prune/units_fraction/{k}": float(
                sum(masks[(i, k)].sum() for i in range(index.num_layers))
            )
            / (index.num_layers * index.num_units(k))
            for k in KINDS
        },
    }
