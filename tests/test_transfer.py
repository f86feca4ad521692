"""Attribute transfer: transition counts on constructed units files, shape checks, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ssah.analysis import transfer as T
from ssah.errors import SsahError
from ssah.transfer import run as run_transfer

RU, SCU, UCU, CU = 0, 1, 2, 3


def units_file(path: Path, cats: dict[tuple[int, str], list[int]], meta: dict | None = None) -> str:
    """A contract-4 units file with the given categories (scores are filler)."""
    tensors = {}
    for (i, kind), c in cats.items():
        tensors[f"layers.{i}.{kind}.category"] = torch.tensor(c, dtype=torch.uint8)
        tensors[f"layers.{i}.{kind}.safety_score"] = torch.rand(len(c))
        tensors[f"layers.{i}.{kind}.utility_score"] = torch.rand(len(c))
    save_file(tensors, str(path), metadata=meta or {"model": "tiny"})
    return str(path)


A = {
    (0, "mlp"): [RU, SCU, SCU, CU, CU, UCU],
    (0, "attn"): [CU, SCU],
    (1, "mlp"): [CU, CU, CU, RU, UCU, SCU],
    (1, "attn"): [RU, CU],
}
B = {
    (0, "mlp"): [RU, CU, SCU, CU, SCU, UCU],
    (0, "attn"): [CU, CU],
    (1, "mlp"): [CU, CU, UCU, RU, UCU, CU],
    (1, "attn"): [CU, CU],
}


def test_transition_counts_global_per_layer_and_metrics(tmp_path: Path) -> None:
    res = T.transition_matrix(units_file(tmp_path / "a.st", A), units_file(tmp_path / "b.st", B))
    g = torch.tensor(res["global"])
    assert res["num_units"] == 16 and int(g.sum()) == 16
    assert g[SCU, CU] == 3  # layer 0 mlp unit 1, layer 0 attn head 1, layer 1 mlp unit 5
    assert g[CU, SCU] == 1 and g[RU, CU] == 1 and g[CU, UCU] == 1
    assert torch.equal(g.sum(1), torch.tensor([3, 4, 2, 7]))  # categories in a
    assert torch.equal(g.sum(0), torch.tensor([2, 2, 3, 9]))  # categories in b
    assert res["per_layer"][0]["attn"][SCU][CU] == 1 and res["per_layer"][1]["mlp"][CU][UCU] == 1
    assert torch.equal(
        torch.tensor(res["by_kind"]["mlp"]) + torch.tensor(res["by_kind"]["attn"]), g
    )
    m = T.transfer_metrics(res)
    assert m["transfer/SCU_to_CU"] == 3 / 16 and m["transfer/cond/SCU_to_CU"] == 3 / 4
    assert m["transfer/stay_fraction"] == pytest.approx(float(g.trace()) / 16)
    assert sum(v for k, v in m.items() if k.count("_to_") and "/cond/" not in k) == pytest.approx(1)
    assert "transfer/ft/RU_to_RU" in T.transfer_metrics(res, "ft")
    same = T.transition_matrix(tmp_path / "a.st", tmp_path / "a.st")
    assert torch.equal(torch.tensor(same["global"]), torch.diag(torch.tensor([3, 4, 2, 7])))


def test_refuses_other_shapes_and_bad_files(tmp_path: Path) -> None:
    a = units_file(tmp_path / "a.st", A)
    wider = {**A, (1, "mlp"): [CU] * 7}
    with pytest.raises(SsahError, match="different shapes"):
        T.transition_matrix(a, units_file(tmp_path / "w.st", wider))
    deeper = {**A, (2, "mlp"): [CU] * 6, (2, "attn"): [CU, CU]}
    with pytest.raises(SsahError, match="different shapes"):
        T.transition_matrix(units_file(tmp_path / "d.st", deeper), a)
    with pytest.raises(SsahError, match="does not exist"):
        T.transition_matrix(a, tmp_path / "missing.st")
    with pytest.raises(SsahError, match="value 7"):
        T.transition_matrix(a, units_file(tmp_path / "v.st", {**A, (0, "attn"): [7, 0]}))
    (tmp_path / "junk.st").write_text("not safetensors")
    with pytest.raises(SsahError, match="cannot read"):
        T.transition_matrix(a, tmp_path / "junk.st")
    no_attn = {k: v for k, v in A.items() if k != (1, "attn")}
    with pytest.raises(SsahError, match="incomplete"):
        T.transition_matrix(a, units_file(tmp_path / "i.st", no_attn))


def test_run_writes_tables_heatmap_and_metrics(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {
            "a": units_file(tmp_path / "a.st", A),
            "b": units_file(tmp_path / "b.st", B),
            "labels": {"a": "aligned", "b": "fine-tuned"},
            "name": None,
        }
    )
    out = tmp_path / "run"
    metrics = run_transfer(cfg, out)
    assert json.loads((out / "metrics.json").read_text())["transfer/SCU_to_CU"] == 3 / 16
    assert metrics["transfer/num_units"] == 16
    md = (out / "transfer.md").read_text()
    assert "| SCU | 0 (0.0%) | 1 (25.0%) | 0 (0.0%) | 3 (75.0%) | 4 |" in md
    rows = (out / "transfer.csv").read_text().splitlines()
    assert "global,,all,SCU,CU,3" in rows and "layer,1,mlp,CU,UCU,1" in rows
    assert (out / "transfer.png").stat().st_size > 0
    with pytest.raises(SsahError, match="needs two units files"):
        run_transfer(OmegaConf.create({"a": None, "b": None, "labels": {"a": "x", "b": "y"}}), out)


def test_config_composes() -> None:
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("transfer", overrides=["a=x.safetensors", "b=y.safetensors"])
    assert cfg.a == "x.safetensors" and cfg.name is None
