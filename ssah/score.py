"""`python -m ssah.score`: score every unit of a model and sort it into SCU/UCU/CU/RU.

Writes into the run dir: units.safetensors (design contract 4), units_per_layer.png,
summary.json (shares per category, overall and per layer) and metrics.json. Scores are
cached under paths.score_cache by content, so a second call or a sweep job reuses them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.cli import run_dir, stage
from ssah.metrics import atomic_write_text, write_metrics
from ssah.models import ModelConfig, load_model, load_tokenizer, resolve_device
from ssah.scoring.categories import summary
from ssah.scoring.pipeline import ScoringSettings, Units, compute_units
from ssah.scoring.plot import plot_layers

UNITS_FILE = "units.safetensors"


def load(cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelConfig]:
    """cfg.model -> model on cfg.device, tokenizer, model config."""
    mcfg = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    return model.to(resolve_device(str(cfg.get("device", "auto")))), tok, mcfg


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


def flat_metrics(summ: dict[str, Any], info: dict[str, float]) -> dict[str, float]:
    """score/... keys of metrics.json."""
    m: dict[str, float] = {}
    for group in ("units_share", "params_share", "selected_params_share"):
        for k, v in summ[group].items():
            m[f"score/{group}/{k}"] = v
    for k, v in summ["counts"].items():
        m[f"score/count/{k}"] = float(v)
    for k, v in info.items():
        m[k if k.startswith("time/") else f"score/{k}"] = v
    return m


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Load, score (or reuse), categorise, write artifacts and metrics."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    settings = ScoringSettings.from_cfg(cfg.scoring)  # bad options fail before any loading
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tok, mcfg = load(cfg)
    units = units_for(cfg, model, tok, mcfg.name_or_path, settings)
    title = f"{Path(mcfg.name_or_path).name} - {units.metadata['scorer']}"
    summ = write_outputs(units, out_dir, title)
    metrics = flat_metrics(summ, units.info)
    metrics["time/score_stage_s"] = time.perf_counter() - t0
    write_metrics(out_dir, metrics)
    _log(cfg, out_dir, metrics)
    return metrics


def _log(cfg: DictConfig, out_dir: Path, metrics: dict[str, float]) -> None:
    if cfg.get("logger") is None:
        return
    from ssah.tracking import finish, log_image, make_logger

    logger = make_logger(cfg, out_dir)
    log_image(logger, "units_per_layer", out_dir / "units_per_layer.png")
    finish(logger, metrics)


@stage("score")
def main(cfg: DictConfig) -> dict[str, float]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
