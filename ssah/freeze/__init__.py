"""Freezing (placeholder until the freezing work lands): `plan` returns what train needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn


@dataclass
class FreezePlan:
    """Callbacks for the Trainer, metrics for metrics.json, a hook to run after fit."""

    callbacks: list[Any] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    steps_multiplier: float = 1.0

    def after_fit(self, model: nn.Module) -> None:
        """E.g. rewind copies original values back; nothing by default."""


def plan(cfg: DictConfig, model: nn.Module, out_dir: Path) -> FreezePlan:
    """Freeze nothing."""
    return FreezePlan(metrics={"freeze/frozen_units_fraction": 0.0, "freeze/frozen_params_fraction": 0.0})
