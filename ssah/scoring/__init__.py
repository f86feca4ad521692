"""Unit scoring (WIFV, Wanda, SNIP, contrast, random) and SCU/UCU/CU/RU attribution."""

from ssah.scoring.categories import (
    CATEGORY_NAMES,
    CU,
    HEAD_Z,
    RU,
    SCU,
    UCU,
    Ratios,
    assign,
    assign_z,
    unit_z,
)
from ssah.scoring.pipeline import ScoringSettings, Units, compute_units
from ssah.scoring.scorers import SCORERS, ScorerConfig, score
from ssah.scoring.unitsfile import model_digest, read_units, write_units

__all__ = [
    "CATEGORY_NAMES",
    "CU",
    "HEAD_Z",
    "RU",
    "SCU",
    "UCU",
    "SCORERS",
    "Ratios",
    "ScorerConfig",
    "ScoringSettings",
    "Units",
    "assign",
    "assign_z",
    "compute_units",
    "model_digest",
    "read_units",
    "score",
    "unit_z",
    "write_units",
]
