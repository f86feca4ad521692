"""`python -m ssah.train`: fine-tune `model` on `task` (optionally freezing units), evaluate,
write metrics.json, and with save_model=true the fine-tuned model in `model/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssah import freeze as freezing
from ssah.cli import run_dir, stage
from ssah.data.datamodule import TaskConfig
from ssah.metrics import write_metrics
from ssah.models import ModelConfig, load_model, load_tokenizer
from ssah.module import OptimConfig
from ssah.tracking import finish, make_logger
from ssah.training import fit


def plain(node: DictConfig) -> dict[str, Any]:
    """A config group as a plain dict (resolved)."""
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Fine-tune, evaluate on rank zero, write metrics (and the model)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    mcfg = ModelConfig(**plain(cfg.model))
    task = TaskConfig(**plain(cfg.task))
    optim = OptimConfig(**plain(cfg.optim))
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    fplan = freezing.plan(cfg.freeze, model, out_dir, cfg)
    logger = make_logger(cfg, out_dir)
    trainer_cfg = plain(cfg.trainer)
    trainer_cfg["max_steps"] = int(round(trainer_cfg["max_steps"] * fplan.steps_multiplier))
    trainer: pl.Trainer = instantiate(
        trainer_cfg, logger=logger or False, callbacks=fplan.callbacks, default_root_dir=str(out_dir)
    )
    model.train()
    metrics: dict[str, Any] = fit(model, tok, task, optim, trainer)
    fplan.after_fit(model)
    model.eval()
    metrics.update(fplan.metrics)
    if not trainer.is_global_zero:
        return metrics
    if cfg.evaluate:
        from ssah.eval.suite import run_suite

        metrics.update(run_suite(model, tok, cfg.eval))
    write_metrics(out_dir, metrics)
    if cfg.save_model:
        model.save_pretrained(out_dir / "model", safe_serialization=True)
        tok.save_pretrained(out_dir / "model")
    finish(logger, metrics)
    return metrics


@stage("train")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
