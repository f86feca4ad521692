"""What a scoring run leaves behind, shared by the score and prune stages: units through the
score cache, then units.safetensors (contract 4), summary.json and the per-layer plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.io import atomic_write_text
from ssah.scoring.categories import summary
from ssah.scoring.pipeline import ScoringSettings, Units, compute_units
from ssah.scoring.plot import plot_layers

UNITS_FILE = "units.safetensors"


def units_for(
    cfg: DictConfig,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    model_name: str,
    settings: ScoringSettings | None = None,
) -> Units:
    """Units of `model` under cfg.scoring, through the score cache (or cfg.scores_from)."""
    cache = cfg.paths.score_cache if cfg.get("cache", True) else None
    return compute_units(
        model,
        tok,
        settings or ScoringSettings.from_cfg(cfg.scoring),
        model_name,
        cache_dir=cache,
        scores_from=cfg.get("scores_from"),
    )


def write_outputs(units: Units, out_dir: Path, title: str) -> dict[str, Any]:
    """units.safetensors, summary.json, the plot; returns the summary."""
    units.write(out_dir / UNITS_FILE)
    summ = summary(units.index, units.assignment)
    atomic_write_text(out_dir / "summary.json", json.dumps(summ, indent=2) + "\n")
    plot_layers(summ, out_dir / "units_per_layer.png", title)
    return summ
