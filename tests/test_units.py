"""UnitIndex: parameter slices of neurons and heads (contract 5), GQA, per-unit weights."""

from __future__ import annotations

import pytest
import torch

from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.units import KINDS, ModuleNames, UnitIndex

ARCHS = ("llama", "mistral", "qwen2")


def tiny(arch: str) -> torch.nn.Module:
    """2 layers, hidden 32, 4 query heads over 2 kv heads, 24 neurons (seed 0)."""
    model = tiny_llama(
        64, intermediate_size=24, pad_token_id=None, max_position_embeddings=32, model_type=arch
    )
    with torch.no_grad():  # Qwen2 biases start at zero; make them matter
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def logits(model, ids, zero_inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Forward; `zero_inputs` zeroes input channels of the named modules (the reference)."""
    handles = []
    for name, chans in (zero_inputs or {}).items():

        def hook(_m, args, chans=chans):
            x = args[0].clone()
            x[..., chans] = 0
            return (x,)

        handles.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for h in handles:
            h.remove()


def zeroed(model, slices) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for s in slices:
            params[s.name].index_fill_(s.dim, s.index, 0.0)
    return m


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_zeroing_a_units_slices_removes_exactly_its_channels(arch: str) -> None:
    model = tiny(arch)
    idx = UnitIndex(model)
    assert (idx.num_heads, idx.num_kv_heads, idx.group_size) == (4, 2, 2)
    ids = torch.randint(0, 64, (2, 7))
    # MLP neurons 3 and 17 of layer 1 == their down_proj input channels zeroed
    mask = torch.zeros(24, dtype=torch.bool)
    mask[[3, 17]] = True
    got = logits(zeroed(model, idx.slices(1, "mlp", mask)), ids)
    ref = logits(model, ids, {idx.module_name(1, "down_proj"): torch.tensor([3, 17])})
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, logits(model, ids))
    # heads 0 and 1 form kv group 0: their k/v rows go too, and nothing else changes
    heads = torch.tensor([True, True, False, True])
    sl = {s.name.rsplit(".", 2)[-2]: s for s in idx.slices(0, "attn", heads) if "weight" in s.name}
    assert sl["k_proj"].index.tolist() == list(range(8))  # group 0 only (head_dim 8)
    assert sl["q_proj"].index.tolist() == list(range(16)) + list(range(24, 32))
    got = logits(zeroed(model, idx.slices(0, "attn", heads)), ids)
    chans = idx.head_channels(heads.nonzero().flatten())
    ref = logits(model, ids, {idx.module_name(0, "o_proj"): chans})
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_units_partition_block_parameters_and_weights_add_up(arch: str) -> None:
    model = tiny(arch)
    idx = UnitIndex(model)
    params = dict(model.named_parameters())
    owned = idx.unit_param_names()
    counted = {n: torch.zeros_like(params[n], dtype=torch.int32) for n in owned}
    for layer in range(idx.num_layers):
        for kind in KINDS:
            for u in range(idx.num_units(kind)):
                one = torch.zeros(idx.num_units(kind), dtype=torch.bool)
                one[u] = True
                for s in idx.slices(layer, kind, one):
                    counted[s.name].index_fill_(s.dim, s.index, 1)  # marks (no k/v for 1 head)
    for n, c in counted.items():
        if "k_proj" in n or "v_proj" in n:
            assert c.sum() == 0  # a single head never owns a shared k/v head
        else:
            assert c.all(), n  # every entry of q/o/gate/up/down belongs to some unit
    total = sum(params[n].numel() for n in owned)
    assert idx.total_params() == pytest.approx(total)
    has_bias = arch == "qwen2"
    assert any(n.endswith("q_proj.bias") for n in owned) == has_bias
    hd, h = 8, 32
    assert idx.unit_weight("mlp") == 3 * h
    assert idx.unit_weight("attn") == pytest.approx(
        2 * hd * h + (2 * hd * h) / 2 + has_bias * 2 * hd
    )


def test_flat_order_round_trips() -> None:
    idx = UnitIndex(tiny("llama"))
    per = {(i, k): torch.arange(idx.num_units(k)) + 100 * i for i in range(2) for k in KINDS}
    flat = idx.flatten(per)
    assert flat.numel() == idx.total_units() == 2 * (24 + 4)
    assert flat[24:28].tolist() == [0, 1, 2, 3]  # layer 0: mlp first, then heads
    back = idx.unflatten(flat)
    assert all(torch.equal(back[k], per[k]) for k in per)


def test_module_names_from_config_and_overrides() -> None:
    model = tiny("qwen2")
    assert ModuleNames.for_model(model) == ModuleNames()
    with pytest.raises(SsahError, match="unknown"):
        ModuleNames.for_model(model, {"mlp_out": "x"})
    with pytest.raises(SsahError, match="down_proj"):
        UnitIndex(model, overrides={"down_proj": "mlp.c_proj"})
    model.config.num_key_value_heads = 3
    with pytest.raises(SsahError, match="multiple"):
        UnitIndex(model)
