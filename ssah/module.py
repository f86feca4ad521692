"""The LightningModule that wraps a Hugging Face causal LM: loss, logging, optimizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import nn
from transformers import PreTrainedModel, get_scheduler

from ssah.data.chat import IGNORE
from ssah.errors import SsahError

NO_DECAY = ("bias", "norm", "embed_tokens")


@dataclass
class OptimConfig:
    """conf/optim/*.yaml: AdamW with warmup and a schedule."""

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    scheduler: str = "cosine"  # any transformers.get_scheduler name
    decay_norms_and_biases: bool = False
    # true: torch's fused AdamW kernel (one pass over each parameter instead of a dozen:
    # ~0.6 s less per step for 135M parameters on one CPU thread, ssah/bench/README.md). Off by
    # default: its float rounding differs from the default in the last bits, so results move.
    fused: bool = False

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise SsahError(f"optim.lr={self.lr} must be > 0.")
        if self.weight_decay < 0:
            raise SsahError(f"optim.weight_decay={self.weight_decay} must be >= 0.")
        if self.warmup_steps < 0:
            raise SsahError(f"optim.warmup_steps={self.warmup_steps} must be >= 0.")
        self.betas = tuple(self.betas)  # type: ignore[assignment]


def labelled_loss(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The causal LM loss with the LM head run only where a label is (not on prompt or padding).

    Why: Hugging Face's forward projects every position onto the vocabulary and then ignores
    the prompt's; with a 49k vocabulary that head and its log-softmax are a fifth of a small
    model's step. Same mean over labelled tokens as the model's own loss (float32 logits)."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask)[0]
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return nn.functional.cross_entropy(logits.float(), target[keep])


def check_plain_head(model: PreTrainedModel) -> None:
    """labelled_loss reproduces the model's loss only for a plain linear head."""
    c = model.config
    odd = [k for k in ("final_logit_softcapping", "logit_scale") if getattr(c, k, None)]
    if odd or not isinstance(model.get_output_embeddings(), nn.Linear):
        raise SsahError(
            f"model.head_on_labels_only=true: {type(model).__name__} has a head that is not a "
            f"plain linear layer ({odd or 'output embeddings'}); set it to false."
        )


class CausalLMModule(pl.LightningModule):
    """Next-token loss on response tokens (labels are -100 on prompt and padding)."""

    def __init__(
        self, model: PreTrainedModel, optim: OptimConfig, head_on_labels_only: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.head_on_labels_only = head_on_labels_only
        if head_on_labels_only:
            check_plain_head(model)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        if self.head_on_labels_only and "labels" in batch:
            return labelled_loss(self.model, **batch)
        return self.model(**batch).loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(**batch)
        if not torch.isfinite(loss):
            raise SsahError(
                f"training loss became {loss.item()} at step {self.global_step}; "
                "lower optim.lr or use trainer.gradient_clip_val."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_model(self) -> None:
        """FSDP2 when the strategy is ModelParallelStrategy (trainer=fsdp); nothing otherwise."""
        from pytorch_lightning.strategies import ModelParallelStrategy

        if self._trainer is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        from ssah.fsdp import shard

        if self.head_on_labels_only:  # it calls the decoder and head apart: FSDP2's root
            raise SsahError(  # hooks (which gather the embeddings) would not run
                "model.head_on_labels_only=true does not work with trainer=fsdp; set it to false."
            )
        mesh = self.device_mesh
        if mesh["tensor_parallel"].size() != 1:
            raise SsahError(
                f"tensor_parallel_size={mesh['tensor_parallel'].size()}: only FSDP2 data "
                "parallelism is supported; set trainer.strategy.tensor_parallel_size=1."
            )
        shard(self.model, mesh["data_parallel"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self(**batch)
        self.log("val/loss", loss, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):  # noqa: ANN201 (Lightning's union type)
        opt = torch.optim.AdamW(
            param_groups(self.model, self.optim),
            lr=self.optim.lr,
            betas=self.optim.betas,
            eps=self.optim.eps,
            **({"fused": True} if self.optim.fused else {}),
        )
        if self.optim.fused:
            # Fused AdamW advertises that it unscales AMP gradients itself, so Lightning refuses
            # gradient clipping with it (clipping needs unscaled gradients). With the flag off,
            # GradScaler (16-mixed) unscales before the step as for any optimizer, and bf16 has
            # no scaling at all: clipping and the freeze callback see true gradients.
            opt._step_supports_amp_scaling = False
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else 10**9
        sched = get_scheduler(
            self.optim.scheduler,
            opt,
            num_warmup_steps=self.optim.warmup_steps,
            num_training_steps=max(total, 1),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def param_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """Trainable parameters split into decayed and non-decayed groups."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = not optim.decay_norms_and_biases and any(k in name for k in NO_DECAY)
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
