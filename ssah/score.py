"""`python -m ssah.score`: score every unit of a model and sort it into SCU/UCU/CU/RU.

Writes into the run dir: units.safetensors (design contract 4), units_per_layer.png,
summary.json (shares per category, overall and per layer) and metrics.json. Scores are
cached under paths.score_cache by content, so a second call or a sweep job reuses them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ssah.cli import run_dir, stage
from ssah.metrics import write_metrics
from ssah.models import load_for_stage
from ssah.scoring.outputs import UNITS_FILE, units_for, write_outputs  # noqa: F401 (UNITS_FILE)
from ssah.scoring.pipeline import ScoringSettings


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
    model, tok, mcfg = load_for_stage(cfg)
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
