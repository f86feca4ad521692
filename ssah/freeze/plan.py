"""The freeze plan: from a validated spec, the model and its units to everything the train
stage needs: Trainer callbacks, the model to train (LoRA wraps it), a steps multiplier,
metrics, freeze_mask.safetensors (contract 5, rank 0) and `after_fit` (rewind / LoRA merge /
final check of the frozen values against fingerprints taken before training)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssah.errors import SsahError
from ssah.freeze import baselines
from ssah.freeze import masks as M
from ssah.freeze.callback import ExactFreeze, FreezeDriftError, digest
from ssah.freeze.slices import FrozenSlices, expand, values, write_mask_file
from ssah.freeze.spec import FreezeConfig
from ssah.freeze.unitsdata import UnitsData, read_units_for
from ssah.fsdp import is_sharded
from ssah.units import UnitIndex

log = logging.getLogger(__name__)
MASK_FILE = "freeze_mask.safetensors"


@dataclass
class FreezePlan:
    """Callbacks for the Trainer, the model to train, metrics, a hook to run after fit."""

    callbacks: list[Any] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    steps_multiplier: float = 1.0
    model: nn.Module | None = None
    finish: Callable[[nn.Module], nn.Module] | None = None

    def after_fit(self, model: nn.Module) -> nn.Module:
        """Rewind copies original values back, LoRA merges, freeze re-checks; returns the model."""
        return self.finish(model) if self.finish is not None else model


def scale_schedule(trainer_cfg: dict[str, Any], multiplier: float) -> dict[str, Any]:
    """Train `multiplier` times longer: max_steps when set, else max_epochs."""
    if multiplier == 1.0:
        return trainer_cfg
    steps = trainer_cfg.get("max_steps")
    epochs = trainer_cfg.get("max_epochs")
    if steps is not None and steps > 0:
        trainer_cfg["max_steps"] = int(round(steps * multiplier))
    elif epochs is not None and epochs > 0:
        trainer_cfg["max_epochs"] = int(round(epochs * multiplier))
    else:
        raise SsahError(
            f"freeze.epochs_multiplier={multiplier} needs trainer.max_steps or trainer.max_epochs > 0."
        )
    return trainer_cfg


def rank() -> int:
    """Global rank as Lightning sees it (0 in the launching process)."""
    from pytorch_lightning.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# ---- refusals ---------------------------------------------------------------------------------
PRECISION_DTYPES = {
    "16-true": torch.float16,
    "bf16-true": torch.bfloat16,
    "32-true": torch.float32,
    "32": torch.float32,
    "64-true": torch.float64,
}


def strategy_name(trainer: Any) -> str:
    """trainer.strategy as a name: a string, or a `_target_` mapping's class path."""
    s = (trainer or {}).get("strategy", "")
    if isinstance(s, dict) or hasattr(s, "get"):
        return str(s.get("_target_", ""))
    return str(s)


def refuse_unsupported(spec: FreezeConfig, model: nn.Module, trainer: Any = None) -> None:
    """Combinations that cannot be exact (or are untested) end here with a clear line.
    `trainer`: the trainer config mapping (strategy, precision), or None for a plain loop."""
    strategy = strategy_name(trainer)
    if "deepspeed" in strategy.lower():
        raise SsahError(
            f"trainer.strategy={strategy} (DeepSpeed) is not supported: deepspeed is not "
            "installed here and ZeRO keeps gradients outside .grad, so exact freezing is not "
            "enforced under it; use trainer=fsdp (FSDP2) or trainer=ddp."
        )
    if spec.mode == "lora" and "ModelParallel" in strategy:
        raise SsahError("freeze=lora with trainer=fsdp is not supported; use trainer=ddp for LoRA.")
    precision = str(trainer.get("precision", "32-true")) if trainer else ""
    want = PRECISION_DTYPES.get(precision)
    have = next(model.parameters()).dtype
    if spec.mode in ("freeze", "random") and want is not None and want != have:
        raise SsahError(
            f"trainer.precision={precision} casts every weight of this {have} model, so frozen "
            f"units cannot stay bit-identical; load the model in that dtype (model.dtype) or use "
            "a -mixed precision."
        )


# ---- the plan ---------------------------------------------------------------------------------
def fingerprints(model: nn.Module, frozen: FrozenSlices) -> dict[str, str]:
    """Hash of every frozen slice, for the end-to-end check after training (no copies kept)."""
    params = dict(model.named_parameters())
    out = {}
    with torch.no_grad():
        for name, (dim, idx) in frozen.partial.items():
            out[name] = digest(params[name].index_select(dim, idx.to(params[name].device)))
        for name in frozen.whole:
            out[name] = digest(params[name])
    return out


def check_fingerprints(model: nn.Module, frozen: FrozenSlices, want: dict[str, str]) -> None:
    got = fingerprints(model, frozen)
    bad = sorted(n for n in want if got.get(n) != want[n])
    if bad:
        raise FreezeDriftError(
            f"after training, frozen slices of {bad[:3]}{' ...' if len(bad) > 3 else ''} differ "
            "from the starting model; the freezing guarantee is broken, please report this run."
        )


def _spec_meta(spec: FreezeConfig, units: UnitsData | None) -> dict[str, str]:
    d = asdict(spec)
    d.pop("scoring", None)
    if spec.budget is None and spec.selection == "safety":  # category specs: meta as before
        d.pop("budget"), d.pop("selection")
    if not spec.match_kv_groups:
        d.pop("match_kv_groups")
    meta = {"spec": spec.spec, "mode": spec.mode, "freeze_config": json.dumps(d, sort_keys=True)}
    if units is not None:
        meta["units"] = units.source
        for k in ("model", "model_hash", "scorer"):
            if k in units.metadata:
                meta[k] = units.metadata[k]
    return meta


def plan(
    spec: FreezeConfig | Any,
    model: nn.Module,
    out_dir: Path,
    units: UnitsData | None = None,
    trainer: Any = None,
) -> FreezePlan:
    """Everything the train stage needs to fine-tune `model` under freeze `spec`.

    `units`: scored by the caller (freeze.units=null), else read from `spec.units` here.
    `trainer`: the trainer config (strategy, precision) for the combinations refused.
    """
    if not isinstance(spec, FreezeConfig):
        spec = FreezeConfig.from_cfg(spec)
    refuse_unsupported(spec, model, trainer)
    out_dir = Path(out_dir)
    fp = FreezePlan(model=model, steps_multiplier=spec.epochs_multiplier)
    fp.metrics["freeze/epochs_multiplier"] = spec.epochs_multiplier
    if spec.needs_units:
        if units is None and not spec.units:
            raise SsahError(
                "freeze.units=null: this spec needs units; score them first (the train stage "
                "does) or give freeze.units=<units.safetensors>."
            )
        if units is None:
            units, index = read_units_for(spec.units, model, spec.check_model)
        else:
            index = UnitIndex(model, names=units.names)
    else:
        try:
            index = UnitIndex(model)
        except SsahError:  # nothing frozen: an architecture without units still trains
            fp.metrics.update(
                {"freeze/frozen_units_fraction": 0.0, "freeze/frozen_params_fraction": 0.0}
            )
            return fp
    unit_masks = _masks(spec, index, units)
    counts = M.count(index, unit_masks)
    frozen = expand(
        index, unit_masks, model, spec.outside_units if spec.mode != "none" else "train"
    )
    fp.metrics.update(
        {
            "freeze/frozen_units_fraction": counts["units_fraction"],
            "freeze/frozen_unit_params_fraction": counts["unit_params_fraction"],
            "freeze/frozen_units": counts["units"],
            "freeze/frozen_params_fraction": frozen.params_fraction,
            "freeze/frozen_params": float(frozen.frozen_elements),
            # what the optimizer moves: rewind trains everything (and copies back afterwards)
            "freeze/trained_params_fraction": (
                1.0 if spec.mode in ("none", "rewind") else 1.0 - frozen.params_fraction
            ),
        }
    )
    if spec.budget is not None or spec.mode == "random":  # the split a random control matches
        fp.metrics.update(
            {f"freeze/frozen_{k}": v for k, v in M.count_by_kind(index, unit_masks).items()}
        )
    log.info(
        "freeze %s (%s): %d units frozen, %.2f%% of unit parameters, %.2f%% of all parameters",
        spec.spec, spec.mode, int(counts["units"]), 100 * counts["unit_params_fraction"],
        100 * frozen.params_fraction,
    )  # fmt: skip
    mask_meta = _spec_meta(spec, units)
    mask_digest = digest(torch.cat([m for _, m in sorted(unit_masks.items())]))
    if rank() == 0:
        write_mask_file(out_dir / MASK_FILE, index, unit_masks, mask_meta)
    if spec.mode == "lora":  # after the mask: PEFT replaces the linears the index reads
        fp.model = baselines.wrap_lora(model, spec.lora)
        fp.metrics["lora/trainable_params_fraction"] = baselines.trainable_fraction(fp.model)
        fp.metrics["freeze/trained_params_fraction"] = fp.metrics["lora/trainable_params_fraction"]
        fp.finish = baselines.merge_lora
        return fp
    if frozen.is_empty() or spec.mode == "none":
        return fp
    if spec.mode == "rewind":
        original = values(model, frozen)
        fp.finish = lambda m: baselines.rewind(m, frozen, original)
        return fp
    for name in frozen.whole:  # freeze / random: whole parameters never reach the optimizer
        dict(model.named_parameters())[name].requires_grad_(False)
    want = fingerprints(model, frozen)
    callback = ExactFreeze(model, frozen, spec.verify_every_n_steps, fp.metrics, mask_digest)
    fp.callbacks.append(callback)

    def finish(m: nn.Module) -> nn.Module:
        if not is_sharded(m):  # FSDP ranks != 0 keep their shards (checked by the callback)
            check_fingerprints(m, frozen, want)
            fp.metrics["freeze/final_check"] = 1.0
        fp.metrics["freeze/saved_bytes"] = float(callback.saved_bytes())
        return m

    fp.finish = finish
    return fp


def _masks(spec: FreezeConfig, index: UnitIndex, units: UnitsData | None) -> M.Masks:
    if units is None:
        return M.empty_masks(index)
    ddof = int(units.metadata.get("zscore_ddof", 1))
    if spec.mode == "random":
        target = spec.matched()
        target_masks = M.select(
            index, target, units.category, units.safety, units.utility, units.source, ddof
        )
        return M.random_matched(index, target_masks, spec)
    return M.select(index, spec, units.category, units.safety, units.utility, units.source, ddof)
