"""Scorers against brute-force references (all activations materialised, torch.var,
autograd), streaming invariance, and O(units) state."""

from __future__ import annotations

import pytest
import torch

from ssah.data.chat import collate
from ssah.eval.tiny import tiny_llama
from ssah.scoring.calibration import batches
from ssah.scoring.scorers import ScorerConfig, reduce_heads, score
from ssah.scoring.stats import InputStats, collect
from ssah.units import KINDS, UnitIndex


def tiny(qwen: bool = False) -> torch.nn.Module:
    """2 layers, hidden 32, 4 query heads over 2 kv heads, 24 neurons (seed 0)."""
    arch = "qwen2" if qwen else "llama"
    return tiny_llama(
        50, intermediate_size=24, pad_token_id=None, max_position_embeddings=64, model_type=arch
    )


def rows(n: int = 11, seed: int = 1) -> list[dict[str, list[int]]]:
    """Prompt/response rows of varied lengths; labels -100 on the prompt."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p = int(torch.randint(2, 7, (1,), generator=g))
        r = int(torch.randint(1, 9, (1,), generator=g))
        ids = torch.randint(3, 50, (p + r,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return out


def materialise(model, idx, data, which=("down_proj", "o_proj")):
    """All response-token inputs of each module, one batch holding every row."""
    b = collate(data, pad_id=0)
    keep = (b["labels"] != -100).flatten()
    acts: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for layer in range(idx.num_layers):
        for w in which:

            def hook(_m, args, key=(layer, w)):
                x = args[0]
                acts[key] = x.reshape(-1, x.shape[-1])[keep].double()

            hooks.append(idx.module(model, layer, w).register_forward_pre_hook(hook))
    with torch.no_grad():
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    for h in hooks:
        h.remove()
    return acts


def W(model, idx, layer, which) -> torch.Tensor:
    return idx.module(model, layer, which).weight.detach().double()


def rel_close(got: dict, ref: dict) -> None:
    for k in ref:
        g, r = got[k].double(), ref[k].double()
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-5 * float(r.abs().max())), k


@pytest.mark.parametrize("qwen", [False, True])
@pytest.mark.parametrize("how", ["mean", "mean_square"])
def test_wifv_matches_brute_force(qwen: bool, how: str) -> None:
    model, data = tiny(qwen), rows()
    idx = UnitIndex(model)
    acts = materialise(model, idx, data)
    ref = {}
    for layer in range(idx.num_layers):
        for kind in KINDS:
            which = idx.second_matrix(kind)
            ch = torch.var(acts[(layer, which)], dim=0) * (W(model, idx, layer, which) ** 2).sum(0)
            if kind == "attn":
                per = ch.reshape(4, 8)
                ch = per.mean(1) if how == "mean" else (per**2).mean(1)
            ref[(layer, kind)] = ch
    got = score(model, idx, batches(data, 3, 0), ScorerConfig("wifv", how))
    rel_close(got, ref)
    assert all(
        v.dtype == torch.float32 and v.shape == (idx.num_units(k[1]),) for k, v in got.items()
    )


def test_wanda_matches_brute_force() -> None:
    model, data = tiny(), rows()
    idx = UnitIndex(model)
    acts = materialise(model, idx, data, ("gate_proj", "down_proj", "q_proj", "o_proj"))
    ref = {}
    for layer in range(idx.num_layers):
        norm = {
            w: acts[(layer, w)].norm(dim=0) for w in ("gate_proj", "down_proj", "q_proj", "o_proj")
        }
        mlp, attn = torch.zeros(24, dtype=torch.float64), torch.zeros(32, dtype=torch.float64)
        for j in range(24):  # per unit: sum over every weight it owns of |W| * ||input||
            mlp[j] = (W(model, idx, layer, "gate_proj")[j].abs() * norm["gate_proj"]).sum()
            mlp[j] += (W(model, idx, layer, "up_proj")[j].abs() * norm["gate_proj"]).sum()
            mlp[j] += (W(model, idx, layer, "down_proj")[:, j].abs() * norm["down_proj"][j]).sum()
        for c in range(32):
            attn[c] = (W(model, idx, layer, "q_proj")[c].abs() * norm["q_proj"]).sum()
            attn[c] += (W(model, idx, layer, "o_proj")[:, c].abs() * norm["o_proj"][c]).sum()
        ref[(layer, "mlp")], ref[(layer, "attn")] = mlp, attn.reshape(4, 8).mean(1)
    rel_close(score(model, idx, batches(data, 4, 0), ScorerConfig("wanda")), ref)


def test_snip_matches_autograd_per_unit() -> None:
    model, data = tiny(), rows()
    idx = UnitIndex(model)
    b = collate(data, pad_id=0)  # everything in one batch: mean loss over response targets
    loss = model(**{k: b[k] for k in ("input_ids", "attention_mask", "labels")}).loss
    params = dict(model.named_parameters())
    names = sorted(idx.unit_param_names() - {n for n in params if "k_proj" in n or "v_proj" in n})
    grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))
    ref = {}
    for layer in range(idx.num_layers):
        for kind in KINDS:
            vals = []
            for u in range(idx.num_units(kind)):
                one = torch.zeros(idx.num_units(kind), dtype=torch.bool)
                one[u] = True
                tot = 0.0
                for s in idx.slices(layer, kind, one):
                    if s.name in grads:
                        w = params[s.name].detach().double().index_select(s.dim, s.index)
                        g = grads[s.name].double().index_select(s.dim, s.index)
                        tot += float((w * g).abs().sum())
                vals.append(tot / (8 if kind == "attn" else 1))  # mean over a head's channels
            ref[(layer, kind)] = torch.tensor(vals, dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in model.parameters()]
    got = score(model, idx, batches(data, 4, 0), ScorerConfig("snip"))
    rel_close(got, ref)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_contrast_is_mean_abs_activation() -> None:
    model, data = tiny(), rows()
    idx = UnitIndex(model)
    acts = materialise(model, idx, data)
    got = score(model, idx, batches(data, 5, 0), ScorerConfig("contrast"))
    ref = {(i, "mlp"): acts[(i, "down_proj")].abs().mean(0) for i in range(2)}
    ref |= {(i, "attn"): acts[(i, "o_proj")].abs().mean(0).reshape(4, 8).mean(1) for i in range(2)}
    rel_close(got, ref)


def test_streaming_stats_do_not_depend_on_batching_and_stay_o_units() -> None:
    model, data = tiny(), rows(40)
    idx = UnitIndex(model)
    a = collect(model, idx, batches(data, 1, 0, sort_by_length=False))
    b = collect(model, idx, batches(data, 40, 0))
    for k in a.stats:
        assert (
            a.stats[k].n == b.stats[k].n == sum(sum(x != -100 for x in r["labels"]) for r in data)
        )
        torch.testing.assert_close(
            a.stats[k].variance(), b.stats[k].variance(), rtol=1e-6, atol=1e-12
        )
        # state is O(channels): three length-C float64 vectors, whatever the token count
        sizes = [t.numel() for t in vars(a.stats[k]).values() if isinstance(t, torch.Tensor)]
        assert sizes == [idx.channels("mlp" if k[1] == "down_proj" else "attn")] * 2
    assert isinstance(a, InputStats)
    # hooks are gone afterwards
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_random_scores_are_seeded_and_streams_differ() -> None:
    model = tiny()
    idx = UnitIndex(model)
    s0 = score(model, idx, [], ScorerConfig("random", seed=3), stream=0)
    again = score(model, idx, [], ScorerConfig("random", seed=3), stream=0)
    s1 = score(model, idx, [], ScorerConfig("random", seed=3), stream=1)
    assert all(torch.equal(s0[k], again[k]) for k in s0)
    assert not torch.equal(s0[(0, "mlp")], s1[(0, "mlp")])


def test_head_reduction_sum_is_mean_times_head_dim() -> None:
    idx = UnitIndex(tiny())
    ch = torch.arange(32, dtype=torch.float64)
    torch.testing.assert_close(reduce_heads(ch, idx, "sum"), 8 * reduce_heads(ch, idx, "mean"))


def test_bench_ratio_smoke() -> None:
    from ssah.bench.scoring import random_batches, scoring_vs_forward

    model = tiny()
    r = scoring_vs_forward(model, [random_batches(4, 16, 2, 50)], pairs=1)
    assert r["counted_tokens"] == 32 and r["scoring_s"] > 0 and r["forward_s"] > 0
    assert r["scoring_vs_forward_ratio"] == pytest.approx(r["scoring_s"] / r["forward_s"])
