"""`python -m ssah.train`: fine-tune `model` on `task` (optionally freezing units), evaluate,
write metrics.json, and with save_model=true the fine-tuned model in `model/`.
The recipe itself is ssah.finetune."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ssah.cli import run_dir, stage
from ssah.finetune import finetune as run


@stage("train")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
