"""LightningDataModule for chat fine-tuning: template, prompt-masked labels, seeded split."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ssah.data.chat import collate, encode_example
from ssah.data.records import load_records
from ssah.data.sampler import ResumableSampler
from ssah.errors import SsahError


@dataclass
class TaskConfig:
    """conf/task/*.yaml: a prompt/response dataset for fine-tuning."""

    name: str
    source: str
    split: str = "train"
    columns: dict[str, str] | None = None  # source column -> prompt/response
    subset: str | None = None
    system_prompt: str | None = None
    limit: int | None = None
    max_length: int = 512
    batch_size: int = 8
    val_fraction: float = 0.05
    seed: int = 0
    kind: str = "benign"  # benign | harmful | alignment: for reports
    # true: training batches of similar lengths (ssah/data/sampler.py), far less padding, so
    # faster steps; off by default because it changes which examples share a batch (results).
    group_by_length: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The harmful-ratio attack (Vaccine, Lisa, Booster): a share `mix_ratio` of the training
    # split (after the held-out split is taken from `source` alone) is replaced by records of
    # `mix_source`, drawn with `seed`; the held-out split stays pure `source`.
    mix_source: str | None = None
    mix_columns: dict[str, str] | None = None
    mix_ratio: float = 0.0
    heldout_eval: bool = False  # after training: mean response-token loss on the val split

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix_ratio < 1.0:
            raise SsahError(f"task.mix_ratio={self.mix_ratio} must be in [0, 1).")
        if self.mix_ratio > 0 and not self.mix_source:
            raise SsahError(
                f"task.mix_ratio={self.mix_ratio} needs task.mix_source (the records mixed in)."
            )
        if self.heldout_eval and not self.val_fraction > 0:
            raise SsahError(
                "task.heldout_eval=true needs task.val_fraction > 0 (the held-out split)."
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise SsahError(f"task.val_fraction={self.val_fraction} must be in [0, 1).")
        if self.batch_size < 1:
            raise SsahError(f"task.batch_size={self.batch_size} must be >= 1.")


class ChatDataModule(pl.LightningDataModule):
    """Encodes every record once; train/val split is a seeded permutation."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, task: TaskConfig) -> None:
        super().__init__()
        self.tok = tokenizer
        self.task = task
        self.train_rows: list[dict[str, list[int]]] = []
        self.val_rows: list[dict[str, list[int]]] = []
        self.sampler: ResumableSampler | None = None
        self._pending: dict[str, Any] | None = None  # sampler state from a checkpoint
        self.summary: dict[str, float] = {}  # task/* metrics of the harmful-ratio task

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows:
            return
        t = self.task
        rows = self._encode(t.source, t.columns, t.limit)
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(t.seed))
        n_val = int(round(len(rows) * t.val_fraction))
        self.val_rows = [rows[i] for i in order[:n_val].tolist()]
        self.train_rows = [rows[i] for i in order[n_val:].tolist()]
        if t.mix_source:
            self._mix()

    def _encode(
        self, source: str, columns: dict[str, str] | None, limit: int | None
    ) -> list[dict[str, list[int]]]:
        t = self.task
        ds = load_records(source, t.split, columns, limit, t.subset)
        for col in ("prompt", "response"):
            if col not in ds.column_names:
                raise SsahError(
                    f"task {t.name!r}: data has no {col!r} column (has {ds.column_names}); "
                    "map it with task.columns."
                )
        return [
            encode_example(
                self.tok,
                r["prompt"],
                r["response"],
                r.get("system") or t.system_prompt,
                t.max_length,
            )
            for r in ds
        ]

    def _mix(self) -> None:
        """Replace round(mix_ratio * n) training rows (the last of the seeded order) by
        mix_source rows (a seeded draw), so the training split keeps its size."""
        t = self.task
        n = len(self.train_rows)
        k = int(round(t.mix_ratio * n))
        if k:
            pool = self._encode(t.mix_source, t.mix_columns, None)  # type: ignore[arg-type]
            if k > len(pool):
                raise SsahError(
                    f"task.mix_ratio={t.mix_ratio} of {n} training rows needs {k} records of "
                    f"{t.mix_source!r}, which has {len(pool)}; lower the ratio."
                )
            pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(t.seed + 1))
            self.train_rows = self.train_rows[: n - k] + [pool[i] for i in pick[:k].tolist()]
        self.summary = {
            "task/mix_ratio": float(t.mix_ratio),
            "task/mixed_rows": float(k),
            "task/train_rows": float(n),
            "task/heldout_rows": float(len(self.val_rows)),
        }

    def _loader(
        self, rows: list[dict[str, list[int]]], sampler: ResumableSampler | None
    ) -> DataLoader:
        return DataLoader(
            rows,
            batch_size=self.task.batch_size,
            sampler=sampler,
            collate_fn=partial(collate, pad_id=self.tok.pad_token_id),
            drop_last=sampler is not None and len(sampler) >= self.task.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        lengths = (
            [len(r["input_ids"]) for r in self.train_rows] if self.task.group_by_length else None
        )
        self.sampler = ResumableSampler(
            len(self.train_rows), self.task.seed, lengths, self.task.batch_size
        )
        if self._pending is not None:
            self.sampler.load_state_dict(self._pending)
            self._pending = None
        return self._loader(self.train_rows, self.sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, None)

    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning checkpoints: where the training data order stands."""
        return {"sampler": self.sampler.state_dict()} if self.sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restored before the loaders exist: applied when train_dataloader builds the sampler."""
        self._pending = state.get("sampler")
