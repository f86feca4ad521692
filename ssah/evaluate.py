"""`python -m ssah.evaluate`: evaluate one checkpoint with the eval suite (conf/eval/).

Writes into the run dir: records.jsonl (prompt, response, verdict per generation; the W&B
table), prefill_depth.png, and last metrics.json, so a run that failed part-way never leaves
a metrics.json that looks complete. Bad input (missing or gated dataset, judge model that
cannot load) stops with one `error:` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from ssah.cli import run_dir, stage
from ssah.defence import DefenceConfig, defended
from ssah.errors import SsahError
from ssah.eval.generators import redacted
from ssah.eval.suite import evaluate_model, plot_prefill_curve, prepare, write_records
from ssah.metrics import write_metrics
from ssah.models import ModelConfig, load_model, load_tokenizer, resolve_device
from ssah.tracking import finish, log_image, log_table, make_logger

TABLE_FIRST = ("kind", "suite", "prompt", "prefill", "response")


def table(records: list[dict[str, Any]], limit: int | None = None) -> tuple[list[str], list[list]]:
    """(columns, rows) of the eval table: fixed text columns, then every verdict column."""
    extra = sorted({k for r in records for k in r} - set(TABLE_FIRST))
    cols = [*TABLE_FIRST, *extra]
    rows = [[r.get(c) for c in cols] for r in records[: limit if limit else None]]
    return cols, rows


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Load `cfg.model`, evaluate with `cfg.eval`, write records, plot, metrics."""
    pl.seed_everything(int(cfg.get("seed", 0)), verbose=False)
    mcfg = ModelConfig.from_cfg(cfg.model)
    device = resolve_device(str(cfg.get("device", "auto")))
    dcfg = _defence(cfg)  # checked before anything loads
    tok = load_tokenizer(mcfg)
    plan = prepare(tok, cfg.eval)  # data and judges first: bad input fails before the model loads
    model = load_model(mcfg).to(device)
    logger = make_logger(cfg, out_dir)
    source = _source_model(dcfg, mcfg, device)
    with defended(model, tok, dcfg, source=source) as defence:
        del source
        res = evaluate_model(model, tok, cfg.eval, model_path=mcfg.name_or_path, plan=plan)
    res.metrics.update(defence.metrics(res.metrics))  # defence/<...>: contract 6
    defence.annotate(res.records)  # defence/triggered per prompt (outcomes.jsonl keeps it)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(res.records, out_dir)
    png = plot_prefill_curve(res.prefill_curve, out_dir / "prefill_depth.png")
    hide = bool((cfg.eval.get("records") or {}).get("redact", False))
    cols, rows = table(redacted(res.records, hide), cfg.get("table_rows"))  # W&B: no text
    log_table(logger, "eval/records", cols, rows)
    if png is not None:
        log_image(logger, "eval/prefill_depth", png)
    write_metrics(out_dir, res.metrics)
    finish(logger, res.metrics)
    _print_summary(res.metrics)
    return res.metrics


def _defence(cfg: DictConfig) -> DefenceConfig:
    """conf/defence/ (default none); a defence acts inside HF generate, so it needs backend hf."""
    dcfg = DefenceConfig.from_cfg(cfg.get("defence"))
    backend = (cfg.eval.get("generation") or {}).get("backend", "hf")
    if dcfg.active and backend != "hf":
        raise SsahError(
            f"defence={dcfg.name} acts inside HF generate but eval.generation.backend={backend}; "
            "set eval.generation.backend=hf."
        )
    return dcfg


def _source_model(dcfg: DefenceConfig, mcfg: ModelConfig, device: Any) -> Any:
    """The checkpoint the defence is calibrated on when it is not the evaluated one."""
    src = dcfg.calibration.source_model
    if not dcfg.active or not src or dcfg.calibration.file:
        return None
    from dataclasses import replace

    return load_model(replace(mcfg, name_or_path=str(src))).to(device)


def _print_summary(m: dict[str, float]) -> None:
    for k in sorted(m):
        if k.startswith(("safety/asr/avg", "safety/over_refusal", "safety/harmfulness")) or k in (
            "defence/trigger_rate",
            "utility/accuracy",
            "utility/ppl",
            "utility/mc_accuracy",
        ):
            print(f"{k}: {m[k]:.4g}")


@stage("evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
