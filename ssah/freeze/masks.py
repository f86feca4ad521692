"""Units file + spec -> unit masks {(layer, kind): bool vector, True = frozen}.

Ratios count parameters as categories do (a unit weighs the parameters it owns, so
extra_ratio=0.06 is 6% of all unit parameters; the paper's "SCU + top 6% of CU" = 7.5%).
Ties keep flat order (layer, mlp before attn, index), like the category assignment.
"""

from __future__ import annotations

import torch

from ssah.errors import SsahError
from ssah.freeze.spec import FreezeConfig
from ssah.scoring.categories import ZScores, zscore
from ssah.units import KINDS, UnitIndex

Masks = dict[tuple[int, str], torch.Tensor]


def empty_masks(index: UnitIndex) -> Masks:
    return {
        (i, k): torch.zeros(index.num_units(k), dtype=torch.bool)
        for i in range(index.num_layers)
        for k in KINDS
    }


def in_layers(index: UnitIndex, spec: FreezeConfig) -> torch.Tensor:
    """Flat bool vector: units inside spec.layers."""
    if spec.layers is None:
        return torch.ones(index.total_units(), dtype=torch.bool)
    start, stop = spec.layers
    if stop > index.num_layers:
        raise SsahError(
            f"freeze.layers={spec.layers} reaches past the model's {index.num_layers} blocks; "
            f"use stop <= {index.num_layers}."
        )
    return index.flatten(
        {
            (i, k): torch.full((index.num_units(k),), start <= i < stop, dtype=torch.bool)
            for i in range(index.num_layers)
            for k in KINDS
        }
    )


def check_categories(index: UnitIndex, category: Masks, source: str) -> torch.Tensor:
    """Flat uint8 categories, refusing missing or out-of-range entries."""
    for i in range(index.num_layers):
        for k in KINDS:
            t = category.get((i, k))
            if t is None or t.numel() != index.num_units(k):
                raise SsahError(
                    f"{source!r} has no category of the right length for layers.{i}.{k} "
                    f"(model: {index.num_units(k)} units); it was made for another model."
                )
            if t.numel() and int(t.max()) > 3:
                raise SsahError(
                    f"{source!r}: layers.{i}.{k}.category holds {int(t.max())}; contract 4 codes "
                    "are 0 RU, 1 SCU, 2 UCU, 3 CU."
                )
    return index.flatten({key: v.to(torch.uint8) for key, v in category.items()})


def ranking_key(
    index: UnitIndex, safety: Masks, utility: Masks, how: str, ddof: int
) -> torch.Tensor:
    """Flat ranking key (higher = more "top") from per-layer z-scores (stored z as they are)."""

    def z(scores: Masks) -> torch.Tensor:
        if isinstance(scores, ZScores):
            return index.flatten({k: v.to(torch.float64) for k, v in scores.items()})
        return index.flatten({k: zscore(v, ddof) for k, v in scores.items()})

    zu = z(utility)
    if how == "z_utility":
        return zu
    zs = z(safety)
    if how == "z_safety":
        return zs
    return zs - zu if how == "z_safety_minus_utility" else zs + zu


def top_by_weight(
    key: torch.Tensor, weights: torch.Tensor, candidates: torch.Tensor, budget: float
) -> torch.Tensor:
    """Longest prefix of the candidates ranked by key (descending) whose weight <= budget."""
    order = torch.sort(-key.masked_fill(~candidates, float("-inf")), stable=True).indices
    order = order[candidates[order]]
    cum = torch.cumsum(weights[order], dim=0)
    k = int((cum <= budget * (1 + 1e-12) + 1e-9).sum())
    out = torch.zeros_like(candidates)
    out[order[:k]] = True
    return out


def select(
    index: UnitIndex,
    spec: FreezeConfig,
    category: Masks,
    safety: Masks | None,
    utility: Masks | None,
    source: str,
    ddof: int = 1,
) -> Masks:
    """Frozen units of a freeze/rewind spec."""
    cat = check_categories(index, category, source)
    inside = in_layers(index, spec)
    if spec.budget is not None:
        if safety is None or utility is None:
            raise SsahError(f"{source!r} has no scores; freeze.budget needs them.")
        return index.unflatten(select_budget(index, spec, cat, inside, safety, utility, ddof))
    if spec.train_ranking is not None:  # e.g. the paper's RU of the base from utility-only scores
        if safety is None or utility is None:
            raise SsahError(f"{source!r} has no scores; freeze.train_ranking needs them.")
        key = ranking_key(index, safety, utility, spec.train_ranking, ddof)
        weights = index.flat_weights()
        trainable = top_by_weight(-key, weights, inside, spec.train_ratio * float(weights.sum()))
        return index.unflatten(inside & ~trainable)
    frozen = torch.isin(cat, torch.tensor(spec.frozen_codes, dtype=torch.uint8)) & inside
    if spec.extra_ratio > 0:
        if safety is None or utility is None:
            raise SsahError(f"{source!r} has no scores; freeze.extra_ratio needs them.")
        key = ranking_key(index, safety, utility, spec.extra_ranking, ddof)
        weights = index.flat_weights()
        cand = (cat == spec.extra_code) & inside & ~frozen
        frozen |= top_by_weight(key, weights, cand, spec.extra_ratio * float(weights.sum()))
    return index.unflatten(frozen)


# category priority of the `safety` order: SCU first, then CU, then RU, then UCU
SAFETY_PRIORITY = {1: 0, 3: 1, 0: 2, 2: 3}


def prefix_by_weight(order: torch.Tensor, weights: torch.Tensor, budget: float) -> torch.Tensor:
    """Flat mask of the longest prefix of `order` (unit indices) whose weight <= budget."""
    cum = torch.cumsum(weights[order], dim=0)
    k = int((cum <= budget * (1 + 1e-12) + 1e-9).sum())
    out = torch.zeros(weights.numel(), dtype=torch.bool)
    out[order[:k]] = True
    return out


def select_budget(
    index: UnitIndex,
    spec: FreezeConfig,
    cat: torch.Tensor,
    inside: torch.Tensor,
    safety: Masks,
    utility: Masks,
    ddof: int,
) -> torch.Tensor:
    """Flat mask: the first spec.budget of unit parameters (inside spec.layers) in the order of
    spec.selection; ties keep flat order. `layers` freezes whole blocks: as many contiguous
    blocks as fit the budget, the window with the highest mean z(I_S)-z(I_U)."""
    weights = index.flat_weights()
    budget = float(spec.budget) * float(weights.sum())  # type: ignore[arg-type]
    how = {"safety": "z_safety_minus_utility", "safety_score": "z_safety", "utility": "z_utility"}
    if spec.selection == "layers":
        key = ranking_key(index, safety, utility, "z_safety_minus_utility", ddof)
        return _layer_window(index, inside, key, weights, budget)
    key = ranking_key(index, safety, utility, how[spec.selection], ddof)
    order = torch.sort(-key, stable=True).indices
    if spec.selection == "safety":
        prio = torch.tensor([SAFETY_PRIORITY[int(c)] for c in cat], dtype=torch.long)
        order = order[torch.sort(prio[order], stable=True).indices]
    order = order[inside[order]]
    return prefix_by_weight(order, weights, budget)


def _layer_window(
    index: UnitIndex, inside: torch.Tensor, key: torch.Tensor, weights: torch.Tensor, budget: float
) -> torch.Tensor:
    per_layer = index.unflatten(torch.arange(key.numel()))
    layer_of = torch.empty(key.numel(), dtype=torch.long)
    for (i, _), idx in per_layer.items():
        layer_of[idx] = i
    allowed = [i for i in range(index.num_layers) if bool(inside[layer_of == i].all())]
    layer_w = float(weights[layer_of == 0].sum())
    width = int(budget * (1 + 1e-12) // layer_w)
    if width == 0:
        raise SsahError(
            f"freeze.budget={budget / float(weights.sum()):.4g} is smaller than one block "
            f"({layer_w / float(weights.sum()):.4g} of unit parameters); selection=layers "
            "freezes whole blocks."
        )
    score = [  # parameter-weighted mean of the key over the block's units
        float((key * weights)[layer_of == i].sum() / weights[layer_of == i].sum())
        for i in range(index.num_layers)
    ]
    best, best_start = -float("inf"), None
    for start in range(index.num_layers - width + 1):
        window = list(range(start, start + width))
        if all(i in allowed for i in window):
            s = sum(score[i] for i in window) / width
            if s > best:
                best, best_start = s, start
    if best_start is None:
        raise SsahError(f"freeze.layers leaves no run of {width} blocks for selection=layers.")
    return (layer_of >= best_start) & (layer_of < best_start + width)


def random_matched(index: UnitIndex, target: Masks, spec: FreezeConfig) -> Masks:
    """As many units per kind (and per layer if asked) as `target`, drawn at random (seeded)."""
    gen = torch.Generator().manual_seed(int(spec.seed))
    inside = index.unflatten(in_layers(index, spec))
    out = empty_masks(index)
    for kind in KINDS:
        if spec.match_per_layer:
            groups = [[i] for i in range(index.num_layers)]
        else:
            groups = [list(range(index.num_layers))]
        for layers in groups:
            n = sum(int(target[(i, kind)].sum()) for i in layers)
            pool = torch.cat([inside[(i, kind)] for i in layers]).nonzero().flatten()
            if n > pool.numel():
                raise SsahError(
                    f"freeze.match selects {n} {kind} units, only {pool.numel()} exist."
                )
            if kind == "attn" and spec.match_kv_groups and index.group_size > 1:
                flat = _heads_keeping_kv_groups(index, target, inside, layers, gen)
            else:
                pick = pool[torch.randperm(pool.numel(), generator=gen)[:n]]
                flat = torch.zeros(sum(index.num_units(kind) for _ in layers), dtype=torch.bool)
                flat[pick] = True
            for j, i in enumerate(layers):
                m = index.num_units(kind)
                out[(i, kind)] = flat[j * m : (j + 1) * m].clone()
    return out


def _heads_keeping_kv_groups(
    index: UnitIndex, target: Masks, inside: Masks, layers: list[int], gen: torch.Generator
) -> torch.Tensor:
    """Random heads over `layers` (flat) with as many heads as `target` AND as many whole
    key/value groups (all query heads of a k/v head frozen, so its k/v rows freeze too):
    the frozen parameters then match exactly, k_proj/v_proj included. Whole groups are drawn
    first, then single heads in a random order, skipping any that would complete a group."""
    g = index.group_size
    tgt = torch.cat([target[(i, "attn")] for i in layers]).view(-1, g)
    ins = torch.cat([inside[(i, "attn")] for i in layers]).view(-1, g)
    n_full, n_heads = int(tgt.all(1).sum()), int(tgt.sum())
    cand = ins.all(1).nonzero().flatten()
    if n_full > cand.numel():
        raise SsahError(
            f"freeze.match freezes {n_full} whole k/v groups, only {cand.numel()} exist."
        )
    out = torch.zeros_like(ins)
    out[cand[torch.randperm(cand.numel(), generator=gen)[:n_full]]] = True
    per_group = out.sum(1)
    free = (ins & ~out).flatten().nonzero().flatten()
    flat, need = out.flatten().clone(), n_heads - n_full * g
    for pos in free[torch.randperm(free.numel(), generator=gen)].tolist():
        if need == 0:
            break
        if int(per_group[pos // g]) + 1 < g:
            flat[pos] = True
            per_group[pos // g] += 1
            need -= 1
    if need:
        raise SsahError(
            f"freeze.match_kv_groups: no room for {need} more heads without completing a k/v group."
        )
    return flat


def count_by_kind(index: UnitIndex, masks: Masks) -> dict[str, float]:
    """Frozen units and unit parameters of each kind (the split a random control matches)."""
    out: dict[str, float] = {}
    for kind in KINDS:
        n = sum(int(m.sum()) for (_, k), m in masks.items() if k == kind)
        out[f"units/{kind}"] = float(n)
        out[f"unit_params/{kind}"] = n * index.unit_weight(kind)
    return out


def count(index: UnitIndex, masks: Masks) -> dict[str, float]:
    """Units frozen (count and parameter-weighted share)."""
    units = sum(int(m.sum()) for m in masks.values())
    weight = sum(float(m.sum()) * index.unit_weight(k) for (_, k), m in masks.items())
    return {
        "units": float(units),
        "units_fraction": units / index.total_units(),
        "unit_params_fraction": weight / index.total_params(),
    }
