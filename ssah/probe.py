"""`python -m ssah.probe`: the reasoning-direction probe (paper Figs. 2-4) and direction
tracking during generation, on an aligned and a reference model; PNG/CSV/metrics.json.

The analyses live in ssah.analysis.probe and ssah.analysis.direction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig

from ssah.analysis import direction as direction_mod
from ssah.analysis.probe import (
    ROLES,
    DistanceSpec,
    ProbeResult,
    compare,
    load_prompts,
    plot_distances,
    probe_model,
    summarize,
    write_csv,
)
from ssah.cli import run_dir, stage
from ssah.errors import SsahError
from ssah.metrics import write_metrics
from ssah.models import ModelConfig, load_model, load_tokenizer, resolve_device


# ---- stage ----------------------------------------------------------------------------------
def load_pair(cfg: DictConfig, role: str, device: torch.device):  # noqa: ANN201
    """Tokenizer and eval-mode model of cfg.<role> on `device`."""
    mcfg = ModelConfig.from_cfg(cfg[role])
    tok = load_tokenizer(mcfg)
    return tok, load_model(mcfg).to(device)


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """The probe (and direction tracking) on both models; writes PNG/CSV/metrics.json."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {role: str(cfg.labels[role]) for role in ROLES}
    if labels["aligned"] == labels["reference"]:
        raise SsahError(f"labels.aligned and labels.reference are both {labels['aligned']!r}.")
    device = resolve_device(str(cfg.device))
    dcfg = cfg.distance
    spec = None
    if dcfg.enabled:
        spec = DistanceSpec(
            benign=dcfg.benign,
            malicious=dcfg.malicious,
            ks=list(dcfg.ks),
            position=dcfg.position,
            layers=None if dcfg.layers is None else list(dcfg.layers),
        )
        records = load_prompts(
            str(dcfg.data.source),
            dcfg.data.prompt_field,
            dcfg.data.limit,
            dcfg.data.get("split", "train"),
        )
    tracked = direction_mod.tracked_roles(cfg) if cfg.direction.enabled else []
    metrics: dict[str, float] = {}
    results: dict[str, ProbeResult] = {}
    for role in ROLES:
        if spec is None and role not in tracked:
            continue
        tok, model = load_pair(cfg, role, device)
        if spec is not None:
            results[labels[role]] = probe_model(
                model, tok, records, spec, cfg.system_prompt, int(cfg.batch_size)
            )
            metrics.update(summarize(results[labels[role]], labels[role]))
        if role in tracked:
            metrics.update(direction_mod.track_model(model, tok, cfg, labels[role], out_dir))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if results:
        gaps = {lab: metrics[f"probe/{lab}/gap_mean"] for lab in results}
        metrics.update(compare(gaps, labels))
        metrics["probe/n_queries"] = float(len(records))
        write_csv(results, out_dir / "probe_distances.csv")
        plot_distances(results, out_dir / "probe_distances.png")
    metrics["time/probe_s"] = time.perf_counter() - t0
    metrics = {
        k: (float(v) if v is not None and math.isfinite(v) else v) for k, v in metrics.items()
    }
    write_metrics(out_dir, metrics)
    log_to_tracker(cfg, metrics, out_dir)
    return metrics


def log_to_tracker(cfg: DictConfig, metrics: Mapping[str, float], out_dir: Path) -> None:
    """Summary keys, figures and the distance table to cfg.logger (W&B offline by default)."""
    from ssah.tracking import finish, log_image, log_table, make_logger

    logger = make_logger(cfg, out_dir)
    if logger is None:
        return
    for png in sorted(out_dir.glob("*.png")):
        log_image(logger, f"probe/{png.stem}", png)
    table = out_dir / "probe_distances.csv"
    if table.is_file():
        head, *rows = [line.split(",") for line in table.read_text().splitlines()]
        log_table(logger, "probe/distances", head, rows)
    finish(logger, metrics)


main = stage("probe")(lambda cfg: run(cfg, run_dir()))

if __name__ == "__main__":
    main()
