"""Freezing units while fine-tuning (paper Tables 2-4): specs -> masks -> exact callback.

`plan(cfg.freeze, model, out_dir, cfg)` is all the train stage calls: it validates the spec,
reads (or scores) the units, writes freeze_mask.safetensors (contract 5, rank 0), marks whole
frozen parameters, and returns a FreezePlan with the Trainer callbacks, the model to train
(LoRA wraps it), a steps multiplier, metrics, and `after_fit` (rewind / LoRA merge / final
check of the frozen values against their fingerprints taken before training).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssah.errors import SsahError
from ssah.freeze import baselines
from ssah.freeze import masks as M
from ssah.freeze.callback import ExactFreeze, FreezeDriftError, digest
from ssah.freeze.slices import FrozenSlices, expand, values, write_mask_file
from ssah.freeze.spec import FreezeConfig
from ssah.fsdp import gather_full, is_sharded
from ssah.units import ModuleNames, UnitIndex

log = logging.getLogger(__name__)
MASK_FILE = "freeze_mask.safetensors"
DEFAULT_SCORING = "wifv"  # conf/scoring option used for units=null when nothing else is set
__all__ = [
    "FreezeConfig",
    "FreezeDriftError",
    "FreezePlan",
    "gather_full",
    "plan",
    "scale_schedule",
]


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


def strategy_name(root: DictConfig | None) -> str:
    if root is None or root.get("trainer") is None:
        return ""
    s = root.trainer.get("strategy", "")
    if OmegaConf.is_config(s):
        return str(s.get("_target_", ""))
    return str(s)


def refuse_unsupported(spec: FreezeConfig, root: DictConfig | None, model: nn.Module) -> None:
    """Combinations that cannot be exact (or are untested) end here with a clear line."""
    strategy = strategy_name(root)
    if "deepspeed" in strategy.lower():
        raise SsahError(
            f"trainer.strategy={strategy} (DeepSpeed) is not supported: deepspeed is not "
            "installed here and ZeRO keeps gradients outside .grad, so exact freezing is not "
            "enforced under it; use trainer=fsdp (FSDP2) or trainer=ddp."
        )
    if spec.mode == "lora" and "ModelParallel" in strategy:
        raise SsahError("freeze=lora with trainer=fsdp is not supported; use trainer=ddp for LoRA.")
    precision = (
        str(root.trainer.get("precision", "32-true"))
        if root is not None and "trainer" in root
        else ""
    )
    want = PRECISION_DTYPES.get(precision)
    have = next(model.parameters()).dtype
    if spec.mode in ("freeze", "random") and want is not None and want != have:
        raise SsahError(
            f"trainer.precision={precision} casts every weight of this {have} model, so frozen "
            f"units cannot stay bit-identical; load the model in that dtype (model.dtype) or use "
            "a -mixed precision."
        )


# ---- units ------------------------------------------------------------------------------------
@dataclass
class UnitsData:
    category: M.Masks
    safety: M.Masks | None
    utility: M.Masks | None
    metadata: dict[str, str]
    source: str


def _names(meta: dict[str, str]) -> ModuleNames | None:
    raw = meta.get("module_names")
    if not raw:
        return None
    try:
        return ModuleNames(**json.loads(raw))
    except (TypeError, ValueError):
        return None


def read_units_for(path: str, model: nn.Module, check_model: bool) -> tuple[UnitsData, UnitIndex]:
    """A units file, validated against `model` (shapes, categories, model hash)."""
    from ssah.scoring.categories import ZScores
    from ssah.scoring.unitsfile import model_digest, read_units

    p = Path(path).expanduser()
    if not p.is_file():
        raise SsahError(
            f"freeze.units={path!r} does not exist; run `python -m ssah.score` "
            "and pass its units.safetensors, or freeze.units=null to score here."
        )
    uf = read_units(p)
    index = UnitIndex(model, names=_names(uf.metadata))
    for i in range(index.num_layers):
        for k in ("mlp", "attn"):
            for field_, src in (("safety_score", uf.safety), ("utility_score", uf.utility)):
                t = src.get((i, k))
                if t is not None and t.numel() != index.num_units(k):
                    raise SsahError(
                        f"freeze.units={path!r} does not fit this model: layers.{i}.{k}.{field_} "
                        f"has {t.numel()} entries, the model has {index.num_units(k)} "
                        f"{'neurons' if k == 'mlp' else 'heads'}; it was made for another model."
                    )
    extra = sorted({i for i, _ in uf.category} - set(range(index.num_layers)))
    if extra:
        raise SsahError(
            f"freeze.units={path!r} has layers {extra}; the model has "
            f"{index.num_layers}: it was made for another model."
        )
    M.check_categories(index, uf.category, str(path))
    if check_model:
        uf.check_model(model_digest(model), path)
    safety = uf.safety if len(uf.safety) == len(uf.category) else None
    utility = uf.utility if len(uf.utility) == len(uf.category) else None
    if uf.safety_z and uf.utility_z:  # rank by the z the categories used (scoring.head_z)
        safety, utility = ZScores(uf.safety_z), ZScores(uf.utility_z)
    return UnitsData(uf.category, safety, utility, uf.metadata, str(p)), index


def score_units_for(
    spec: FreezeConfig, model: nn.Module, root: DictConfig | None, out_dir: Path
) -> tuple[UnitsData, UnitIndex]:
    """units=null: score the model being fine-tuned with the scoring config (score cache)."""
    from ssah.models import ModelConfig, load_tokenizer
    from ssah.scoring.categories import ZScores
    from ssah.scoring.pipeline import ScoringSettings, compute_units

    if root is None:
        raise SsahError("freeze.units=null needs the stage config; give freeze.units=<path>.")
    scoring = scoring_config(spec, root)
    mcfg = ModelConfig(**OmegaConf.to_container(root.model, resolve=True))  # type: ignore[arg-type]
    tok = load_tokenizer(mcfg)
    device = next(model.parameters()).device
    if torch.cuda.is_available():
        model.cuda()
    try:
        units = compute_units(
            model,
            tok,
            ScoringSettings.from_cfg(scoring),
            mcfg.name_or_path,
            cache_dir=root.paths.score_cache,
        )
    finally:
        model.to(device)
    if rank() == 0:
        units.write(out_dir / "units.safetensors")
    data = UnitsData(
        units.category,
        ZScores(units.safety_z),
        ZScores(units.utility_z),
        units.metadata,
        str(out_dir / "units.safetensors"),
    )
    return data, units.index


def scoring_config(spec: FreezeConfig, root: DictConfig) -> DictConfig:
    """freeze.scoring (a conf/scoring name or mapping), else the stage's `scoring`, else wifv."""
    from omegaconf import open_dict

    from ssah.freeze.spec import load_group_yaml

    choice = spec.scoring
    if choice is None and root.get("scoring") is not None:
        return root.scoring
    if choice is None or isinstance(choice, str):
        choice = load_group_yaml(
            _conf_dir(), "scoring", choice or DEFAULT_SCORING, "freeze.scoring"
        )
    tmp = root.copy()  # resolve ${toy:...} and ${paths...} inside the stage config
    with open_dict(tmp):
        tmp.freeze_scoring = choice
    return tmp.freeze_scoring


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
    meta = {"spec": spec.spec, "mode": spec.mode, "freeze_config": json.dumps(d, sort_keys=True)}
    if units is not None:
        meta["units"] = units.source
        for k in ("model", "model_hash", "scorer"):
            if k in units.metadata:
                meta[k] = units.metadata[k]
    return meta


def plan(
    cfg: DictConfig | dict[str, Any] | None,
    model: nn.Module,
    out_dir: Path,
    root_cfg: DictConfig | None = None,
) -> FreezePlan:
    """Everything the train stage needs to fine-tune `model` under freeze spec `cfg`."""
    spec = FreezeConfig.from_cfg(cfg)
    refuse_unsupported(spec, root_cfg, model)
    out_dir = Path(out_dir)
    fp = FreezePlan(model=model, steps_multiplier=spec.epochs_multiplier)
    fp.metrics["freeze/epochs_multiplier"] = spec.epochs_multiplier
    units: UnitsData | None = None
    if spec.needs_units:
        if spec.units:
            units, index = read_units_for(spec.units, model, spec.check_model)
        else:
            units, index = score_units_for(spec, model, root_cfg, out_dir)
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
        target = spec.matched(_conf_dir())
        target_masks = M.select(
            index, target, units.category, units.safety, units.utility, units.source, ddof
        )
        return M.random_matched(index, target_masks, spec)
    return M.select(index, spec, units.category, units.safety, units.utility, units.source, ddof)


def _conf_dir() -> str:
    from ssah.cli import CONF_DIR

    return CONF_DIR
