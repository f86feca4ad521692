"""One fine-tuning loop for every caller: the toy build, the train stage and sweeps."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.datamodule import ChatDataModule, TaskConfig
from ssah.errors import SsahError
from ssah.module import CausalLMModule, OptimConfig


def fit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: TaskConfig,
    optim: OptimConfig,
    trainer: pl.Trainer,
    ckpt_path: str | Path | None = None,
    head_on_labels_only: bool = False,
) -> dict[str, float]:
    """Train `model` in place on `task` (continuing from `ckpt_path` when given); returns
    final losses and wall time."""
    module = CausalLMModule(model, optim, head_on_labels_only)
    data = ChatDataModule(tokenizer, task)
    start: dict[str, float] = {}
    if task.heldout_eval:  # what fine-tuning is measured from: the same split, before it
        data.setup("fit")
        start = {"task/heldout_loss_start": heldout_loss(model, data)["task/heldout_loss"]}
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
    out.update(data.summary)
    if task.heldout_eval:
        out.update({**start, **heldout_loss(model, data)})
    return out


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (oneDNN: AVX512-BF16, AMX, or the
    AVX-512 core it converts on). Elsewhere torch falls back to slow reference kernels."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(trainer: dict[str, Any]) -> None:
    """Refuse bfloat16 training on a CPU without native bfloat16 kernels (oneDNN's), where
    torch runs slow reference kernels: the option exists to be faster."""
    precision = str(trainer.get("precision", "32-true"))
    accel = str(trainer.get("accelerator", "cpu"))
    on_cpu = accel == "cpu" or (accel == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith("bf16") and not cpu_bf16_supported():
        raise SsahError(
            f"trainer.precision={precision}: this CPU has no native bfloat16 matmuls (no "
            "AVX-512/AMX for oneDNN), so bfloat16 would run on slow fallback kernels; use "
            "trainer.precision=32-true (trainer=cpu)."
        )


def heldout_loss(model: PreTrainedModel, data: ChatDataModule) -> dict[str, float]:
    """The fine-tuning task's own score: mean loss per response token on the held-out split
    (tokens weighted equally, unlike Lightning's mean of batch means)."""
    import torch

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in data.val_dataloader():
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels.flatten(),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            tokens += int((labels != -100).sum())
    model.train(was_training)
    return {"task/heldout_loss": total / max(tokens, 1), "task/heldout_tokens": float(tokens)}


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


class StepProgress(pl.Callback):
    """One line every `every_s` seconds of training: step, loss, seconds per step, ETA.

    Progress bars are off in configs (they flood logs of sweeps and SLURM jobs); this keeps
    long fine-tuning visible at a rate a log file can take. Rank zero only."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._t0 = self._last = 0.0
        self._step0 = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._last = time.perf_counter()
        self._step0 = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if trainer.is_global_zero and now - self._last >= self.every_s:
            self._last = now
            self._print(trainer, now)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._print(trainer, time.perf_counter(), done=True)

    def _print(self, trainer: pl.Trainer, now: float, done: bool = False) -> None:
        step, total = trainer.global_step, trainer.max_steps
        done_steps = max(step - self._step0, 1)
        per = (now - self._t0) / done_steps
        loss = trainer.callback_metrics.get("train/loss")
        parts = [f"[train] step {step}" + (f"/{total}" if total and total > 0 else "")]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{per:.2f} s/step")
        if done:
            parts.append(f"done in {now - self._t0:.1f} s")
        elif total and total > 0:
            parts.append(f"ETA {per * (total - step) / 60:.1f} min")
        print(", ".join(parts), file=sys.stderr, flush=True)
