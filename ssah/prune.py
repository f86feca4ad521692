"""`python -m ssah.prune`: zero a set of units, then measure attack success and utility.

The set is a category of the units file (ru, scu, ucu, cu), `topk` units by any score,
`random` units with the parameter count of a category (or ratio), or nothing (`dense`).
Zeroing follows contract 5 (gate/up rows and down column of a neuron; q rows and o columns
of a head; k/v rows of a key/value head when all of its query heads go). Optional FLAP
bias compensation gives o_proj/down_proj a bias equal to the removed channels' mean input
(response tokens of a calibration set; the safety set and the mean of per-sample means by
default, as the authors' code takes it) times their weights, computed before zeroing. `topk` ranks by the z-scores the
categories use (scoring.head_z). `compensation_for: utility` (the Table 1 preset) measures
attacks on the plainly zeroed model and utility with the biases, as the authors did (their ASR
came from vLLM on a saved Llama checkpoint, which has no o_proj/down_proj bias slots); `all`
measures both with them (then evaluate with backend=hf, which keeps the biases).
Paper Table 1: `python -m ssah.prune -m target=dense,scu,ucu,ru,random`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssah.cli import run_dir, stage
from ssah.errors import SsahError
from ssah.metrics import write_metrics
from ssah.models import load_for_stage
from ssah.scoring.calibration import batches, build_set
from ssah.scoring.categories import unit_z
from ssah.scoring.leak import check_disjoint
from ssah.scoring.outputs import units_for, write_outputs
from ssah.scoring.pipeline import ScoringSettings
from ssah.scoring.pruning import (
    PruneConfig,
    choose,
    compensation_biases,
    pruned_fractions,
    zero_units,
)
from ssah.scoring.stats import collect, sample_means
from ssah.scoring.unitsfile import model_digest, read_units
from ssah.units import UnitIndex


# ---- the stage -----------------------------------------------------------------------------
def _mean_inputs(
    cfg: DictConfig, model: nn.Module, tok: Any, index: UnitIndex, which: str, how: str = "sample"
):
    """Mean input of every down_proj / o_proj channel on calibration set `which`."""
    settings = ScoringSettings.from_cfg(cfg.scoring)
    ccfg = settings.calibration
    cache = cfg.paths.score_cache if cfg.get("cache", True) else None
    s = build_set(which, getattr(ccfg, which), ccfg, model, tok, cache, model_digest(model))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    bs = batches(s.rows, ccfg.batch_size, pad, ccfg.sort_by_length)
    if how == "sample":
        return sample_means(model, index, bs)
    stats = collect(model, index, bs)
    return {k: st.mean for k, st in stats.stats.items()}


SAFETY_KEYS = ("harmful", "benign", "suites", "paper_protocol", "judges")


def _evaluate_split(
    model: nn.Module, tok: Any, eval_cfg: DictConfig, index: UnitIndex, biases, out_dir: Path
) -> dict[str, float]:
    """The paper's Table 1: attacks (and over-refusal) on the plainly zeroed model, then the
    compensation biases added and utility measured; one records.jsonl for both."""
    from ssah.eval.suite import evaluate_model, plot_prefill_curve, write_records

    ecfg = OmegaConf.to_container(eval_cfg, resolve=True)
    safety = evaluate_model(model, tok, {**ecfg, "utility": None})
    zero_units(model, index, {}, biases)
    util = evaluate_model(
        model, tok, {**{k: v for k, v in ecfg.items() if k not in SAFETY_KEYS}, "suites": {}}
    )
    write_records(safety.records + util.records, out_dir)
    plot_prefill_curve(safety.prefill_curve, Path(out_dir) / "prefill_depth.png")
    t = safety.metrics["time/eval_s"] + util.metrics["time/eval_s"]
    return {**safety.metrics, **util.metrics, "time/eval_s": t}


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    """Choose units, zero them, evaluate; write metrics.json (and the units file used)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = (
        "target",
        "topk",
        "random",
        "bias_compensation",
        "compensation_data",
        "compensation_mean",
        "compensation_for",
    )
    pcfg = PruneConfig(
        **{
            k: OmegaConf.to_container(cfg[k], resolve=True)
            if isinstance(cfg[k], DictConfig)
            else cfg[k]
            for k in keys
            if k in cfg
        }
    )
    settings = ScoringSettings.from_cfg(cfg.scoring)  # bad options fail before any loading
    model, tok, mcfg = load_for_stage(cfg)
    if cfg.get("units"):
        index = UnitIndex(model, overrides=settings.modules)
        uf = read_units(cfg.units, index)
        uf.check_model(model_digest(model), cfg.units)
        if not uf.category:
            raise SsahError(f"{cfg.units!r} has no categories (a scores-only cache entry).")
        category, zs, zu = uf.category, uf.safety_z, uf.utility_z
        if not zs or not zu:  # a units file from before z was stored: its own rule
            hz, ddof = uf.metadata.get("head_z", "per_head"), settings.zscore_ddof
            zs = unit_z(index, uf.safety, uf.channel_safety or None, hz, ddof)
            zu = unit_z(index, uf.utility, uf.channel_utility or None, hz, ddof)
    else:
        if cfg.get("check_calibration", True) and cfg.get("evaluate", True):
            check_disjoint(cfg.scoring, cfg.eval)  # scoring on test prompts is a leak
        units = units_for(cfg, model, tok, mcfg.name_or_path, settings)
        write_outputs(
            units, out_dir, f"{Path(mcfg.name_or_path).name} - {units.metadata['scorer']}"
        )
        index, category, zs, zu = units.index, units.category, units.safety_z, units.utility_z
    masks = choose(pcfg, index, category, zs, zu)
    metrics: dict[str, float] = pruned_fractions(index, masks)
    biases = None
    if pcfg.bias_compensation and pcfg.target != "dense":
        means = _mean_inputs(cfg, model, tok, index, pcfg.compensation_data, pcfg.compensation_mean)
        biases = compensation_biases(model, index, masks, means)
    split = biases is not None and pcfg.compensation_for == "utility"
    zero_units(model, index, masks, None if split else biases)
    metrics["prune/bias_compensation"] = float(biases is not None)
    metrics["prune/bias_compensation/asr"] = float(biases is not None and not split)
    metrics["prune/bias_compensation/utility"] = float(biases is not None)
    metrics["time/prune_s"] = time.perf_counter() - t0
    if cfg.get("evaluate", True):
        if split:
            metrics.update(_evaluate_split(model, tok, cfg.eval, index, biases, out_dir))
        else:
            from ssah.eval.suite import run_suite

            metrics.update(run_suite(model, tok, cfg.eval, out_dir=out_dir))
    write_metrics(out_dir, metrics)
    if cfg.get("logger") is not None:
        from ssah.tracking import finish, make_logger

        finish(make_logger(cfg, out_dir), metrics)
    return metrics


@stage("prune")
def main(cfg: DictConfig) -> dict[str, float]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
