"""`python -m ssah.prune`: zero a set of units, then measure attack success and utility.

The set is a category of the units file (ru, scu, ucu, cu), `topk` units by any score,
`random` units with the parameter count of a category (or ratio), or nothing (`dense`).
Zeroing follows contract 5 (gate/up rows and down column of a neuron; q rows and o columns
of a head; k/v rows of a key/value head when all of its query heads go). Optional FLAP
bias compensation gives o_proj/down_proj a bias equal to the removed channels' mean input
(response tokens of a calibration set; the safety set and the mean of per-sample means by
default, as the authors' code takes it) times their weights, computed before zeroing. `topk` ranks by the z-scores the
categories use (scoring.head_z). Evaluation through vLLM may drop these biases (a Llama
checkpoint has no o_proj/down_proj bias slots), so evaluate pruned models with backend=hf.
Paper Table 1: `python -m ssah.prune -m target=dense,scu,ucu,ru,random`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from ssah.cli import run_dir, stage
from ssah.errors import SsahError
from ssah.metrics import write_metrics
from ssah.score import load, units_for, write_outputs
from ssah.scoring.calibration import batches, build_set
from ssah.scoring.categories import CATEGORY_NAMES, select, unit_z
from ssah.scoring.pipeline import ScoringSettings
from ssah.scoring.stats import collect, sample_means
from ssah.scoring.unitsfile import model_digest, read_units
from ssah.units import KINDS, UnitIndex

CATEGORIES = {name.lower(): code for code, name in enumerate(CATEGORY_NAMES)}
TARGETS = ("dense", *CATEGORIES, "topk", "random")
TOPK_KEYS = ("safety", "utility", "diff", "sum")
TABLE1 = ("dense", "scu", "ucu", "ru", "random")
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

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise SsahError(f"target={self.target!r} is unknown; use one of {TARGETS}.")
        if self.compensation_data not in ("safety", "utility"):
            raise SsahError(f"compensation_data={self.compensation_data!r}; use safety or utility.")
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


# ---- the stage -----------------------------------------------------------------------------
def _mean_inputs(
    cfg: DictConfig, model: nn.Module, tok: Any, index: UnitIndex, which: str, how: str = "sample"
):
    """Mean input of every down_proj / o_proj channel on calibration set `which`."""
    settings = ScoringSettings.from_cfg(cfg.scoring)
    ccfg = settings.calibration
    cache = cfg.paths.score_cache if cfg.get("cache", True) else None
    s = build_set(which, getattr(ccfg, which), ccfg, model, tok, cache, model_digest(model))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    bs = batches(s.rows, ccfg.batch_size, pad, ccfg.sort_by_length)
    if how == "sample":
        return sample_means(model, index, bs)
    stats = collect(model, index, bs)
    return {k: st.mean for k, st in stats.stats.items()}


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Choose units, zero them, evaluate; write metrics.json (and the units file used)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = (
        "target",
        "topk",
        "random",
        "bias_compensation",
        "compensation_data",
        "compensation_mean",
    )
    pcfg = PruneConfig(
        **{
            k: OmegaConf.to_container(cfg[k], resolve=True)
            if isinstance(cfg[k], DictConfig)
            else cfg[k]
            for k in keys
            if k in cfg
        }
    )
    settings = ScoringSettings.from_cfg(cfg.scoring)  # bad options fail before any loading
    model, tok, mcfg = load(cfg)
    if cfg.get("units"):
        index = UnitIndex(model, overrides=settings.modules)
        uf = read_units(cfg.units, index)
        uf.check_model(model_digest(model), cfg.units)
        if not uf.category:
            raise SsahError(f"{cfg.units!r} has no categories (a scores-only cache entry).")
        category, zs, zu = uf.category, uf.safety_z, uf.utility_z
        if not zs or not zu:  # a units file from before z was stored: its own rule
            hz, ddof = uf.metadata.get("head_z", "per_head"), settings.zscore_ddof
            zs = unit_z(index, uf.safety, uf.channel_safety or None, hz, ddof)
            zu = unit_z(index, uf.utility, uf.channel_utility or None, hz, ddof)
    else:
        units = units_for(cfg, model, tok, mcfg.name_or_path, settings)
        write_outputs(
            units, out_dir, f"{Path(mcfg.name_or_path).name} - {units.metadata['scorer']}"
        )
        index, category, zs, zu = units.index, units.category, units.safety_z, units.utility_z
    masks = choose(pcfg, index, category, zs, zu)
    metrics: dict[str, float] = pruned_fractions(index, masks)
    biases = None
    if pcfg.bias_compensation and pcfg.target != "dense":
        means = _mean_inputs(cfg, model, tok, index, pcfg.compensation_data, pcfg.compensation_mean)
        biases = compensation_biases(model, index, masks, means)
    zero_units(model, index, masks, biases)
    metrics["prune/bias_compensation"] = float(biases is not None)
    metrics["time/prune_s"] = time.perf_counter() - t0
    if cfg.get("evaluate", True):
        from ssah.eval.suite import run_suite

        metrics.update(run_suite(model, tok, cfg.eval, out_dir=out_dir))
    write_metrics(out_dir, metrics)
    if cfg.get("logger") is not None:
        from ssah.tracking import finish, make_logger

        finish(make_logger(cfg, out_dir), metrics)
    return metrics


# ---- paper Table 1 in miniature ------------------------------------------------------------
def table1(cfg: DictConfig, out_dir: Path, targets: Sequence[str] = TABLE1) -> list[dict[str, Any]]:
    """Run `run` once per target (scores come from the cache after the first)."""
    rows = []
    for t in targets:
        c = copy.deepcopy(cfg)
        with open_dict(c):
            c.target = t
            c.logger = None
        rows.append({"target": t, **run(c, Path(out_dir) / t)})
    return rows


LABELS = {
    "dense": "dense",
    "scu": "- SCU",
    "ucu": "- UCU",
    "ru": "- RU",
    "cu": "- CU",
    "random": "- random (matched)",
    "topk": "- top-k",
}


TABLE_COLUMNS = (
    ("units %", "prune/units_fraction", 100.0),
    ("params %", "prune/params_fraction", 100.0),
    ("ASR %", "safety/asr/direct/{judge}", 100.0),
    ("ASR sys %", "safety/asr/direct_sys/{judge}", 100.0),
    ("ASR avg %", "safety/asr/avg/{judge}", 100.0),
    ("accuracy %", "utility/accuracy", 100.0),
    ("PPL", "utility/ppl", 1.0),
)


def table_data(
    rows: Sequence[dict[str, Any]], judge: str = "keyword"
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows (numbers already scaled; None when not measured), e.g. for W&B."""
    cols = [(n, k.format(judge=judge), sc) for n, k, sc in TABLE_COLUMNS]
    cols = [c for c in cols if any(c[1] in r for r in rows)]
    data = []
    for r in rows:
        vals = [None if r.get(k) is None else float(r[k]) * sc for _, k, sc in cols]
        data.append([LABELS.get(r["target"], r["target"]), *vals])
    return ["model", *(c[0] for c in cols)], data


def table_markdown(rows: Sequence[dict[str, Any]], judge: str = "keyword") -> str:
    """Markdown table: pruned share, ASR with/without the system prompt, utility."""
    columns, data = table_data(rows, judge)
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for row in data:
        cells = [
            "-" if v is None else f"{v:.2f}" if c == "PPL" else f"{v:.1f}"
            for c, v in zip(columns[1:], row[1:], strict=True)
        ]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@stage("prune")
def main(cfg: DictConfig) -> dict[str, float]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
