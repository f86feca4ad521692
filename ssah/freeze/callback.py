"""The Lightning callback that keeps frozen slices bit-identical.

Zeroed gradients alone do not freeze a weight under AdamW: decoupled weight decay still
moves it. So the callback
1. zeros the frozen gradient slices in `on_before_optimizer_step`, which Lightning calls after
   the closure (backward; DDP all-reduce; FSDP reduce-scatter), after gradient accumulation and
   AMP unscaling, and before gradient clipping (precision.py `_after_closure`), so clipping
   sees only trainable gradients;
2. restores the frozen values from a saved copy right after every optimizer step (a step post
   hook on the torch optimizer, so it fires exactly when a step happens: never for accumulation
   micro-batches, never for a step GradScaler skipped). The copy holds only the frozen entries
   of this rank's shard; index tensors are built once at fit start;
3. verifies every `every` steps (and at the end) that the frozen entries equal the saved copy,
   whose own fingerprint is checked too, and raises FreezeDriftError naming the parameter.
Whole frozen parameters have requires_grad=False (exact, no copy) and are fingerprinted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ssah.errors import SsahError
from ssah.freeze.slices import FrozenSlices
from ssah.fsdp import local, row_range


class FreezeDriftError(SsahError):
    """A frozen slice changed: the freezing guarantee is broken (never expected)."""


def digest(t: torch.Tensor) -> str:
    """Exact content hash of a tensor (its bytes)."""
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(
        t.view(-1).view(torch.uint8).numpy().data if t.numel() else b""
    ).hexdigest()


@dataclass
class Entry:
    """One partially frozen parameter on this rank."""

    name: str
    param: torch.Tensor
    dim: int
    index: torch.Tensor  # local positions along dim, on the parameter's device
    saved: torch.Tensor  # the frozen entries at fit start
    saved_digest: str


class ExactFreeze(pl.Callback):
    """Exact freezing of `frozen` slices of `model` during Trainer.fit."""

    def __init__(
        self,
        model: nn.Module,
        frozen: FrozenSlices,
        every: int,
        metrics: dict[str, float],
        mask_digest: str,
    ) -> None:
        self.model = model
        self.frozen = frozen
        self.every = every
        self.metrics = metrics
        self.mask_digest = mask_digest
        self.entries: list[Entry] = []
        self.whole: list[tuple[str, torch.Tensor, str]] = []
        self.handles: list[Any] = []
        self.steps = 0
        self.checks = 0
        self.max_undone = 0.0

    # ---- set-up --------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_same_mask_everywhere()
        params = dict(self.model.named_parameters())
        self.entries.clear()
        self.whole.clear()
        with torch.no_grad():
            for name, (dim, idx) in self.frozen.partial.items():
                p = params[name]
                mine = local(p)
                if dim == 0:
                    off, n = row_range(p, name)
                    idx = idx[(idx >= off) & (idx < off + n)] - off
                else:
                    row_range(p, name)  # refuses shardings other than dim 0
                if idx.numel() == 0:
                    continue  # this rank owns none of the frozen rows
                idx = idx.to(mine.device)
                saved = mine.index_select(dim, idx).clone()
                self.entries.append(Entry(name, p, dim, idx, saved, digest(saved)))
            for name in self.frozen.whole:
                p = params[name]
                if p.requires_grad:
                    raise FreezeDriftError(
                        f"{name} should be frozen whole but requires grad (did the strategy "
                        "rebuild the parameters?)."
                    )
                self.whole.append((name, p, digest(local(p))))
        for opt in trainer.optimizers:
            self.handles.append(opt.register_step_post_hook(self._after_step))

    def _check_same_mask_everywhere(self) -> None:
        """DDP/FSDP: every rank must freeze the same units."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        got: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(got, self.mask_digest)
        if len(set(got)) != 1:
            raise FreezeDriftError(f"ranks disagree on the freeze mask: {got}")

    # ---- every step ----------------------------------------------------------------------
    def _due(self) -> bool:
        """Before/after step 0, step 1 (the first restore is checked) and every `every` steps."""
        return self.every > 0 and (self.steps == 1 or self.steps % self.every == 0)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        with torch.no_grad():
            for e in self.entries:
                if e.param.grad is not None:
                    local(e.param.grad).index_fill_(e.dim, e.index, 0)
        if self._due():
            self.verify(f"before optimizer step {self.steps}")

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        due = self._due()
        with torch.no_grad():
            for e in self.entries:
                mine = local(e.param)
                if due:
                    moved = (mine.index_select(e.dim, e.index) - e.saved).abs().max()
                    self.max_undone = max(self.max_undone, float(moved))
                mine.index_copy_(e.dim, e.index, e.saved)
        self.steps += 1

    # ---- checks --------------------------------------------------------------------------
    def verify(self, when: str, deep: bool = False) -> None:
        """Frozen entries == saved copy (bitwise); whole ones and, if deep, the copy by hash."""
        with torch.no_grad():
            for e in self.entries:
                now = local(e.param).index_select(e.dim, e.index)
                if not torch.equal(now, e.saved):
                    diff = float((now.float() - e.saved.float()).abs().max())
                    raise FreezeDriftError(
                        f"frozen slice of {e.name} drifted by up to {diff:g} ({when}); "
                        "the freezing guarantee is broken, please report this run."
                    )
                if deep and digest(e.saved) != e.saved_digest:
                    raise FreezeDriftError(f"saved copy of {e.name} changed ({when}).")
            if deep or self.checks % 10 == 0:
                for name, p, want in self.whole:
                    if digest(local(p)) != want:
                        raise FreezeDriftError(f"frozen parameter {name} changed ({when}).")
        self.checks += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.verify("end of training", deep=True)
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.metrics["freeze/verify_checks"] = float(self.checks)
        self.metrics["freeze/restored_steps"] = float(self.steps)
        self.metrics["freeze/max_undone_drift"] = self.max_undone

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    # ---- checkpoints (a resumed run reports counters for the whole run) -------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "checks": self.checks,
            "max_undone": self.max_undone,
            "mask_digest": self.mask_digest,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("mask_digest") != self.mask_digest:
            raise FreezeDriftError(
                "the checkpoint was trained with another freeze mask; resume with the same "
                "freeze settings and units, or start fresh (checkpoint.resume=false)."
            )
        self.steps = int(state_dict["steps"])
        self.checks = int(state_dict["checks"])
        self.max_undone = float(state_dict["max_undone"])

    def saved_bytes(self) -> int:
        """Extra memory held for exactness (the frozen values of this rank's shards)."""
        return sum(e.saved.numel() * e.saved.element_size() for e in self.entries)

    def index_bytes(self) -> int:
        return sum(e.index.numel() * e.index.element_size() for e in self.entries)
