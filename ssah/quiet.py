"""Keep third-party noise out of the terminal: a user should see ssah's progress and summary,
not a vendor's tips, deprecations inside libraries, or warnings about settings ssah chose on
purpose. Each filter names the one message it drops; everything else still prints."""

from __future__ import annotations

import logging
import re
import warnings

# Warnings raised inside libraries, about their own internals or settings ssah chose.
WARNINGS = (
    r"(?s).*validated against ConfigStore schema",  # Hydra plugin launcher configs
    r"(?s).*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning on torch 2.13
    r"(?s).*is smaller than the logging interval",  # short runs log at the end anyway
    r"(?s).*(val_dataloader|validation_step).*",  # val_fraction=0: no val loader, on purpose
    r"(?s).*Total length of .*DataLoader.* across ranks is zero",
    r"(?s).*does not have many workers which may be a bottleneck",  # workers: a config choice
)
# Lightning's rank-zero info lines that advertise or state the obvious on CPU.
LIGHTNING_LINES = re.compile(r"^(💡 Tip:|TPU available|HPU available|IPU available)")


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not LIGHTNING_LINES.match(str(record.getMessage()))


def silence_third_party() -> None:
    """Install the filters once per process (idempotent)."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in log.filters):
            log.addFilter(_DropLines())
