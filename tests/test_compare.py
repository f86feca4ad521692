"""Two result sets of the same rows compared prompt by prompt (ssah.reporting.compare)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ssah.reporting.compare import render, units_agreement
from ssah.results import scan
from ssah.stats import mcnemar


def _row(root: Path, row: str, asr: list[bool], refused: list[bool]) -> None:
    d = root / "smollm2" / f"{row}-k"
    d.mkdir(parents=True)
    out = [
        {"suite": "direct", "kind": "attack", "prompt_id": i, "judge/keyword": f}
        for i, f in enumerate(asr)
    ]
    out += [
        {"suite": "benign", "kind": "over_refusal", "prompt_id": i, "refused": f}
        for i, f in enumerate(refused)
    ]
    (d / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in out))
    (d / "metrics.json").write_text("{}")
    (d / "meta.json").write_text(json.dumps({"row": row, "seed": 0, "world": "smollm2"}))


def test_compare_pairs_prompts_and_flags_moved_rates(tmp_path: Path) -> None:
    same = [True, False] * 10
    moved = [True] * 20
    _row(tmp_path / "a", "aligned", same, [False] * 20)
    _row(tmp_path / "b", "aligned", moved, [False] * 19 + [True])
    _row(tmp_path / "a", "prune_scu", same, [False] * 20)
    text = render(scan(tmp_path / "a"), scan(tmp_path / "b"), ("float32", "fast"))
    t = mcnemar([float(x) for x in same], [float(x) for x in moved])
    line = next(x for x in text.splitlines() if x.startswith("| ASR direct (keyword)"))
    assert f"{100 * t.diff:+.1f} [{100 * t.ci_low:+.1f}, {100 * t.ci_high:+.1f}]" in line
    assert "**no**" in line  # 10 of 20 prompts flipped one way: outside
    assert "| over-refusal | 20 | 0.0 | 5.0 |" in text and "aligned: ASR direct (keyword)" in text
    assert "Rows run on one side only: prune_scu." in text


def test_units_agreement_counts_categories(tmp_path: Path) -> None:
    a = {"layers.0.mlp.category": torch.tensor([0, 1, 2, 3], dtype=torch.uint8),
         "layers.0.attn.category": torch.tensor([0, 1], dtype=torch.uint8),
         "layers.0.mlp.safety_score": torch.zeros(4)}  # fmt: skip
    b = {**a, "layers.0.mlp.category": torch.tensor([0, 1, 2, 0], dtype=torch.uint8)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    got = units_agreement(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert (
        got["agreement"] == 5 / 6 and got["agreement/mlp"] == 3 / 4 and got["agreement/attn"] == 1.0
    )
