"""Category assignment: planted ground truth, shares vs ratios, partition, ties, and the
byte-reproducible units file with its model check."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM

from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.scoring.categories import CU, RU, SCU, UCU, Ratios, assign, select, summary, zscore
from ssah.scoring.scorers import ScorerConfig, score_channels
from ssah.scoring.unitsfile import model_digest, read_units, write_units
from ssah.units import KINDS, UnitIndex

HIDDEN, INTER, VOCAB = 32, 40, 64
SAFE_TOKENS = list(range(40, 64))  # tokens only safety responses use
PLANTED = {0: [5, 17], 1: [3, 29, 38]}  # layer -> neurons that fire only on them
DECOYS = {0: [9], 1: [12]}  # loud on all data: high I_S but also high I_U, so not SCU


def planted_model() -> LlamaForCausalLM:
    """Hidden dim 0 is 'this is a safety-response token'; planted neurons read only dim 0.

    Attention is switched off (o_proj = 0) and no MLP writes to dim 0, so dim 0 of every
    layer's input is the embedding's. Planted neurons are silent (exactly 0) on other tokens.
    """
    m = tiny_llama(
        VOCAB, HIDDEN, intermediate_size=INTER, pad_token_id=None, max_position_embeddings=64
    )
    with torch.no_grad():
        emb = m.model.embed_tokens.weight
        emb.normal_(0.0, 1.0)
        emb[:, 0] = 0
        emb[SAFE_TOKENS, 0] = torch.linspace(1.0, 4.0, len(SAFE_TOKENS))
        for layer, neurons in PLANTED.items():
            mlp = m.model.layers[layer].mlp
            mlp.gate_proj.weight[:, 0] = 0
            mlp.up_proj.weight[:, 0] = 0
            for j in neurons:
                mlp.gate_proj.weight[j] = 0
                mlp.up_proj.weight[j] = 0
                mlp.gate_proj.weight[j, 0] = 0.1
                mlp.up_proj.weight[j, 0] = 0.1
                mlp.down_proj.weight[:, j] *= 5.0
        for layer, neurons in DECOYS.items():
            m.model.layers[layer].mlp.up_proj.weight[neurons] *= 100.0
        for blk in m.model.layers:
            blk.self_attn.o_proj.weight.zero_()
            blk.mlp.down_proj.weight[0] = 0
    return m


def batch(response_tokens: list[int], n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, 40, (n, 4), generator=g)
    resp = torch.tensor(response_tokens)[
        torch.randint(0, len(response_tokens), (n, 6), generator=g)
    ]
    ids = torch.cat([prompt, resp], 1)
    labels = ids.clone()
    labels[:, :4] = -100
    return [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}]


def test_planted_safety_neurons_are_exactly_the_scu(scorer: str = "wifv") -> None:
    """WIFV (the default) + categorisation recover the planted neurons, not the loud decoys."""
    model = planted_model()
    idx = UnitIndex(model)
    cfg = ScorerConfig(scorer)
    sc = score_channels(model, idx, batch(SAFE_TOKENS + list(range(3, 40)), 16, 0), cfg)
    uc = score_channels(model, idx, batch(list(range(3, 40)), 16, 1), cfg)
    s, u = sc.unit, uc.unit
    n_planted = sum(len(v) for v in PLANTED.values())
    b = n_planted * idx.unit_weight("mlp") / idx.total_params()
    asg = assign(idx, s, u, Ratios(ru=0.1, scu=b, ucu=0.1), 1, sc.channel, uc.channel)
    cat = idx.unflatten(asg.category)
    for layer in range(2):
        got = (cat[(layer, "mlp")] == SCU).nonzero().flatten().tolist()
        assert got == PLANTED[layer], (scorer, layer, got)
        assert not (cat[(layer, "attn")] == SCU).any()
    top_safety = [int(s[(layer, "mlp")].argmax()) for layer in range(2)]
    assert top_safety == [DECOYS[0][0], DECOYS[1][0]]  # "highest I_S" alone would be wrong


def random_scores(idx: UnitIndex, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        (i, k): torch.rand(idx.num_units(k), generator=g)
        for i in range(idx.num_layers)
        for k in KINDS
    }


def tiny_index(layers: int = 3) -> UnitIndex:
    m = tiny_llama(
        32, layers=layers, intermediate_size=96, pad_token_id=None, max_position_embeddings=16
    )
    return UnitIndex(m.train())


@pytest.mark.parametrize(
    "ratios", [(0.10, 0.01, 0.10), (0.2, 0.05, 0.3), (0.0, 0.5, 0.5), (1.0, 0.0, 0.0)]
)
def test_shares_match_ratios_within_one_unit_and_categories_partition(ratios) -> None:
    idx = tiny_index()
    r = Ratios(*ratios)
    asg = assign(idx, random_scores(idx, 1), random_scores(idx, 2), r, head_z="per_head")
    w, total = idx.flat_weights(), idx.total_params()
    biggest = max(idx.unit_weight(k) for k in KINDS)
    for name, ratio in (("ru", r.ru), ("scu", r.scu), ("ucu", r.ucu)):
        share = float(w[asg.selected[name]].sum())
        assert ratio * total - biggest < share <= ratio * total + 1e-6, name
    cat = asg.category
    assert cat.dtype == torch.uint8 and set(cat.unique().tolist()) <= {RU, SCU, UCU, CU}
    # order: UCU overrides SCU overrides RU; CU exactly the unselected
    assert torch.equal(cat == UCU, asg.selected["ucu"])
    assert torch.equal(cat == SCU, asg.selected["scu"] & ~asg.selected["ucu"])
    assert torch.equal(cat == RU, asg.selected["ru"] & ~asg.selected["scu"] & ~asg.selected["ucu"])
    summ = summary(idx, asg)
    assert sum(summ["units_share"].values()) == pytest.approx(1.0)
    assert sum(summ["params_share"].values()) == pytest.approx(1.0)
    assert len(summ["per_layer"]) == 3
    for row in summ["per_layer"]:
        assert sum(row["params"].values()) == pytest.approx(1.0)


def test_ties_break_by_flat_order_and_z_is_per_layer_and_kind() -> None:
    key = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    w = torch.ones(5, dtype=torch.float64)
    assert select(key, w, 0.4, highest=True).tolist() == [True, False, True, False, False]
    assert select(key, w, 0.4, highest=False).tolist() == [False, True, False, True, False]
    assert zscore(torch.ones(4)).tolist() == [0, 0, 0, 0]
    x = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(zscore(x), torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    # scaling one layer's scores must not change anything (z within layer and kind)
    idx = tiny_index(2)
    s, u = random_scores(idx, 3), random_scores(idx, 4)
    a = assign(idx, s, u, Ratios(), head_z="per_head")
    s2 = {k: v * (1000.0 if k == (1, "mlp") else 1.0) for k, v in s.items()}
    assert torch.equal(a.category, assign(idx, s2, u, Ratios(), head_z="per_head").category)


def test_ratio_outside_unit_interval_is_refused() -> None:
    with pytest.raises(SsahError, match=r"ratios.scu=1.5"):
        Ratios(scu=1.5)


def test_units_file_is_byte_identical_and_follows_contract_4(tmp_path) -> None:
    idx = tiny_index(2)
    s, u = random_scores(idx, 5), random_scores(idx, 6)
    cat = idx.unflatten(assign(idx, s, u, Ratios(), head_z="per_head").category)
    meta = {
        "model": "m",
        "model_hash": "sha256:x",
        "scorer": "wifv",
        "calibration_hashes": json.dumps({"safety": "a", "utility": "b"}),
        "ratios": json.dumps({"ru": 0.1, "scu": 0.01, "ucu": 0.1}),
    }
    p1 = write_units(tmp_path / "a.safetensors", idx, s, u, cat, meta)
    p2 = write_units(tmp_path / "b.safetensors", idx, s, u, cat, dict(reversed(meta.items())))
    assert p1.read_bytes() == p2.read_bytes()
    with safe_open(str(p1), framework="pt") as f:
        md = f.metadata()
        assert {"model", "scorer", "calibration_hashes", "ratios"} <= set(md)
        assert f.get_tensor("layers.1.mlp.safety_score").dtype == torch.float32
        assert f.get_tensor("layers.0.attn.category").dtype == torch.uint8
        assert f.get_tensor("layers.0.attn.utility_score").shape == (4,)
        assert f.get_tensor("layers.1.mlp.category").shape == (96,)
    uf = read_units(p1, idx)
    assert torch.equal(uf.category[(1, "attn")], cat[(1, "attn")])
    with pytest.raises(SsahError, match="not for the loaded model"):
        uf.check_model("sha256:other", p1)


def test_model_digest_sees_weights_not_paths() -> None:
    m = tiny_llama(
        32,
        16,
        layers=1,
        heads=2,
        kv_heads=1,
        intermediate_size=24,
        pad_token_id=None,
        max_position_embeddings=16,
    ).train()
    d = model_digest(m)
    m.config._name_or_path = "/somewhere/else"
    assert model_digest(m) == d
    with torch.no_grad():
        m.model.layers[0].mlp.down_proj.weight[0, 0] += 1e-3
    assert model_digest(m) != d
