"""Check a finished train run from its files alone: are the frozen units of `model/` bit-identical
to the starting model, and did the trainable ones change?

    python -m ssah.freeze.check <run_dir> <starting model dir>

Reads <run_dir>/freeze_mask.safetensors (contract 5) and <run_dir>/model (save_model=true),
expands the mask with the contract-5 rule and compares tensors bitwise. Prints one JSON line;
exit code 1 when a frozen slice differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from ssah.errors import SsahError
from ssah.units import KINDS, UnitIndex


def read_mask(path: str | Path) -> dict[tuple[int, str], torch.Tensor]:
    """freeze_mask.safetensors -> {(layer, kind): bool vector}."""
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            _, layer, kind = key.split(".")
            out[(int(layer), kind)] = f.get_tensor(key).to(torch.bool)
    return out


def compare(run_dir: str | Path, start: str | Path) -> dict[str, Any]:
    """Bitwise comparison of frozen / trainable unit slices between start and run_dir/model."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").is_dir():
        raise SsahError(f"{run_dir}/model does not exist; train with save_model=true.")
    before = AutoModelForCausalLM.from_pretrained(str(start), dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"), dtype=torch.float32)
    masks = read_mask(run_dir / "freeze_mask.safetensors")
    index = UnitIndex(before)
    pb, pa = dict(before.named_parameters()), dict(after.named_parameters())
    frozen_bad, frozen_n, train_n, train_changed = [], 0, 0, 0
    for layer in range(index.num_layers):
        for kind in KINDS:
            m = masks[(layer, kind)]
            for s in index.slices(layer, kind, m):
                if s.index.numel():
                    frozen_n += 1
                    if not torch.equal(
                        pa[s.name].index_select(s.dim, s.index),
                        pb[s.name].index_select(s.dim, s.index),
                    ):
                        frozen_bad.append(s.name)
            for s in index.slices(layer, kind, ~m):
                if s.index.numel():
                    train_n += 1
                    train_changed += not torch.equal(
                        pa[s.name].index_select(s.dim, s.index),
                        pb[s.name].index_select(s.dim, s.index),
                    )
    return {
        "frozen_units": int(sum(int(m.sum()) for m in masks.values())),
        "frozen_slices": frozen_n,
        "frozen_slices_differing": frozen_bad,
        "trainable_slices": train_n,
        "trainable_slices_changed": train_changed,
        "ok": not frozen_bad,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ssah.freeze.check <run_dir> <starting model dir>", file=sys.stderr)
        return 2
    try:
        res = compare(*args)
    except SsahError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
