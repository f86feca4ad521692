"""Freeze specs, masks, the exact-freeze callback (one process) and the baselines.

Tiny random-init Llama models (GQA: 4 heads, 2 kv heads) and synthetic units files; nothing is
scored here. Distributed cases live in tests/distributed/test_freeze_distributed.py and the
CLI cases in tests/test_freeze_cli.py.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader
from transformers import LlamaForCausalLM

from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.freeze import FreezeConfig, FreezeDriftError, plan, scale_schedule
from ssah.freeze import masks as M
from ssah.freeze.callback import ExactFreeze
from ssah.freeze.synthetic import synthetic_units
from ssah.module import CausalLMModule, OptimConfig
from ssah.scoring.unitsfile import read_units
from ssah.training import quiet_trainer
from ssah.units import KINDS, UnitIndex


def tiny(seed: int = 0, intermediate: int = 48, layers: int = 2) -> LlamaForCausalLM:
    return tiny_llama(
        64,
        layers=layers,
        seed=seed,
        intermediate_size=intermediate,
        pad_token_id=None,
        max_position_embeddings=32,
    ).train()


@pytest.fixture
def units(tmp_path):
    path = tmp_path / "units.safetensors"
    synthetic_units(tiny(), path, seed=3)
    return str(path)


def loader() -> DataLoader:
    ids = torch.randint(0, 64, (32, 12), generator=torch.Generator().manual_seed(7))
    rows = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r} for r in ids]
    return DataLoader(rows, batch_size=4)


def train(model, fp, steps: int = 4, precision: str = "32-true", **kw) -> None:
    """AdamW weight_decay 0.1, clipping, accumulate_grad_batches 2 (the done-means setting)."""
    trainer = quiet_trainer(
        steps,
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        callbacks=fp.callbacks,
        precision=precision,
        **kw,
    )
    model.train()
    trainer.fit(
        CausalLMModule(model, OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0)),
        train_dataloaders=loader(),
    )


def spec(units: str, **kw) -> dict:
    return {"spec": "t", "mode": "freeze", "units": units, "verify_every_n_steps": 1, **kw}


def expected_masks(model, units: str, **kw) -> dict:
    uf = read_units(units)
    return M.select(
        UnitIndex(model),
        FreezeConfig.from_cfg(spec(units, **kw)),
        uf.category,
        uf.safety,
        uf.utility,
        units,
    )


def check_exact(model, start, units: str, outside_frozen: bool = False, **kw) -> None:
    """Every frozen slice bit-identical, every trainable unit slice changed (per row/column)."""
    index, params = UnitIndex(model), dict(model.named_parameters())
    masks = expected_masks(model, units, **kw)
    for layer in range(index.num_layers):
        for kind in KINDS:
            for frozen_side in (True, False):
                m = masks[(layer, kind)] if frozen_side else ~masks[(layer, kind)]
                for s in index.slices(layer, kind, m):
                    if not s.index.numel():
                        continue
                    now = params[s.name].index_select(s.dim, s.index)
                    was = start[s.name].index_select(s.dim, s.index)
                    if frozen_side:
                        assert torch.equal(now, was), f"frozen slice of {s.name} moved"
                    else:
                        moved = (now != was).any(dim=1 - s.dim) if now.dim() == 2 else now != was
                        assert bool(moved.all()), f"trainable slice of {s.name} did not change"
    owned = index.unit_param_names()
    for name, p in params.items():
        if name not in owned:
            assert torch.equal(p, start[name]) == outside_frozen, name


# ---- specs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, match",
    [
        ({"categories": ["XCU"]}, "'XCU'"),
        ({"extra_ratio": 1.5}, "extra_ratio=1.5"),
        ({"extra_ratio": -0.1}, "extra_ratio=-0.1"),
        ({"extra_ranking": "loudest"}, "loudest"),
        ({"layers": [3, 1]}, r"layers=\[3, 1\]"),
        ({"outside_units": "maybe"}, "maybe"),
        ({"mode": "thaw"}, "thaw"),
        ({"mode": "random"}, "match"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_specs_name_the_value(bad, match):
    with pytest.raises(SsahError, match=match):
        FreezeConfig.from_cfg({"spec": "x", "mode": "freeze", **bad})


def test_scale_schedule_doubles_steps_or_epochs():
    assert scale_schedule({"max_steps": 8, "max_epochs": -1}, 2.0)["max_steps"] == 16
    assert scale_schedule({"max_steps": -1, "max_epochs": 3}, 2.0)["max_epochs"] == 6


def test_deepspeed_and_lossy_precision_are_refused(units):
    trainer = {"strategy": "deepspeed_stage_2", "precision": "32-true"}
    with pytest.raises(SsahError, match="DeepSpeed"):
        plan({"spec": "none", "mode": "none"}, tiny(), "unused", trainer=trainer)
    trainer = {"strategy": "auto", "precision": "bf16-true"}
    with pytest.raises(SsahError, match="bf16-true"):
        plan(spec(units, categories=["SCU"]), tiny(), "unused", trainer=trainer)


# ---- units files ----------------------------------------------------------------------------
def test_units_file_for_another_model_is_refused(units, tmp_path):
    with pytest.raises(SsahError, match="48 entries, the model has 40 neurons"):
        plan(spec(units, categories=["SCU"]), tiny(intermediate=40), tmp_path)
    with pytest.raises(SsahError, match="not for the loaded model"):
        plan(spec(units, categories=["SCU"]), tiny(seed=1), tmp_path)  # same shapes, other weights
    with pytest.raises(SsahError, match="layers"):
        plan(spec(units, categories=["SCU"]), tiny(layers=1), tmp_path)


def test_out_of_range_category_code_is_refused(tmp_path):
    from ssah.scoring.unitsfile import model_digest, write_units

    model = tiny()
    index = UnitIndex(model)
    zeros = {(i, k): torch.zeros(index.num_units(k)) for i in range(2) for k in KINDS}
    cats = {key: torch.full_like(v, 7, dtype=torch.uint8) for key, v in zeros.items()}
    path = write_units(
        tmp_path / "u.safetensors", index, zeros, zeros, cats, {"model_hash": model_digest(model)}
    )
    with pytest.raises(SsahError, match="holds 7"):
        plan(spec(str(path), categories=["SCU"]), model, tmp_path)


# ---- selection ------------------------------------------------------------------------------
@pytest.mark.parametrize("ranking", ["z_safety", "z_safety_minus_utility", "z_safety_plus_utility"])
def test_scu_top_cu_takes_scu_plus_the_top_of_cu_by_parameters(units, ranking):
    model = tiny()
    index = UnitIndex(model)
    uf = read_units(units)
    got = index.flatten(
        expected_masks(model, units, categories=["SCU"], extra_ratio=0.2, extra_ranking=ranking)
    )
    cat = index.flatten(uf.category)
    zs = index.flatten({k: M.zscore(v, 1) for k, v in uf.safety.items()})
    zu = index.flatten({k: M.zscore(v, 1) for k, v in uf.utility.items()})
    key = {"z_safety": zs, "z_safety_minus_utility": zs - zu, "z_safety_plus_utility": zs + zu}[
        ranking
    ]
    w = index.flat_weights()
    want = cat == 1
    budget, used = 0.2 * float(w.sum()), 0.0
    for j in sorted((j for j in range(len(cat)) if cat[j] == 3), key=lambda j: -float(key[j])):
        if used + float(w[j]) > budget + 1e-6:
            break
        used += float(w[j])
        want[j] = True
    assert torch.equal(got, want)
    assert got[cat == 3].any() and not got[(cat == 0) | (cat == 2)].any()


def test_layer_range_restricts_freezing(units):
    m = expected_masks(tiny(), units, categories=["SCU", "CU"], layers=[1, 2])
    assert not m[(0, "mlp")].any() and not m[(0, "attn")].any()
    assert m[(1, "mlp")].any()
    with pytest.raises(SsahError, match="past the model"):
        expected_masks(tiny(), units, categories=["SCU"], layers=[0, 5])


def test_train_ranking_trains_only_the_lowest_ranked_units(units):
    model = tiny()
    index = UnitIndex(model)
    uf = read_units(units)
    frozen = index.flatten(expected_masks(model, units, train_ranking="z_utility", train_ratio=0.3))
    zu = index.flatten({k: M.zscore(v, 1) for k, v in uf.utility.items()})
    w = index.flat_weights()
    trained = ~frozen
    assert float(w[trained].sum()) <= 0.3 * float(w.sum()) + 1e-6
    assert float(w[trained].sum()) > 0.2 * float(w.sum())
    assert zu[trained].max() <= zu[frozen].min()  # every trained unit ranks below every frozen


def test_random_matched_has_the_same_size_and_is_seeded(units):
    model = tiny()
    index = UnitIndex(model)
    target = expected_masks(model, units, categories=["SCU", "CU"])

    def rnd(seed: int) -> dict:
        cfg = FreezeConfig.from_cfg(
            {"mode": "random", "match": "scu_all_cu", "units": units, "seed": seed}
        )
        return M.random_matched(index, target, cfg)

    a, b, c = rnd(0), rnd(0), rnd(1)
    for kind in KINDS:
        n = sum(int(target[(i, kind)].sum()) for i in range(2))
        assert sum(int(a[(i, kind)].sum()) for i in range(2)) == n
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (
        M.count(index, a)["unit_params_fraction"] == M.count(index, target)["unit_params_fraction"]
    )


def test_random_matched_spec_resolves_its_target_from_conf(units, tmp_path):
    from omegaconf import OmegaConf

    from ssah.config import compose

    node = compose("train", ["freeze=random_matched"]).freeze  # Hydra composes freeze.match
    assert node.match.spec == "scu_all_cu"
    fp = plan({**OmegaConf.to_container(node, resolve=True), "units": units}, tiny(), tmp_path)
    ref = plan(spec(units, categories=["SCU", "CU"]), tiny(), tmp_path / "ref")
    assert (
        fp.metrics["freeze/frozen_unit_params_fraction"]
        == ref.metrics["freeze/frozen_unit_params_fraction"]
    )
    assert fp.callbacks and isinstance(fp.callbacks[0], ExactFreeze)


def test_mask_file_follows_contract_5(units, tmp_path):
    model = tiny()
    plan(spec(units, categories=["SCU", "CU"]), model, tmp_path)
    want = expected_masks(model, units, categories=["SCU", "CU"])
    with safe_open(str(tmp_path / "freeze_mask.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert keys == {f"layers.{i}.{k}" for i in range(2) for k in KINDS}
        for i in range(2):
            for k in KINDS:
                t = f.get_tensor(f"layers.{i}.{k}")
                assert t.dtype == torch.bool and torch.equal(t, want[(i, k)])
        assert f.metadata()["spec"] == "t"


# ---- exact freezing, one process ------------------------------------------------------------
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_frozen_slices_stay_bit_identical(units, tmp_path, precision):
    model = tiny()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    fp = plan(spec(units, categories=["SCU", "CU"]), model, tmp_path)
    train(model, fp, precision=precision)
    fp.after_fit(model)
    check_exact(model, start, units, categories=["SCU", "CU"])
    assert fp.metrics["freeze/restored_steps"] == 4
    assert fp.metrics["freeze/verify_checks"] >= 4
    assert fp.metrics["freeze/max_undone_drift"] > 0  # weight decay tried to move them
    assert fp.metrics["freeze/saved_bytes"] == 4 * sum(
        e.saved.numel() for e in fp.callbacks[0].entries
    )


def test_ru_only_trains_only_redundant_units(units, tmp_path):
    model = tiny()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    fp = plan(spec(units, categories=["SCU", "UCU", "CU"], outside_units="freeze"), model, tmp_path)
    assert not model.model.embed_tokens.weight.requires_grad
    train(model, fp)
    fp.after_fit(model)
    check_exact(model, start, units, outside_frozen=True, categories=["SCU", "UCU", "CU"])
    assert 0.5 < fp.metrics["freeze/frozen_params_fraction"] < 1.0
    assert fp.metrics["freeze/trained_params_fraction"] == pytest.approx(
        1 - fp.metrics["freeze/frozen_params_fraction"]
    )


def test_zeroed_gradients_alone_drift_and_the_check_fails_loudly(units, tmp_path, monkeypatch):
    """Without the restore step AdamW's weight decay moves frozen entries; verification catches it."""

    def no_restore(self, optimizer, args, kwargs):
        self.steps += 1

    monkeypatch.setattr(ExactFreeze, "_after_step", no_restore)
    model = tiny()
    fp = plan(spec(units, categories=["SCU", "CU"]), model, tmp_path)
    with pytest.raises(FreezeDriftError, match="drifted"):
        train(model, fp)


def test_rewind_matches_its_definition(units, tmp_path):
    """rewind = unconstrained fine-tuning, then the selected slices copied back from the start."""
    import pytorch_lightning as pl

    pl.seed_everything(0, verbose=False)
    free = tiny()
    start = {n: p.detach().clone() for n, p in free.named_parameters()}
    fp_none = plan({"spec": "none", "mode": "none"}, free, tmp_path / "none")
    train(free, fp_none)
    pl.seed_everything(0, verbose=False)
    model = tiny()
    fp = plan(spec(units, mode="rewind", categories=["SCU", "CU"]), model, tmp_path / "rw")
    assert fp.callbacks == []
    train(model, fp)
    model = fp.after_fit(model)
    index, masks = UnitIndex(model), expected_masks(model, units, categories=["SCU", "CU"])
    expected = {n: p.detach().clone() for n, p in free.named_parameters()}
    for layer in range(index.num_layers):
        for kind in KINDS:
            for s in index.slices(layer, kind, masks[(layer, kind)]):
                expected[s.name].index_copy_(
                    s.dim, s.index, start[s.name].index_select(s.dim, s.index)
                )
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name]), name


def test_lora_baseline_trains_adapters_and_merges(tmp_path):
    model = tiny()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    fp = plan({"spec": "lora", "mode": "lora", "lora": {"r": 2}}, model, tmp_path)
    assert fp.model is not model and 0 < fp.metrics["lora/trainable_params_fraction"] < 0.5
    with torch.no_grad():  # PEFT inits B=0: nudge it so a couple of steps visibly move weights
        for n, p in fp.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    train(fp.model, fp, steps=2)
    merged = fp.after_fit(fp.model)
    assert type(merged) is LlamaForCausalLM
    params = dict(merged.named_parameters())
    assert set(params) == set(start)
    assert torch.equal(params["model.embed_tokens.weight"], start["model.embed_tokens.weight"])
    assert not torch.equal(
        params["model.layers.0.mlp.down_proj.weight"], start["model.layers.0.mlp.down_proj.weight"]
    )
    with safe_open(str(tmp_path / "freeze_mask.safetensors"), framework="pt") as f:
        assert not any(f.get_tensor(k).any() for k in f.keys())
