"""Weights & Biases (or CSV) logging for every stage: config, choices, summary, tables.

W&B runs offline by default (files under the run dir; `wandb sync` later). The summary gets
exactly the keys of metrics.json, and the run is finished at the end of every job so sweeps
never leak a live run into the next job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger

SECRET_HINTS = ("token", "api_key", "apikey", "password", "secret")


def make_logger(cfg: DictConfig, out_dir: Path, resume: bool = False) -> Logger | None:
    """Instantiate cfg.logger (None when the stage runs without one) and log the config.

    `resume`: a job continuing from its checkpoint keeps logging into its earlier W&B run
    (same id) instead of starting a second one."""
    if cfg.get("logger") is None:
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    extra: dict[str, Any] = {}
    previous = previous_run_id(out_dir) if resume else None
    if previous and "WandbLogger" in str(cfg.logger.get("_target_", "")):
        extra = {"id": previous, "resume": "allow"}
    logger = instantiate(cfg.logger, save_dir=str(out_dir), **extra)
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)  # Lightning passes None, which W&B warns is deprecated
    logger.log_hyperparams(_loggable_config(cfg))
    return logger


def _loggable_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config plus Hydra's chosen options, with anything secret-looking dropped."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    out = _scrub(plain) if isinstance(plain, dict) else {}
    try:
        hc = HydraConfig.get()
        out["hydra_choices"] = dict(hc.runtime.choices)
        out["hydra_overrides"] = list(hc.overrides.task)  # read back by ssah.report wandb:
    except ValueError:  # not inside a Hydra app (demo in-process, tests)
        pass
    return out


def _scrub(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {
            k: _scrub(v)
            for k, v in tree.items()
            if not any(h in str(k).lower() for h in SECRET_HINTS)
        }
    if isinstance(tree, list):
        return [_scrub(v) for v in tree]
    return tree


def log_table(
    logger: Logger | None, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """A W&B table (no-op for other loggers)."""
    if isinstance(logger, WandbLogger):
        logger.log_table(key=name, columns=list(columns), data=[list(r) for r in rows])


def log_image(logger: Logger | None, name: str, path: Path) -> None:
    """A PNG into W&B (no-op for other loggers)."""
    if isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[str(path)])


def finish(logger: Logger | None, metrics: Mapping[str, Any]) -> None:
    """Put the final metrics into the run summary and close the run."""
    if logger is None:
        return
    from ssah.threads import run_env

    metrics = {**run_env(), **metrics}  # the same env/ keys as metrics.json
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        run.summary.update(dict(metrics))
        run.finish()
    else:
        logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        logger.finalize("success")
        logger.save()


def read_offline_summary(run_file: Path) -> dict[str, Any]:
    """Final summary of an offline W&B run (`run-*.wandb`), without syncing it.

    W&B keeps an offline run's summary inside its binary log (LevelDB-style 32 KiB blocks of
    protobuf `Record`s) until `wandb sync`; tests and reports read it here to check it
    carries the keys of metrics.json.
    """
    import json

    from wandb.proto import wandb_internal_pb2

    summary: dict[str, Any] = {}
    for data in _log_records(Path(run_file).read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
    return summary


def _log_records(data: bytes, header: int = 7, block: int = 32768) -> Iterator[bytes]:
    """Records of a W&B log: 7-byte chunk headers (crc, length, type) in 32 KiB blocks."""
    pos, parts = header, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block tail too small for a header: zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            parts = chunk
        elif kind == 3:  # middle
            parts += chunk
        elif kind == 4:  # last
            yield parts + chunk


def previous_run_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run already in run_dir (offline-run-<time>-<id>), if any."""
    dirs = sorted(Path(run_dir).glob("wandb/*-run-*-*"))
    return dirs[-1].name.rsplit("-", 1)[-1] if dirs else None


def offline_runs(run_dir: Path) -> list[Path]:
    """The offline W&B run files under a stage's run dir."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
