"""Unit importance scorers: WIFV (paper Eq. 1, default), Wanda, SNIP, activation contrast, random.

Every scorer returns {(layer, kind): float32 vector} with one score per MLP neuron
(length intermediate_size) and per query head (length num_attention_heads), plus the raw
score of every o_proj input channel (length num_attention_heads x head_dim, head-major),
which the authors' head standardisation needs (see categories.unit_z). The per-head
score stored in `safety_score`/`utility_score` combines a head's channels by `head_reduction`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ssah.data.chat import IGNORE
from ssah.errors import SsahError
from ssah.scoring.stats import collect, running_fluc
from ssah.units import KINDS, UnitIndex

Scores = dict[tuple[int, str], torch.Tensor]
Batches = Sequence[dict[str, torch.Tensor]]
SCORERS = ("wifv", "wanda", "snip", "contrast", "random")
HEAD_REDUCTIONS = ("mean", "sum", "mean_square")
VARIANCES = ("sample", "running")
Channels = dict[int, torch.Tensor]


@dataclass
class ScorerConfig:
    """conf/scoring/*.yaml: which scorer and how a head's channel scores are combined."""

    name: str = "wifv"
    head_reduction: str = "mean"  # mean | sum | mean_square (per-head value stored in the file)
    seed: int = 0  # random scorer
    # wifv's Var: sample (unbiased per-token variance, Eq. 1) | running (FLAP's `fluc_inp`,
    # the authors' code: ssah.scoring.stats.RunningFluc, samples in draw order)
    variance: str = "sample"

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise SsahError(
                f"scoring.variance={self.variance!r} is unknown; use one of {VARIANCES}."
            )
        if self.name not in SCORERS:
            raise SsahError(f"scoring.scorer={self.name!r} is unknown; use one of {SCORERS}.")
        if self.head_reduction == "authors":
            raise SsahError(
                "scoring.head_reduction=authors was renamed mean_square: it squares channel "
                "scores but reduces them to heads before standardising, which the authors' code "
                "does not do; their order is scoring.head_z=squared_channels (the default)."
            )
        if self.head_reduction not in HEAD_REDUCTIONS:
            raise SsahError(
                f"scoring.head_reduction={self.head_reduction!r} is unknown; "
                f"use one of {HEAD_REDUCTIONS}."
            )


def reduce_heads(channel: torch.Tensor, index: UnitIndex, how: str) -> torch.Tensor:
    """[heads * head_dim] channel scores -> [heads] head scores.

    mean (default) and sum rank identically under head_z=per_head; mean_square is the mean
    of the squared channel scores. With head_z=squared_channels (default) the ranking uses
    the channel scores themselves and this value is only stored and reported.
    """
    per_head = channel.reshape(index.num_heads, index.head_dim)
    if how == "mean":
        return per_head.mean(dim=1)
    if how == "sum":
        return per_head.sum(dim=1)
    if how == "mean_square":
        return per_head.square().mean(dim=1)
    raise SsahError(f"head_reduction={how!r} is unknown; use one of {HEAD_REDUCTIONS}.")


@dataclass
class Scored:
    """Unit scores plus the raw o_proj input-channel scores of every layer (head-major)."""

    unit: Scores
    channel: Channels


def _weight(model: nn.Module, index: UnitIndex, layer: int, which: str) -> torch.Tensor:
    return index.module(model, layer, which).weight.detach().to(torch.float64)


def _finish(channel: dict[tuple[int, str], torch.Tensor], index: UnitIndex, how: str) -> Scored:
    """Channel scores -> unit scores and o_proj channel scores (float32, CPU)."""
    out: Scores = {}
    attn: Channels = {}
    for (layer, kind), v in channel.items():
        if kind == "attn":
            attn[layer] = v.to(torch.float32).cpu()
            unit = reduce_heads(attn[layer], index, how)
        else:
            unit = v
        out[(layer, kind)] = unit.to(torch.float32).cpu()
    return Scored(out, attn)


# ---- scorers ---------------------------------------------------------------------------------
def wifv(model: nn.Module, index: UnitIndex, batches: Batches, cfg: ScorerConfig) -> Scored:
    """I_j = Var_n(X_nj) * ||B[:, j]||^2, B = down_proj / o_proj (paper Eq. 1); Var is the
    sample variance, or with `variance: running` the authors' running estimate."""
    if cfg.variance == "running":
        var = running_fluc(model, index, batches)
    else:
        var = {k: st.variance() for k, st in collect(model, index, batches).stats.items()}
    channel = {}
    for layer in range(index.num_layers):
        for kind in KINDS:
            which = index.second_matrix(kind)
            col_sq = _weight(model, index, layer, which).square().sum(dim=0)
            channel[(layer, kind)] = var[(layer, which)] * col_sq
    return _finish(channel, index, cfg.head_reduction)


def wanda(model: nn.Module, index: UnitIndex, batches: Batches, cfg: ScorerConfig) -> Scored:
    """Sum over the unit's weights of |W_ij| * ||X_j||_2 (gate/up rows + down column;
    q rows + o columns per head channel). k/v rows are shared by a group and left out."""
    which = ("gate_proj", "down_proj", "q_proj", "o_proj")
    st = collect(model, index, batches, which).stats
    channel = {}
    for layer in range(index.num_layers):
        norm = {w: st[(layer, w)].sumsq().clamp_min(0).sqrt() for w in which}
        mlp = _weight(model, index, layer, "down_proj").abs().sum(dim=0) * norm["down_proj"]
        for first in ("gate_proj", "up_proj"):
            mlp = mlp + _weight(model, index, layer, first).abs() @ norm["gate_proj"]
        attn = _weight(model, index, layer, "o_proj").abs().sum(dim=0) * norm["o_proj"]
        attn = attn + _weight(model, index, layer, "q_proj").abs() @ norm["q_proj"]
        channel[(layer, "mlp")], channel[(layer, "attn")] = mlp, attn
    return _finish(channel, index, cfg.head_reduction)


def contrast(model: nn.Module, index: UnitIndex, batches: Batches, cfg: ScorerConfig) -> Scored:
    """Mean |activation| of the unit's channels (input of down_proj / o_proj); the category
    rule then contrasts safety against utility data."""
    st = collect(model, index, batches, track_abs=True).stats
    channel = {
        (layer, kind): st[(layer, index.second_matrix(kind))].mean_abs()
        for layer in range(index.num_layers)
        for kind in KINDS
    }
    return _finish(channel, index, cfg.head_reduction)


def snip(model: nn.Module, index: UnitIndex, batches: Batches, cfg: ScorerConfig) -> Scored:
    """Sum over the unit's weights of |W * dL/dW|, L = mean response-token loss over the
    whole calibration set; one backward pass per batch gives every layer's gradient."""
    names = ("gate_proj", "up_proj", "down_proj", "q_proj", "o_proj")
    params = {
        (layer, w): index.module(model, layer, w).weight
        for layer in range(index.num_layers)
        for w in names
    }
    grads = _accumulated_grads(model, list(params.values()), batches)
    g = dict(zip(params, grads, strict=True))
    channel = {}
    for layer in range(index.num_layers):
        s = {
            w: (params[(layer, w)].detach().double() * g[(layer, w)].double()).abs() for w in names
        }
        channel[(layer, "mlp")] = (
            s["gate_proj"].sum(dim=1) + s["up_proj"].sum(dim=1) + s["down_proj"].sum(dim=0)
        )
        channel[(layer, "attn")] = s["q_proj"].sum(dim=1) + s["o_proj"].sum(dim=0)
    return _finish(channel, index, cfg.head_reduction)


def _accumulated_grads(
    model: nn.Module, params: list[torch.Tensor], batches: Batches
) -> list[torch.Tensor]:
    """dL/dp for L = sum of response-token cross-entropy / number of response tokens.

    Only `params` require grad during the passes; the model's flags and .grad are restored.
    """
    device = next(model.parameters()).device
    total = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    if total == 0:
        raise SsahError("calibration data has no response tokens; nothing to score.")
    flags = {p: p.requires_grad for p in model.parameters()}
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for b in batches:
                labels = b["labels"].to(device)
                logits = model(
                    input_ids=b["input_ids"].to(device),
                    attention_mask=b["attention_mask"].to(device),
                    use_cache=False,
                ).logits
                loss = (
                    F.cross_entropy(
                        logits[:, :-1].flatten(0, 1).float(),
                        labels[:, 1:].flatten(),
                        ignore_index=IGNORE,
                        reduction="sum",
                    )
                    / total
                )
                for a, gr in zip(acc, torch.autograd.grad(loss, params), strict=True):
                    a += gr.float()
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
    return acc


def random_scores(
    model: nn.Module, index: UnitIndex, batches: Batches, cfg: ScorerConfig, stream: int = 0
) -> Scored:
    """Uniform random scores, seeded by (seed, stream); a baseline that needs no data.
    A head's channels all carry the head's score (so both head_z rules apply)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + stream)
    unit = {
        (layer, kind): torch.rand(index.num_units(kind), generator=gen)
        for layer in range(index.num_layers)
        for kind in KINDS
    }
    channel = {
        layer: unit[(layer, "attn")].repeat_interleave(index.head_dim)
        for layer in range(index.num_layers)
    }
    return Scored(unit, channel)


SCORER_FNS: dict[str, Callable[..., Scored]] = {
    "wifv": wifv,
    "wanda": wanda,
    "snip": snip,
    "contrast": contrast,
}


def score_channels(
    model: nn.Module,
    index: UnitIndex,
    batches: Batches,
    cfg: ScorerConfig,
    stream: int = 0,
) -> Scored:
    """Scores of every unit and o_proj channel on one calibration set (`stream` separates
    the random draws)."""
    if cfg.name == "random":
        return random_scores(model, index, batches, cfg, stream)
    was_training = model.training
    model.eval()
    try:
        return SCORER_FNS[cfg.name](model, index, batches, cfg)
    finally:
        model.train(was_training)


def score(
    model: nn.Module,
    index: UnitIndex,
    batches: Batches,
    cfg: ScorerConfig,
    stream: int = 0,
) -> Scores:
    """Scores of every unit on one calibration set (unit scores of `score_channels`)."""
    return score_channels(model, index, batches, cfg, stream).unit
