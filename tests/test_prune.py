"""Pruning: which units go (categories, top-k, random matched), exact zeroing, FLAP bias
compensation, and the stage on the tiny toy world."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForCausalLM

from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.reporting.pruning import table_markdown
from ssah.scoring.categories import Ratios, assign, unit_z
from ssah.scoring.pruning import PruneConfig, choose, compensation_biases, zero_units
from ssah.scoring.stats import collect
from ssah.units import KINDS, UnitIndex


def tiny() -> LlamaForCausalLM:
    return tiny_llama(50, intermediate_size=48, pad_token_id=None, max_position_embeddings=64)


def data(n: int = 6) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 50, (n, 12), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100
    return [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}]


def scores(idx: UnitIndex, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        (i, k): torch.rand(idx.num_units(k), generator=g)
        for i in range(idx.num_layers)
        for k in KINDS
    }


def test_choose_targets() -> None:
    idx = UnitIndex(tiny())
    s0, u0 = scores(idx, 1), scores(idx, 2)
    cat = idx.unflatten(assign(idx, s0, u0, Ratios(0.1, 0.05, 0.1), head_z="per_head").category)
    s, u = unit_z(idx, s0, head_z="per_head"), unit_z(idx, u0, head_z="per_head")
    w, total = idx.flat_weights(), idx.total_params()
    scu = idx.flatten(choose(PruneConfig("scu"), idx, cat, s, u))
    assert torch.equal(scu, idx.flatten(cat) == 1)
    assert not idx.flatten(choose(PruneConfig("dense"), idx, cat, s, u)).any()
    rnd = idx.flatten(
        choose(PruneConfig("random", random={"match": "scu", "seed": 3}), idx, cat, s, u)
    )
    assert abs(float(w[rnd].sum() - w[scu].sum())) < idx.unit_weight("mlp")  # within a neuron
    assert not torch.equal(rnd, scu)
    top = choose(PruneConfig("topk", topk={"score": "safety", "ratio": 0.02}), idx, cat, s, u)
    flat = idx.flatten(top)
    assert 0.02 * total - idx.unit_weight("attn") < float(w[flat].sum()) <= 0.02 * total
    zs = idx.flatten(s)
    assert float(zs[flat].min()) >= float(zs[~flat].max()) - 1e-6 or flat.sum() == 0
    with pytest.raises(SsahError, match="target='bogus'"):
        PruneConfig("bogus")


def test_zeroing_and_flap_compensation_equal_mean_replacement() -> None:
    model, batch = tiny(), data()
    idx = UnitIndex(model)
    masks = {
        (i, k): torch.zeros(idx.num_units(k), dtype=torch.bool) for i in range(2) for k in KINDS
    }
    masks[(0, "mlp")][[1, 7, 30]] = True
    masks[(1, "attn")][[0, 1]] = True  # a whole kv group
    means = {k: st.mean for k, st in collect(model, idx, batch).stats.items()}
    # reference: the removed channels' inputs replaced by their mean
    ref_model = copy.deepcopy(model)
    hooks = []
    for (layer, kind), m in masks.items():
        if not m.any():
            continue
        which = idx.second_matrix(kind)
        ch = m.nonzero().flatten() if kind == "mlp" else idx.head_channels(m.nonzero().flatten())

        mu = means[(layer, which)][ch].float()

        def hook(_m, a, ch=ch, mu=mu):
            x = a[0].clone()
            x[..., ch] = mu
            return (x,)

        hooks.append(idx.module(ref_model, layer, which).register_forward_pre_hook(hook))
    with torch.no_grad():
        ref = ref_model(batch[0]["input_ids"]).logits
    zero_units(model, idx, masks, compensation_biases(model, idx, masks, means))
    with torch.no_grad():
        got = model(batch[0]["input_ids"]).logits
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert (idx.module(model, 0, "down_proj").weight[:, [1, 7, 30]] == 0).all()
    assert (idx.module(model, 1, "k_proj").weight[:8] == 0).all()  # kv head 0 fully pruned
    assert (idx.module(model, 1, "k_proj").weight[8:] != 0).all()


def test_table_markdown_lists_targets() -> None:
    rows = [
        {"target": "dense", "prune/units_fraction": 0.0, "utility/ppl": 3.0},
        {"target": "scu", "prune/units_fraction": 0.01, "utility/ppl": 4.5},
    ]
    md = table_markdown(rows)
    assert "| - SCU | 1.0 | 4.50 |" in md and md.startswith("| model | units % | PPL |")


@pytest.mark.slow
def test_prune_stage_on_tiny_toy(tiny_toy, tmp_path) -> None:
    from ssah.config import compose
    from ssah.prune import run

    ov = [
        "toy=tiny",
        "scoring.calibration.safety.require_keywords=[]",
        "scoring.calibration.safety.n_samples=24",
        "scoring.calibration.utility.n_samples=24",
        "eval.suites.jailbreak=null",
        "eval.suites.prefill=null",
        "eval.utility.mc=null",
        "eval.benign=null",
        "eval.utility.generation.data.limit=8",
        "eval.utility.ppl.data.limit=8",
    ]
    m = run(
        compose("prune", ov + ["target=random", "random.match=0.2", "bias_compensation=true"]),
        tmp_path / "p",
    )
    assert m["prune/params_fraction"] == pytest.approx(0.2, abs=0.05)
    assert "safety/asr/direct/keyword" in m and "safety/asr/direct_sys/keyword" in m
    assert "utility/ppl" in m and "utility/accuracy" in m
    assert (tmp_path / "p" / "metrics.json").is_file()
    units = tmp_path / "p" / "units.safetensors"
    with pytest.raises(SsahError, match="not for the loaded model"):
        run(compose("prune", ov + ["model=toy_base", f"units={units}"]), tmp_path / "q")


@pytest.mark.slow
def test_bias_compensation_defaults_to_the_safety_set(tiny_toy, tmp_path, monkeypatch) -> None:
    """As the authors' lib/prune.py: means of the removed channels from the safety set; the
    biases the stage adds are exactly W[:, removed] @ those means."""
    import ssah.prune as P
    from ssah.config import compose

    assert P.PruneConfig().compensation_data == "safety"
    t1 = compose("prune", ["toy=tiny", "+experiment=table1_pruning"])
    assert t1.bias_compensation is True and t1.compensation_data == "safety"
    assert t1.compensation_mean == "sample" and P.PruneConfig().compensation_mean == "sample"
    asked, added = [], {}
    real_means, real_bias = P._mean_inputs, P.compensation_biases

    def means(cfg, model, tok, index, which, how):
        asked.append((which, how))
        out = real_means(cfg, model, tok, index, which, how)
        added["means"] = out
        return out

    def biases(model, index, masks, mean_inputs):
        out = real_bias(model, index, masks, mean_inputs)
        w = {k: index.module(model, *k).weight.detach().double().clone() for k in out}
        added.update(model=model, index=index, masks=masks, biases=out, weights=w)
        return out

    monkeypatch.setattr(P, "_mean_inputs", means)
    monkeypatch.setattr(P, "compensation_biases", biases)
    ov = [
        "toy=tiny",
        "scoring.calibration.safety.require_keywords=[]",
        "scoring.calibration.safety.n_samples=24",
        "scoring.calibration.utility.n_samples=24",
        "target=random",
        "random.match=0.2",
        "bias_compensation=true",
        "evaluate=false",
    ]
    P.run(compose("prune", ov), tmp_path / "s")
    P.run(
        compose("prune", ov + ["compensation_data=utility", "compensation_mean=token"]),
        tmp_path / "u",
    )
    assert asked == [("safety", "sample"), ("utility", "token")]
    # the last run's biases: removed columns of B times the utility set's mean inputs
    idx, masks, b = added["index"], added["masks"], added["biases"]
    assert b, "random 20% must remove something"
    for (layer, which), bias in b.items():
        kind = "mlp" if which == "down_proj" else "attn"
        m = masks[(layer, kind)].nonzero().flatten()
        ch = m if kind == "mlp" else idx.head_channels(m)
        mu = added["means"][(layer, which)].double()
        want = added["weights"][(layer, which)][:, ch] @ mu[ch]  # before zeroing
        torch.testing.assert_close(bias.double(), want)
        mod = idx.module(added["model"], layer, which)
        assert (mod.weight[:, ch] == 0).all()
        torch.testing.assert_close(mod.bias.double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(SsahError, match="compensation_data='train'"):
        P.PruneConfig(compensation_data="train")


def test_sample_means_are_means_of_per_sample_response_means() -> None:
    """FLAP's / the authors' baseline_inp: every sample weighs the same, whatever its length."""
    from ssah.data.chat import collate
    from ssah.scoring.stats import sample_means

    model = tiny()
    idx = UnitIndex(model)
    g = torch.Generator().manual_seed(3)
    rows = []
    for p, r in ((3, 1), (2, 7), (4, 3), (5, 0)):  # the last has no response token: skipped
        ids = torch.randint(3, 50, (p + r,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    got = sample_means(model, idx, [collate(rows[:2], 0), collate(rows[2:], 0)])
    per_sample = []
    for row in rows[:3]:  # each row alone, no padding
        b = collate([row], 0)
        st = collect(model, idx, [b]).stats
        per_sample.append({k: s.mean for k, s in st.items()})
    for key, v in got.items():
        ref = sum(ps[key] for ps in per_sample) / 3
        torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-7)
    token = {k: s.mean for k, s in collect(model, idx, [collate(rows, 0)]).stats.items()}
    assert not torch.allclose(token[(0, "o_proj")], got[(0, "o_proj")])  # a different estimate
