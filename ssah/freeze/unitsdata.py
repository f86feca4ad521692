"""The units a freeze spec selects from: a units file read and checked against the model, or
units scored here on the model being fine-tuned (freeze.units=null), as one `UnitsData`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ssah.errors import SsahError
from ssah.freeze import masks as M
from ssah.units import ModuleNames, UnitIndex


@dataclass
class UnitsData:
    category: M.Masks
    safety: M.Masks | None
    utility: M.Masks | None
    metadata: dict[str, str]
    source: str

    @property
    def names(self) -> ModuleNames | None:
        """The module names the units file was written for (None: the default Llama names)."""
        return _names(self.metadata)


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


def score_units(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    scoring: Any,
    model_name: str,
    cache_dir: str | Path,
    out_dir: Path,
    write: bool = True,
) -> tuple[UnitsData, UnitIndex]:
    """freeze.units=null: score the model about to be fine-tuned (`scoring`: a composed
    conf/scoring node), through the score cache; units.safetensors lands in out_dir."""
    from ssah.scoring.categories import ZScores
    from ssah.scoring.pipeline import ScoringSettings, compute_units

    device = next(model.parameters()).device
    if torch.cuda.is_available():
        model.cuda()
    try:
        units = compute_units(
            model, tok, ScoringSettings.from_cfg(scoring), model_name, cache_dir=cache_dir
        )
    finally:
        model.to(device)
    path = Path(out_dir) / "units.safetensors"
    if write:
        units.write(path)
    data = UnitsData(
        units.category,
        ZScores(units.safety_z),
        ZScores(units.utility_z),
        units.metadata,
        str(path),
    )
    return data, units.index
