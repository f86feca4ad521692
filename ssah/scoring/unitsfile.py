"""`units.safetensors` (design contract 4) and the score cache, written byte-reproducibly.

Tensors `layers.{i}.mlp.<field>` / `layers.{i}.attn.<field>`, fields safety_score and
utility_score (float32, one per neuron / head), safety_z and utility_z (float32, the
standardised values the ranking used) and category (uint8: 0 RU, 1 SCU, 2 UCU, 3 CU); and
`layers.{i}.attn.channel_safety_score` / `channel_utility_score` (float32, num_heads x
head_dim, the raw score of each o_proj input channel before any squaring, head-major).
The categories follow from safety_z/utility_z alone by the rule in `rule` (metadata).
The header metadata (str -> str) names the model, scorer, calibration hashes, ratios,
head_z and the rule. The
safetensors library writes metadata in hash-map order, so the file is serialised here
with sorted keys: the same inputs give the same bytes. Any safetensors reader opens it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ssah.errors import SsahError
from ssah.io import atomic_write_bytes
from ssah.units import CATEGORY_CODES, KINDS, UnitIndex

FORMAT = "ssah-units/2"  # /2: channel scores and z fields
_DTYPES = {torch.float32: "F32", torch.uint8: "U8", torch.float64: "F64", torch.bool: "BOOL"}
Scores = dict[tuple[int, str], torch.Tensor]
Channels = dict[int, torch.Tensor]
UNIT_FIELDS = ("safety_score", "utility_score", "category", "safety_z", "utility_z")
CHANNEL_FIELDS = ("channel_safety_score", "channel_utility_score")


def key(layer: int, kind: str, field: str) -> str:
    return f"layers.{layer}.{kind}.{field}"


# ---- deterministic safetensors ---------------------------------------------------------------
def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with sorted metadata and tensor names."""
    header: dict[str, object] = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    blobs, pos = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} not supported")
        raw = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [pos, pos + len(raw)],
        }
        blobs.append(raw)
        pos += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise SsahError(f"{str(path)!r} does not exist; run `python -m ssah.score` first.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise SsahError(f"cannot read {str(path)!r} as safetensors: {e}") from None
    return tensors, meta


# ---- model fingerprint -------------------------------------------------------------------------
_VOLATILE_CONFIG = {
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "architectures",
    "_attn_implementation_autoset",
    "use_cache",
}


@torch.no_grad()
def model_digest(model: nn.Module) -> str:
    """Content hash of the weights (names, shapes, dtypes, bytes) and architecture config."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        body = {k: v for k, v in cfg.to_dict().items() if k not in _VOLATILE_CONFIG}
        h.update(json.dumps(body, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return "sha256:" + h.hexdigest()


# ---- units file --------------------------------------------------------------------------------
@dataclass
class UnitsFile:
    """Scores, z-scores, channel scores and categories per (layer, kind), plus metadata.
    Fields a file lacks (a scores-only cache entry, an older format) are empty dicts."""

    safety: Scores
    utility: Scores
    category: Scores
    metadata: dict[str, str]
    safety_z: Scores = field(default_factory=dict)
    utility_z: Scores = field(default_factory=dict)
    channel_safety: Channels = field(default_factory=dict)
    channel_utility: Channels = field(default_factory=dict)

    def check_model(self, digest: str, source: str | Path) -> None:
        """Refuse scores made for another model."""
        have = self.metadata.get("model_hash")
        if have != digest:
            raise SsahError(
                f"{str(source)!r} holds scores for model {self.metadata.get('model')!r} "
                f"({have}), not for the loaded model ({digest}); rerun `python -m ssah.score` "
                "with this model or point to its own units file."
            )

    def mask(self, code: int) -> dict[tuple[int, str], torch.Tensor]:
        """Bool mask per (layer, kind) of the units in category `code`."""
        return {k: v == code for k, v in self.category.items()}


def write_units(
    path: str | Path,
    index: UnitIndex,
    safety: Scores,
    utility: Scores,
    category: Scores | None,
    metadata: dict[str, str],
    *,
    safety_z: Scores | None = None,
    utility_z: Scores | None = None,
    channel_safety: Channels | None = None,
    channel_utility: Channels | None = None,
) -> Path:
    """Write contract-4 tensors (fields given as None are omitted, e.g. category and z in a
    scores-only cache entry)."""
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(index.num_layers):
        for kind in KINDS:
            n = index.num_units(kind)
            for fld, src, dtype in (
                ("safety_score", safety, torch.float32),
                ("utility_score", utility, torch.float32),
                ("category", category, torch.uint8),
                ("safety_z", safety_z, torch.float32),
                ("utility_z", utility_z, torch.float32),
            ):
                if src is None:
                    continue
                t = src[(layer, kind)].to(dtype).flatten()
                if t.numel() != n:
                    raise ValueError(f"{key(layer, kind, fld)} has {t.numel()} entries, not {n}")
                tensors[key(layer, kind, fld)] = t
        for fld, ch in zip(CHANNEL_FIELDS, (channel_safety, channel_utility), strict=True):
            if ch is None:
                continue
            t = ch[layer].to(torch.float32).flatten()
            if t.numel() != index.channels("attn"):
                raise ValueError(
                    f"{key(layer, 'attn', fld)} has {t.numel()} entries, "
                    f"not {index.channels('attn')}"
                )
            tensors[key(layer, "attn", fld)] = t
    meta = {
        "format": FORMAT,
        "category_codes": ",".join(f"{c} {n}" for n, c in CATEGORY_CODES.items()),
        **metadata,
    }
    return atomic_write_bytes(path, serialize(tensors, meta))


def read_units(path: str | Path, index: UnitIndex | None = None) -> UnitsFile:
    """Read a units file (or a scores-only cache entry); check shapes against `index`."""
    tensors, meta = read_safetensors(path)
    out: dict[str, Scores] = {f: {} for f in UNIT_FIELDS}
    chan: dict[str, Channels] = {f: {} for f in CHANNEL_FIELDS}
    for name, t in tensors.items():
        parts = name.split(".")
        ok = len(parts) == 4 and parts[0] == "layers" and parts[1].isdigit()
        if ok and parts[2] == "attn" and parts[3] in CHANNEL_FIELDS:
            chan[parts[3]][int(parts[1])] = t
            continue
        if not ok or parts[2] not in KINDS or parts[3] not in out:
            raise SsahError(f"{str(path)!r} is not a units file (unexpected tensor {name!r}).")
        out[parts[3]][(int(parts[1]), parts[2])] = t
    if index is not None:
        _check_shapes(path, index, out, chan)
    return UnitsFile(
        out["safety_score"],
        out["utility_score"],
        out["category"],
        meta,
        out["safety_z"],
        out["utility_z"],
        chan["channel_safety_score"],
        chan["channel_utility_score"],
    )


def _check_shapes(
    path: str | Path, index: UnitIndex, out: dict[str, Scores], chan: dict[str, Channels]
) -> None:
    """Scores must cover every unit; optional fields, when present, must fit too."""
    for fld in UNIT_FIELDS:
        required = fld in ("safety_score", "utility_score")
        if not required and not out[fld]:
            continue
        for layer in range(index.num_layers):
            for kind in KINDS:
                t = out[fld].get((layer, kind))
                if t is None or t.numel() != index.num_units(kind):
                    raise SsahError(
                        f"{str(path)!r} does not fit this model ({key(layer, kind, fld)} "
                        "missing or of the wrong length); it was made for another model."
                    )
    for fld, ch in chan.items():
        if not ch:
            continue
        for layer in range(index.num_layers):
            t = ch.get(layer)
            if t is None or t.numel() != index.channels("attn"):
                raise SsahError(
                    f"{str(path)!r} does not fit this model ({key(layer, 'attn', fld)} "
                    "missing or of the wrong length); it was made for another model."
                )
