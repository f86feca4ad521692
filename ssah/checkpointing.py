"""Resumable fine-tuning: a killed or requeued job, re-run in the same job dir, continues from
`<job dir>/checkpoints/last.ckpt` (weights, optimizer, scheduler, loop counters, the data
sampler's position and the freeze callback's counters), so it ends where an uninterrupted run
would have. Sweeps re-run a killed job in its own pinned dir (skip_completed skips finished
ones); a single run resumes when given the same `hydra.run.dir`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ssah.errors import SsahError

LAST = "last.ckpt"


@dataclass
class CheckpointConfig:
    """conf/train.yaml `checkpoint:`."""

    every_n_steps: int = 0  # 0: off; n: last.ckpt every n optimizer steps (overwritten)
    resume: bool = True  # continue from <dir>/last.ckpt when it exists
    keep: bool = False  # keep the checkpoint after the job finished (metrics.json written)
    dirname: str = "checkpoints"

    def __post_init__(self) -> None:
        if self.every_n_steps < 0:
            raise SsahError(
                f"checkpoint.every_n_steps={self.every_n_steps} must be >= 0 (0 turns it off)."
            )

    @property
    def enabled(self) -> bool:
        return self.every_n_steps > 0

    def dir(self, out_dir: Path) -> Path:
        return Path(out_dir) / self.dirname


class ResumeInfo(pl.Callback):
    """Records the optimizer step training (re)started from, after Lightning restored it."""

    def __init__(self) -> None:
        self.start_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step


def callbacks(cfg: CheckpointConfig, out_dir: Path) -> list[pl.Callback]:
    """A ModelCheckpoint that keeps only last.ckpt (one copy: a 7B state is ~100 GB)."""
    if not cfg.enabled:
        return []
    ckpt = ModelCheckpoint(
        dirpath=str(cfg.dir(out_dir)),
        every_n_train_steps=cfg.every_n_steps,
        save_top_k=0,
        save_last=True,
        save_on_train_epoch_end=False,
        enable_version_counter=False,  # overwrite last.ckpt, never last-v1.ckpt
    )
    return [ckpt]


def resume_path(cfg: CheckpointConfig, out_dir: Path) -> Path | None:
    """The checkpoint to continue from, or None for a fresh start."""
    path = cfg.dir(out_dir) / LAST
    if not (cfg.resume and path.exists()):
        return None
    check_readable(path)
    print(f"[ssah] resuming from {path}", file=sys.stderr)
    return path


def check_readable(path: Path) -> None:
    """Refuse, in one line, a checkpoint a kill left half-written, before any training starts.

    A file is opened memory-mapped (tensors are not read); an FSDP checkpoint dir needs its
    .metadata, which torch.distributed.checkpoint writes last."""
    fix = "delete it (a kill while saving leaves it broken) or set checkpoint.resume=false"
    if path.is_dir():
        if not (path / ".metadata").is_file():
            raise SsahError(f"cannot resume from {path}: it has no .metadata; {fix}.")
        return
    try:
        torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SsahError(f"cannot resume from {path} ({cause}); {fix}.") from None


def cleanup(cfg: CheckpointConfig, out_dir: Path) -> None:
    """After metrics.json exists the job is complete: drop its checkpoint unless kept."""
    if cfg.enabled and not cfg.keep:
        shutil.rmtree(cfg.dir(out_dir), ignore_errors=True)


def trainer_overrides(cfg: CheckpointConfig) -> dict[str, Any]:
    """Lightning refuses a ModelCheckpoint callback when enable_checkpointing is false."""
    return {"enable_checkpointing": True} if cfg.enabled else {}
