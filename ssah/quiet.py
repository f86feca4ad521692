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
    # Lightning, on any machine with SLURM installed, for every run not started by srun (local
    # runs, the plan's local rows); jobs that SLURM starts are detected and need no hint
    r"(?s).*The `srun` command is available on your system but is not used",
    # Lightning on every resume mid-epoch: ssah's sampler is resumable (its state is in the
    # checkpoint; tests/test_resume.py checks the data order), the DataLoader itself need not be
    r"(?s).*resuming from a checkpoint that ended before the epoch ended",
)
# Lightning's rank-zero info lines that advertise or state the obvious on CPU.
LIGHTNING_LINES = re.compile(
    r"^(💡 Tip:|TPU available|HPU available|IPU available|GPU available: False|`Trainer.fit` stopped)"
)


# transformers' notice on loading a Llama tokenizer from a GGUF file (the smollm2 world's
# conversion), which itself says it can be ignored in that case.
TRANSFORMERS_LINES = re.compile(r"^You are using the default legacy behaviour")
# Lightning in every job SLURM starts: its own SIGUSR1 requeue handler (ssah's jobs requeue
# through submitit's SIGUSR2 or a plain requeue, and resume from checkpoints/last.ckpt).
SLURM_LINES = re.compile(r"^SLURM auto-requeueing enabled")
LINE_FILTERS = {
    "pytorch_lightning.trainer.connectors.signal_connector": SLURM_LINES,
    "lightning.pytorch.trainer.connectors.signal_connector": SLURM_LINES,
    "pytorch_lightning.utilities.rank_zero": LIGHTNING_LINES,
    "lightning.pytorch.utilities.rank_zero": LIGHTNING_LINES,
    "transformers.models.llama.tokenization_llama_fast": TRANSFORMERS_LINES,
    "transformers.models.llama.tokenization_llama": TRANSFORMERS_LINES,
}


class _DropLines(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(str(record.getMessage()))


def silence_third_party() -> None:
    """Install the filters once per process (idempotent)."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, pattern in LINE_FILTERS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in log.filters):
            log.addFilter(_DropLines(pattern))
