"""The fine-tuning recipe behind `python -m ssah.train`, read top to bottom: model and
tokenizer, the freeze spec, units (scored here when freeze.units=null), the freeze plan, fit,
evaluate, save. A library function so that world recipes (the smollm2 alignment) run exactly
the train stage's code without importing a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssah import checkpointing
from ssah import freeze as freezing
from ssah.checkpointing import CheckpointConfig
from ssah.data.datamodule import TaskConfig
from ssah.metrics import write_metrics
from ssah.models import ModelConfig, load_model, load_tokenizer, prepare_for_training
from ssah.module import OptimConfig
from ssah.tracking import finish, make_logger
from ssah.training import StepProgress, check_precision, fit


def plain(node: DictConfig) -> dict[str, Any]:
    """A config group as a plain dict (resolved)."""
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def finetune(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Fine-tune, evaluate on rank zero, write metrics (and the model)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    mcfg = ModelConfig.from_cfg(cfg.model)
    optim = OptimConfig(**plain(cfg.optim))
    ckpt = CheckpointConfig(**plain(cfg.checkpoint))  # validated before any model work
    check_precision(plain(cfg.trainer))
    resume = checkpointing.resume_path(ckpt, out_dir)  # a broken last.ckpt is refused here
    spec = freezing.FreezeConfig.from_cfg(cfg.freeze)
    tok, model = load_tokenizer(mcfg), prepare_for_training(load_model(mcfg), mcfg)
    task = TaskConfig(**plain(cfg.task))
    units = None
    if spec.needs_units and not spec.units:  # freeze.units=null: score the starting model here
        scoring = cfg.freeze.scoring if cfg.freeze.get("scoring") is not None else cfg.scoring
        units, _ = freezing.score_units(
            model, tok, scoring, mcfg.name_or_path, cfg.paths.score_cache, out_dir,
            write=freezing.rank() == 0,
        )  # fmt: skip
    fplan = freezing.plan(spec, model, out_dir, units, trainer=plain(cfg.trainer))
    model = fplan.model  # the same model, or wrapped in PEFT adapters for freeze=lora
    logger = make_logger(cfg, out_dir, resume=resume is not None)
    trainer_cfg = freezing.scale_schedule(plain(cfg.trainer), fplan.steps_multiplier)
    started = checkpointing.ResumeInfo()
    trainer: pl.Trainer = instantiate(
        {**trainer_cfg, **checkpointing.trainer_overrides(ckpt)},
        logger=logger or False,
        callbacks=[
            *fplan.callbacks,
            *checkpointing.callbacks(ckpt, out_dir),
            started,
            StepProgress(),
        ],
        default_root_dir=str(out_dir),
    )
    model.train()
    metrics: dict[str, Any] = fit(
        model, tok, task, optim, trainer, ckpt_path=resume,
        head_on_labels_only=mcfg.head_on_labels_only,
    )  # fmt: skip
    metrics["train/resumed_from_step"] = float(started.start_step)
    # FSDP2: every rank helps gather the full weights; rank 0 continues with a plain model.
    model = freezing.gather_full(model, lambda: load_model(mcfg), trainer.global_rank)
    model = fplan.after_fit(model)  # rewind / LoRA merge / final check of frozen slices
    model.eval()
    metrics.update(fplan.metrics)
    if not trainer.is_global_zero:
        return metrics
    if cfg.evaluate:
        from ssah.eval.suite import run_suite

        metrics.update(run_suite(model, tok, cfg.eval, out_dir=out_dir))
    if cfg.save_model:
        model.save_pretrained(out_dir / "model", safe_serialization=True)
        tok.save_pretrained(out_dir / "model")
    write_metrics(out_dir, metrics)  # last: its presence marks the job complete
    checkpointing.cleanup(ckpt, out_dir)
    finish(logger, metrics)
    return metrics


def evaluate_saved(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The evaluation `finetune` runs after training (cfg.eval), on the model it saved in
    `out_dir/model` (save_model=true): the same weights in the same dtype on the CPU, greedy
    answers, so the same numbers. A world build trains with evaluate=false, then evaluates
    here; an evaluation that failed is run again without training again."""
    from dataclasses import replace

    from ssah.eval.suite import run_suite

    local = {"name_or_path": str(out_dir / "model"), "revision": None}  # no hub revision
    saved = replace(ModelConfig.from_cfg(cfg.model), **local)
    tok, model = load_tokenizer(saved), load_model(saved).eval()
    return run_suite(model, tok, cfg.eval, out_dir=out_dir)
