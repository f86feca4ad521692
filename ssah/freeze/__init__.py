"""Freezing units while fine-tuning (paper Tables 2-4): spec -> units -> plan -> masks ->
slices -> exact callback. The train stage reads it top to bottom:

    spec = FreezeConfig.from_cfg(cfg.freeze)
    units = score_units(...) if spec needs them and freeze.units is null, else None
    fplan = plan(spec, model, out_dir, units, trainer=cfg.trainer)

This package file only re-exports; each step lives in its own module.
"""

from ssah.freeze.callback import FreezeDriftError
from ssah.freeze.plan import MASK_FILE, FreezePlan, plan, rank, scale_schedule, strategy_name
from ssah.freeze.spec import FreezeConfig
from ssah.freeze.unitsdata import UnitsData, read_units_for, score_units
from ssah.fsdp import gather_full

__all__ = [
    "MASK_FILE",
    "FreezeConfig",
    "FreezeDriftError",
    "FreezePlan",
    "UnitsData",
    "gather_full",
    "plan",
    "rank",
    "read_units_for",
    "scale_schedule",
    "score_units",
    "strategy_name",
]
