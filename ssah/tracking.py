"""Weights & Biases (or CSV) logging for every stage: config, choices, summary, tables.

W&B runs offline by default (files under the run dir; `wandb sync` later). The summary gets
exactly the keys of metrics.json, and the run is finished at the end of every job so sweeps
never leak a live run into the next job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger

SECRET_HINTS = ("token", "api_key", "apikey", "password", "secret")


def make_logger(cfg: DictConfig, out_dir: Path) -> Logger | None:
    """Instantiate cfg.logger (None when the stage runs without one) and log the config."""
    if cfg.get("logger") is None:
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = instantiate(cfg.logger, save_dir=str(out_dir))
    logger.log_hyperparams(_loggable_config(cfg))
    return logger


def _loggable_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config plus Hydra's chosen options, with anything secret-looking dropped."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    out = _scrub(plain) if isinstance(plain, dict) else {}
    try:
        out["hydra_choices"] = dict(HydraConfig.get().runtime.choices)
    except ValueError:  # not inside a Hydra app (demo in-process, tests)
        pass
    return out


def _scrub(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _scrub(v) for k, v in tree.items() if not any(h in str(k).lower() for h in SECRET_HINTS)}
    if isinstance(tree, list):
        return [_scrub(v) for v in tree]
    return tree


def log_table(logger: Logger | None, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A W&B table (no-op for other loggers)."""
    if isinstance(logger, WandbLogger):
        logger.log_table(key=name, columns=list(columns), data=[list(r) for r in rows])


def log_image(logger: Logger | None, name: str, path: Path) -> None:
    """A PNG into W&B (no-op for other loggers)."""
    if isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[str(path)])


def finish(logger: Logger | None, metrics: Mapping[str, Any]) -> None:
    """Put the final metrics into the run summary and close the run."""
    if logger is None:
        return
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        run.summary.update(dict(metrics))
        run.finish()
    else:
        logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        logger.finalize("success")
        logger.save()
