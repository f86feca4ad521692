"""From a loaded model to scored and categorised units, with the score cache.

Scores are cached by content: model weights hash, scorer settings, the encoded calibration
data and the module names. Ratios are not part of the key (categories are recomputed from
the cached float32 scores in milliseconds), so sweeps over ratios or prune targets reuse
one entry. A cache entry or `scores_from` file made for another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.calibration import CalibrationConfig, batches, build_calibration, describe
from ssah.errors import SsahError
from ssah.scoring.categories import Assignment, Ratios, assign
from ssah.scoring.scorers import ScorerConfig, Scores, score
from ssah.scoring.unitsfile import UnitsFile, model_digest, read_units, write_units
from ssah.sweep import cache_lock
from ssah.units import UnitIndex

log = logging.getLogger(__name__)


@dataclass
class ScoringSettings:
    """conf/scoring/*.yaml, validated."""

    scorer: ScorerConfig
    ratios: Ratios
    calibration: CalibrationConfig
    zscore_ddof: int = 1
    modules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict[str, Any]) -> ScoringSettings:
        d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        known = {
            "scorer",
            "head_reduction",
            "seed",
            "ratios",
            "calibration",
            "zscore_ddof",
            "modules",
        }
        extra = sorted(set(d) - known)
        if extra:
            raise SsahError(f"scoring config has unknown key(s) {extra}; known: {sorted(known)}.")
        ddof = int(d.get("zscore_ddof", 1))
        if ddof not in (0, 1):
            raise SsahError(f"scoring.zscore_ddof={ddof} must be 0 or 1.")
        return cls(
            scorer=ScorerConfig(
                d.get("scorer", "wifv"), d.get("head_reduction", "mean"), int(d.get("seed", 0))
            ),
            ratios=Ratios(**(d.get("ratios") or {})),
            calibration=CalibrationConfig(**d["calibration"]),
            zscore_ddof=ddof,
            modules=dict(d.get("modules") or {}),
        )


@dataclass
class Units:
    """Scores, categories and everything needed to write or explain them."""

    index: UnitIndex
    safety: Scores
    utility: Scores
    assignment: Assignment
    metadata: dict[str, str]
    info: dict[str, float]

    @property
    def category(self) -> Scores:
        return self.index.unflatten(self.assignment.category)

    def write(self, path: str | Path) -> Path:
        return write_units(
            path, self.index, self.safety, self.utility, self.category, self.metadata
        )


def cache_key(digest: str, scfg: ScorerConfig, hashes: dict[str, str], index: UnitIndex) -> str:
    body = {"model": digest, "scorer": asdict(scfg), "data": hashes, "modules": asdict(index.names)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def compute_units(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    settings: ScoringSettings,
    model_name: str,
    cache_dir: str | Path | None = None,
    scores_from: str | Path | None = None,
) -> Units:
    """Score (or reuse cached scores) and categorise every unit of `model`."""
    t0 = time.perf_counter()
    index = UnitIndex(model, overrides=settings.modules)
    digest = model_digest(model)
    info: dict[str, float] = {"cache_hit": 0.0}
    scfg = settings.scorer
    if scores_from is not None:
        uf = read_units(scores_from, index)
        uf.check_model(digest, scores_from)
        safety, utility, base_meta = uf.safety, uf.utility, _score_meta(uf.metadata)
        info["cache_hit"] = 1.0
    else:
        ccfg = settings.calibration
        if scfg.name == "random":
            sets = {}
            hashes = {"safety": "none", "utility": "none"}
        else:
            sets = build_calibration(ccfg, model, tok, cache_dir, digest)
            hashes = {n: s.digest for n, s in sets.items()}
            for n, d in describe(sets).items():
                info[f"calib/{n}/samples"] = float(d["samples"])
                info[f"calib/{n}/tokens"] = float(d["tokens"])
        info["time/calibration_s"] = time.perf_counter() - t0
        base_meta = {
            "model": model_name,
            "model_hash": digest,
            "scorer": scfg.name,
            "scorer_config": json.dumps(asdict(scfg), sort_keys=True),
            "calibration_hashes": json.dumps(hashes, sort_keys=True),
            "calibration": json.dumps(_calib_meta(ccfg), sort_keys=True),
            "module_names": json.dumps(asdict(index.names), sort_keys=True),
        }
        path = None
        if cache_dir is not None:
            path = Path(cache_dir) / f"{cache_key(digest, scfg, hashes, index)}.safetensors"
        t1 = time.perf_counter()
        # Parallel sweep jobs: the first scores and writes, the others wait and reuse it.
        with cache_lock(path) if path is not None else nullcontext():
            if path is not None and path.is_file():
                uf = read_units(path, index)
                uf.check_model(digest, path)
                safety, utility = uf.safety, uf.utility
                info["cache_hit"] = 1.0
                log.info("scores reused from cache %s", path)
            else:
                pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                bs = {
                    n: batches(s.rows, ccfg.batch_size, pad, ccfg.sort_by_length)
                    for n, s in sets.items()
                }
                safety = score(model, index, bs.get("safety", []), scfg, stream=0)
                utility = score(model, index, bs.get("utility", []), scfg, stream=1)
                if path is not None:
                    write_units(path, index, safety, utility, None, base_meta)
        info["time/scoring_s"] = time.perf_counter() - t1
    asg = assign(index, safety, utility, settings.ratios, settings.zscore_ddof)
    r = settings.ratios
    meta = {
        **base_meta,
        "ratios": json.dumps({"ru": r.ru, "scu": r.scu, "ucu": r.ucu}, sort_keys=True),
        "zscore_ddof": str(settings.zscore_ddof),
        "units": json.dumps(index.describe(), sort_keys=True),
        "rule": (
            "z per (layer, kind); global ranking; RU lowest zS+zU, SCU highest zS-zU, "
            "UCU lowest zS-zU, later overwrites earlier; selection = longest prefix with "
            "params <= ratio*total; ties by flat order (layer, mlp before attn, index)"
        ),
    }
    info["time/units_total_s"] = time.perf_counter() - t0
    return Units(index, safety, utility, asg, meta, info)


def _score_meta(meta: dict[str, str]) -> dict[str, str]:
    keep = (
        "model",
        "model_hash",
        "scorer",
        "scorer_config",
        "calibration_hashes",
        "calibration",
        "module_names",
    )
    return {k: meta[k] for k in keep if k in meta}


def _calib_meta(ccfg: CalibrationConfig) -> dict[str, Any]:
    return {
        n: {"source": s.source, "response": s.response, "n_samples": s.n_samples}
        for n, s in (("safety", ccfg.safety), ("utility", ccfg.utility))
    } | {"seed": ccfg.seed, "system_prompt": ccfg.system_prompt}


def load_units_file(
    path: str | Path, model: PreTrainedModel, settings: ScoringSettings
) -> UnitsFile:
    """Read a units file for `model`, refusing one made for another model."""
    index = UnitIndex(model, overrides=settings.modules)
    uf = read_units(path, index)
    uf.check_model(model_digest(model), path)
    return uf
