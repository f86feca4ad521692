"""One fine-tuning loop for every caller: the toy build, the train stage and sweeps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.datamodule import ChatDataModule, TaskConfig
from ssah.module import CausalLMModule, OptimConfig


def fit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: TaskConfig,
    optim: OptimConfig,
    trainer: pl.Trainer,
    ckpt_path: str | Path | None = None,
) -> dict[str, float]:
    """Train `model` in place on `task` (continuing from `ckpt_path` when given); returns
    final losses and wall time."""
    module = CausalLMModule(model, optim)
    data = ChatDataModule(tokenizer, task)
    t0 = time.perf_counter()
    trainer.fit(
        module,
        datamodule=data,
        ckpt_path=str(ckpt_path) if ckpt_path else None,
        weights_only=True,  # a checkpoint is tensors and plain values: never unpickle objects
    )
    out: dict[str, float] = {"time/train_s": time.perf_counter() - t0}
    for key in ("train/loss", "val/loss"):
        if key in trainer.callback_metrics:
            out[key] = float(trainer.callback_metrics[key])
    out["train/steps"] = float(trainer.global_step)
    return out


def quiet_trainer(max_steps: int, **kwargs: Any) -> pl.Trainer:
    """A CPU trainer with no logger, checkpoints or progress bars (toy build, tests)."""
    defaults: dict[str, Any] = dict(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return pl.Trainer(**{**defaults, **kwargs})
