"""From a loaded model to scored and categorised units, with the score cache.

Scores are cached by content: model weights hash, scorer settings, the encoded calibration
data and the module names. Ratios are not part of the key (categories are recomputed from
the cached float32 scores in milliseconds), so sweeps over ratios or prune targets reuse
one entry. A cache entry or `scores_from` file made for another model is refused.
Entries hold the o_proj channel scores too (head_z=squared_channels needs them); the cache
key carries the units-file format, so entries written before that are not reused.
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

from ssah.errors import SsahError
from ssah.io import cache_lock
from ssah.scoring.calibration import CalibrationConfig, batches, build_calibration, describe
from ssah.scoring.categories import HEAD_Z, Assignment, Channels, Ratios, assign_z, unit_z
from ssah.scoring.scorers import ScorerConfig, Scores, score_channels
from ssah.scoring.unitsfile import FORMAT, UnitsFile, model_digest, read_units, write_units
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
    head_z: str = "squared_channels"  # squared_channels (authors) | per_head

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
            "head_z",
            "variance",
        }
        extra = sorted(set(d) - known)
        if extra:
            raise SsahError(f"scoring config has unknown key(s) {extra}; known: {sorted(known)}.")
        ddof = int(d.get("zscore_ddof", 1))
        if ddof not in (0, 1):
            raise SsahError(f"scoring.zscore_ddof={ddof} must be 0 or 1.")
        head_z = str(d.get("head_z", "squared_channels"))
        if head_z not in HEAD_Z:
            raise SsahError(
                f"scoring.head_z={head_z!r} is unknown; use one of {HEAD_Z} "
                "(squared_channels: the authors' order)."
            )
        return cls(
            scorer=ScorerConfig(
                d.get("scorer", "wifv"),
                d.get("head_reduction", "mean"),
                int(d.get("seed", 0)),
                str(d.get("variance", "sample")),
            ),
            ratios=Ratios(**(d.get("ratios") or {})),
            calibration=CalibrationConfig(**d["calibration"]),
            zscore_ddof=ddof,
            modules=dict(d.get("modules") or {}),
            head_z=head_z,
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
    safety_z: Scores = field(default_factory=dict)
    utility_z: Scores = field(default_factory=dict)
    channel_safety: Channels | None = None
    channel_utility: Channels | None = None

    @property
    def category(self) -> Scores:
        return self.index.unflatten(self.assignment.category)

    def write(self, path: str | Path) -> Path:
        return write_units(
            path,
            self.index,
            self.safety,
            self.utility,
            self.category,
            self.metadata,
            safety_z=self.safety_z,
            utility_z=self.utility_z,
            channel_safety=self.channel_safety,
            channel_utility=self.channel_utility,
        )


def scorer_fields(scfg: ScorerConfig) -> dict[str, Any]:
    """The scorer settings in cache keys and headers; `variance` only when not the default,
    so entries written before the option existed keep their keys."""
    d = asdict(scfg)
    if d.get("variance") == "sample":
        d.pop("variance")
    return d


def cache_key(digest: str, scfg: ScorerConfig, hashes: dict[str, str], index: UnitIndex) -> str:
    body = {
        "model": digest,
        "scorer": scorer_fields(scfg),
        "data": hashes,
        "modules": asdict(index.names),
        "format": FORMAT,
    }
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
        ch_s, ch_u = uf.channel_safety or None, uf.channel_utility or None
        info["cache_hit"] = 1.0
    else:
        ccfg = settings.calibration
        ch_s: Channels | None = None
        ch_u: Channels | None = None
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
            "scorer_config": json.dumps(scorer_fields(scfg), sort_keys=True),
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
                ch_s, ch_u = uf.channel_safety or None, uf.channel_utility or None
                info["cache_hit"] = 1.0
                log.info("scores reused from cache %s", path)
            else:
                pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                by_len = ccfg.sort_by_length and scfg.variance == "sample"  # running: draw order
                bs = {n: batches(s.rows, ccfg.batch_size, pad, by_len) for n, s in sets.items()}
                sc_s = score_channels(model, index, bs.get("safety", []), scfg, stream=0)
                sc_u = score_channels(model, index, bs.get("utility", []), scfg, stream=1)
                safety, utility = sc_s.unit, sc_u.unit
                ch_s, ch_u = sc_s.channel, sc_u.channel
                if path is not None:
                    write_units(
                        path,
                        index,
                        safety,
                        utility,
                        None,
                        base_meta,
                        channel_safety=ch_s,
                        channel_utility=ch_u,
                    )
        info["time/scoring_s"] = time.perf_counter() - t1
    ddof, hz = settings.zscore_ddof, settings.head_z
    zs = unit_z(index, _f32(safety), _f32c(ch_s), hz, ddof)
    zu = unit_z(index, _f32(utility), _f32c(ch_u), hz, ddof)
    asg = assign_z(index, zs, zu, settings.ratios)
    r = settings.ratios
    meta = {
        **base_meta,
        "ratios": json.dumps({"ru": r.ru, "scu": r.scu, "ucu": r.ucu}, sort_keys=True),
        "zscore_ddof": str(settings.zscore_ddof),
        "head_z": hz,
        "units": json.dumps(index.describe(), sort_keys=True),
        "z_rule": Z_RULES[hz],
        "rule": (
            "categories from the stored float32 safety_z/utility_z (as float64): global "
            "ranking; RU lowest zS+zU, SCU highest zS-zU, UCU lowest zS-zU, later overwrites "
            "earlier; selection = longest prefix of the stable ascending/descending sort whose "
            "params <= ratio*total (unit weights in `units`: params_per_neuron, "
            "params_per_head); ties by flat order (layer, mlp before attn, index)"
        ),
    }
    info["time/units_total_s"] = time.perf_counter() - t0
    return Units(index, safety, utility, asg, meta, info, zs, zu, ch_s, ch_u)


Z_RULES = {
    "squared_channels": (
        "mlp: z of safety_score within the layer (std ddof=zscore_ddof); attn: square each "
        "o_proj input channel score (channel_*_score), z over all the layer's channels, head "
        "z = mean of its head_dim channels' z (authors' lib/prune.py AL-AM)"
    ),
    "per_head": "z of the per-head / per-neuron score within each (layer, kind)",
}


def _f32(x: Scores) -> Scores:
    return {k: v.to("cpu").float() for k, v in x.items()}


def _f32c(x: Channels | None) -> Channels | None:
    return None if x is None else {k: v.to("cpu").float() for k, v in x.items()}


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
