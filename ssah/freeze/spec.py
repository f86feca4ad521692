"""conf/freeze/*.yaml as one validated dataclass.

A spec says which units stay fixed and how: `mode` freeze (exact, during training), rewind
(train freely, then copy the selected units' original values back; Wei et al. 2024), random
(as many units as another spec, chosen at random: the control), lora (PEFT baseline) or none.
The selection is: every unit whose category is in `categories`, plus the top `extra_ratio` of
`extra_category` ranked by `extra_ranking`, inside `layers`. With `budget` set instead, it is
the first `budget` (share of unit parameters) of the units in `selection`'s order (SELECTIONS);
a random spec matching such a spec draws as many units of each kind (the freeze-budget study).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.units import CATEGORY_CODES

MODES = ("none", "freeze", "rewind", "random", "lora")
# Keys ranking the extra category for "top": z(I_S), z(I_S)-z(I_U), z(I_S)+z(I_U).
RANKINGS = ("z_safety", "z_safety_minus_utility", "z_safety_plus_utility", "z_utility")
OUTSIDE = ("train", "freeze")
# Orders a budget spec freezes in (ssah.freeze.masks.select_budget says how each ranks):
# safety: SCU, then CU, then the rest, each by z(I_S)-z(I_U) (the categories' own key);
# safety_score: z(I_S) alone; utility: z(I_U) alone (the units utility needs most);
# layers: whole contiguous blocks with the highest mean z(I_S)-z(I_U) (SPPFT-like).
SELECTIONS = ("safety", "safety_score", "utility", "layers")
LORA_DEFAULTS: dict[str, Any] = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def _codes(names: list[str], key: str) -> list[int]:
    out = []
    for n in names:
        code = CATEGORY_CODES.get(str(n).upper())
        if code is None:
            raise SsahError(
                f"freeze.{key} has unknown category {n!r}; use some of {list(CATEGORY_CODES)}."
            )
        out.append(code)
    return out


@dataclass
class FreezeConfig:
    """One freeze spec (see conf/freeze/*.yaml for the documented choices)."""

    spec: str = "none"  # label for reports and mask metadata
    mode: str = "none"  # none | freeze | rewind | random | lora
    units: str | None = None  # units.safetensors; null: score the fine-tuned model (cfg.scoring)
    categories: list[str] = field(default_factory=list)  # frozen in full
    extra_category: str = "CU"
    extra_ratio: float = 0.0  # share of all unit parameters taken from extra_category
    extra_ranking: str = "z_safety"  # which end of extra_category counts as "top"
    train_ranking: str | None = None  # instead of categories: train only the lowest-ranked units
    train_ratio: float = 0.2  # ... up to this share of all unit parameters; freeze the rest
    layers: list[int] | None = None  # [start, stop) blocks where units may be frozen; null: all
    outside_units: str = "train"  # embeddings, norms, lm_head: train | freeze
    epochs_multiplier: float = 1.0  # the paper trained frozen runs twice as long
    verify_every_n_steps: int = 25  # compare frozen slices with the saved copy (0: at end only)
    match: Any = None  # random: the spec matched (a conf/freeze option composed by Hydra)
    match_per_layer: bool = False  # random: same unit counts per layer, not only per kind
    match_kv_groups: bool = False  # random: also as many whole k/v groups (k/v rows frozen)
    seed: int = 0  # random: which units
    lora: dict[str, Any] = field(default_factory=dict)
    check_model: bool = True  # refuse a units file made for another model
    scoring: Any = None  # units=null: a composed conf/scoring node (null: the stage's scoring)
    budget: float | None = None  # share of unit parameters frozen in `selection`'s order
    selection: str = "safety"  # budget only: one of SELECTIONS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SsahError(f"freeze.mode={self.mode!r} is unknown; use one of {MODES}.")
        self.categories = [str(c).upper() for c in (self.categories or [])]
        _codes(self.categories, "categories")
        self.extra_category = str(self.extra_category).upper()
        _codes([self.extra_category], "extra_category")
        try:
            self.extra_ratio = float(self.extra_ratio)
        except (TypeError, ValueError):
            raise SsahError(f"freeze.extra_ratio={self.extra_ratio!r} is not a number.") from None
        if not 0.0 <= self.extra_ratio <= 1.0:
            raise SsahError(
                f"freeze.extra_ratio={self.extra_ratio} is outside [0, 1]; give a fraction of "
                "all unit parameters (the paper's 7.5% setting is 0.06)."
            )
        if self.extra_ranking not in RANKINGS:
            raise SsahError(
                f"freeze.extra_ranking={self.extra_ranking!r} is unknown; use one of {RANKINGS}."
            )
        if self.train_ranking is not None and self.train_ranking not in RANKINGS:
            raise SsahError(
                f"freeze.train_ranking={self.train_ranking!r} is unknown; use one of {RANKINGS}."
            )
        if not 0.0 <= float(self.train_ratio) <= 1.0:
            raise SsahError(f"freeze.train_ratio={self.train_ratio} is outside [0, 1].")
        self.train_ratio = float(self.train_ratio)
        if self.layers is not None:
            lay = list(self.layers)
            if (
                len(lay) != 2
                or not all(isinstance(x, int) for x in lay)
                or not 0 <= lay[0] < lay[1]
            ):
                raise SsahError(
                    f"freeze.layers={self.layers!r} must be [start, stop) block indices with "
                    "0 <= start < stop (the paper's Llama-3 setting: [0, 12]), or null for all."
                )
            self.layers = lay
        if self.outside_units not in OUTSIDE:
            raise SsahError(f"freeze.outside_units={self.outside_units!r}: use one of {OUTSIDE}.")
        if not self.epochs_multiplier > 0:
            raise SsahError(f"freeze.epochs_multiplier={self.epochs_multiplier} must be > 0.")
        if self.verify_every_n_steps < 0:
            raise SsahError(
                f"freeze.verify_every_n_steps={self.verify_every_n_steps} must be >= 0."
            )
        if self.mode == "random" and self.match is None:
            raise SsahError(
                "freeze.mode=random needs a spec to match: freeze@freeze.match=<conf/freeze option>."
            )
        if self.budget is not None:
            try:
                self.budget = float(self.budget)
            except (TypeError, ValueError):
                raise SsahError(f"freeze.budget={self.budget!r} is not a number.") from None
            if not 0.0 < self.budget <= 1.0:
                raise SsahError(
                    f"freeze.budget={self.budget} is outside (0, 1]; give a share of all unit "
                    "parameters (0.05 = 5%), or null for a category spec."
                )
            if self.categories or self.extra_ratio > 0 or self.train_ranking is not None:
                raise SsahError(
                    "freeze.budget replaces categories / extra_ratio / train_ranking; set "
                    "freeze.categories=[] freeze.extra_ratio=0 (conf/freeze/budget.yaml does)."
                )
        if self.selection not in SELECTIONS:
            raise SsahError(
                f"freeze.selection={self.selection!r} is unknown; use one of {SELECTIONS}."
            )
        unknown = sorted(set(self.lora) - set(LORA_DEFAULTS))
        if unknown:
            raise SsahError(
                f"freeze.lora has unknown key(s) {unknown}; known: {sorted(LORA_DEFAULTS)}."
            )
        self.lora = {**LORA_DEFAULTS, **self.lora}
        if self.mode == "lora" and not int(self.lora["r"]) > 0:
            raise SsahError(f"freeze.lora.r={self.lora['r']} must be > 0.")

    @property
    def needs_units(self) -> bool:
        """Whether a units file is read (LoRA and none freeze nothing)."""
        if self.mode in ("none", "lora"):
            return False
        return (
            bool(self.categories)
            or self.extra_ratio > 0
            or self.mode == "random"
            or self.train_ranking is not None
            or self.budget is not None
        )

    @property
    def frozen_codes(self) -> list[int]:
        return _codes(self.categories, "categories")

    @property
    def extra_code(self) -> int:
        return CATEGORY_CODES[self.extra_category]

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict[str, Any] | None) -> FreezeConfig:
        """Validate a freeze config node; unknown keys are named."""
        if cfg is None:
            return cls()
        d = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
        scoring = d.pop("scoring", None)
        if isinstance(cfg, DictConfig) and "scoring" in cfg and cfg.scoring is not None:
            scoring = cfg.scoring  # keep interpolations (e.g. ${toy:data}) lazy
        d = {k: _resolve(cfg, k, v) for k, v in d.items()}
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise SsahError(f"freeze config has unknown key(s) {bad}; known: {sorted(known)}.")
        return cls(**d, scoring=scoring)

    def matched(self) -> FreezeConfig:
        """The spec a random control matches (`match`, composed by Hydra from conf/freeze),
        sharing this spec's units file and layers."""
        m = self.match
        if isinstance(m, str):
            raise SsahError(
                f"freeze.match={m!r} is a name; compose the spec instead: "
                f"freeze@freeze.match={m} (any conf/freeze option)."
            )
        if not isinstance(m, dict):
            raise SsahError(f"freeze.match={m!r} must be a freeze spec mapping.")
        target = FreezeConfig.from_cfg({**m, "units": self.units, "layers": self.layers})
        if target.mode not in ("freeze", "rewind"):
            raise SsahError(
                f"freeze.match (spec {target.spec!r}) has mode {target.mode!r}; a random control "
                "matches a spec that selects units (mode freeze or rewind)."
            )
        return target


def _resolve(cfg: Any, key: str, value: Any) -> Any:
    """Resolve one key of a DictConfig (interpolations allowed), plain values unchanged."""
    if isinstance(cfg, DictConfig):
        node = cfg[key]
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return value
