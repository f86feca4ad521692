"""`python -m ssah.transfer a=PATH b=PATH`: category transition matrix of two units files
(paper Figs. 5-6), globally and per layer; tables, heatmap and metrics.json.

The matrices live in ssah.analysis.transfer.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ssah.analysis.transfer import transfer_metrics, transition_matrix, write_outputs
from ssah.cli import run_dir, stage
from ssah.errors import SsahError
from ssah.metrics import write_metrics


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Transition matrix of cfg.a -> cfg.b; tables, heatmap and metrics.json in out_dir."""
    if not cfg.get("a") or not cfg.get("b"):
        raise SsahError(
            "transfer needs two units files: python -m ssah.transfer "
            "a=PATH/units.safetensors b=PATH/units.safetensors"
        )
    name = cfg.get("name") or None
    labels = (str(cfg.labels.a), str(cfg.labels.b))
    result = transition_matrix(cfg.a, cfg.b)
    paths = write_outputs(result, out_dir, name, labels)
    metrics = transfer_metrics(result, name)
    write_metrics(out_dir, metrics)
    if cfg.get("logger") is not None:
        from ssah.tracking import finish, log_image, make_logger

        logger = make_logger(cfg, out_dir)
        log_image(logger, f"transfer/{name or 'matrix'}", paths["png"])
        finish(logger, metrics)
    return metrics


main = stage("transfer")(lambda cfg: run(cfg, run_dir()))

if __name__ == "__main__":
    main()
