"""`units.safetensors` (design contract 4) and the score cache, written byte-reproducibly.

Tensors `layers.{i}.mlp.<field>` / `layers.{i}.attn.<field>`, fields safety_score and
utility_score (float32) and category (uint8: 0 RU, 1 SCU, 2 UCU, 3 CU). The header
metadata (str -> str) names the model, scorer, calibration hashes and ratios. The
safetensors library writes metadata in hash-map order, so the file is serialised here
with sorted keys: the same inputs give the same bytes. Any safetensors reader opens it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ssah.errors import SsahError
from ssah.units import KINDS, UnitIndex

FORMAT = "ssah-units/1"
CATEGORY_CODES = "0 RU,1 SCU,2 UCU,3 CU"
_DTYPES = {torch.float32: "F32", torch.uint8: "U8", torch.float64: "F64", torch.bool: "BOOL"}
Scores = dict[tuple[int, str], torch.Tensor]


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


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Temp file + rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    """Scores and categories per (layer, kind), plus the header metadata."""

    safety: Scores
    utility: Scores
    category: Scores
    metadata: dict[str, str]

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
) -> Path:
    """Write contract-4 tensors (category omitted for a scores-only cache entry)."""
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(index.num_layers):
        for kind in KINDS:
            n = index.num_units(kind)
            for field, src, dtype in (
                ("safety_score", safety, torch.float32),
                ("utility_score", utility, torch.float32),
                ("category", category, torch.uint8),
            ):
                if src is None:
                    continue
                t = src[(layer, kind)].to(dtype).flatten()
                if t.numel() != n:
                    raise ValueError(f"{key(layer, kind, field)} has {t.numel()} entries, not {n}")
                tensors[key(layer, kind, field)] = t
    meta = {"format": FORMAT, "category_codes": CATEGORY_CODES, **metadata}
    return atomic_write_bytes(path, serialize(tensors, meta))


def read_units(path: str | Path, index: UnitIndex | None = None) -> UnitsFile:
    """Read a units file (or a scores-only cache entry); check shapes against `index`."""
    tensors, meta = read_safetensors(path)
    out: dict[str, Scores] = {"safety_score": {}, "utility_score": {}, "category": {}}
    for name, t in tensors.items():
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "layers" or parts[2] not in KINDS or parts[3] not in out:
            raise SsahError(f"{str(path)!r} is not a units file (unexpected tensor {name!r}).")
        out[parts[3]][(int(parts[1]), parts[2])] = t
    if index is not None:
        for field in ("safety_score", "utility_score"):
            for layer in range(index.num_layers):
                for kind in KINDS:
                    t = out[field].get((layer, kind))
                    if t is None or t.numel() != index.num_units(kind):
                        raise SsahError(
                            f"{str(path)!r} does not fit this model ({key(layer, kind, field)} "
                            "missing or of the wrong length); it was made for another model."
                        )
    return UnitsFile(out["safety_score"], out["utility_score"], out["category"], meta)
