"""Fidelity to the authors' scoring (their lib/prune.py, structure "AL-AM"): head z-scores
from squared o_proj channel scores against a brute-force reference on a tiny GQA model, and
the units file's categories recomputed by independent numpy code from its stored z fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.numpy import load_file

from ssah.data.chat import collate
from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.scoring.calibration import batches
from ssah.scoring.categories import assign, unit_z
from ssah.scoring.pipeline import ScoringSettings
from ssah.scoring.scorers import ScorerConfig, score_channels
from ssah.scoring.stats import collect
from ssah.units import UnitIndex


def _rows(n: int = 13, seed: int = 2) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p, r = (
            int(torch.randint(2, 6, (1,), generator=g)),
            int(torch.randint(2, 9, (1,), generator=g)),
        )
        ids = torch.randint(3, 60, (p + r,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return out


def _inputs(model, idx: UnitIndex, data, masked: bool = True) -> dict[tuple[int, str], np.ndarray]:
    """Every response-token input of down_proj and o_proj, materialised (float64); with
    masked=False every position's."""
    b = collate(data, pad_id=0)
    keep = (b["labels"] != -100).flatten().numpy()
    acts: dict[tuple[int, str], np.ndarray] = {}
    hooks = []
    for layer in range(idx.num_layers):
        for w in ("down_proj", "o_proj"):

            def hook(_m, args, key=(layer, w)):
                x = args[0].detach().double().reshape(-1, args[0].shape[-1]).numpy()
                acts[key] = x[keep] if masked else x

            hooks.append(idx.module(model, layer, w).register_forward_pre_hook(hook))
    with torch.no_grad():
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    for h in hooks:
        h.remove()
    return acts


def _z(v: np.ndarray) -> np.ndarray:
    n = len(v)
    mean = sum(v) / n
    std = (sum((x - mean) ** 2 for x in v) / (n - 1)) ** 0.5
    return (v - mean) / std


def test_channel_z_then_head_mean_equals_brute_force_on_gqa() -> None:
    model = tiny_llama(64, hidden_size=32, heads=4, kv_heads=2, intermediate_size=24)
    idx = UnitIndex(model)
    assert idx.group_size == 2  # grouped-query attention
    data = _rows()
    sc = score_channels(model, idx, batches(data, 4, 0), ScorerConfig("wifv"))
    z = unit_z(idx, sc.unit, sc.channel, "squared_channels", 1)
    acts = _inputs(model, idx, data)
    for layer in range(idx.num_layers):
        # attention: raw WIFV per o_proj input channel, loops, no torch.var
        x = acts[(layer, "o_proj")]
        w = idx.module(model, layer, "o_proj").weight.detach().double().numpy()
        n = x.shape[0]
        raw = np.array(
            [
                sum((x[t, c] - x[:, c].mean()) ** 2 for t in range(n))
                / (n - 1)
                * (w[:, c] ** 2).sum()
                for c in range(x.shape[1])
            ]
        )
        np.testing.assert_allclose(sc.channel[layer].double().numpy(), raw, rtol=2e-5)
        zc = _z(raw**2)
        heads = np.array([zc[h * idx.head_dim : (h + 1) * idx.head_dim].mean() for h in range(4)])
        np.testing.assert_allclose(z[(layer, "attn")].double().numpy(), heads, rtol=1e-4, atol=1e-5)
        # MLP: z of the unsquared WIFV within the layer
        xm = acts[(layer, "down_proj")]
        wd = idx.module(model, layer, "down_proj").weight.detach().double().numpy()
        mlp = xm.var(axis=0, ddof=1) * (wd**2).sum(axis=0)
        np.testing.assert_allclose(
            z[(layer, "mlp")].double().numpy(), _z(mlp), rtol=1e-4, atol=1e-5
        )
    # the per-head option standardises the per-head means instead (a different order)
    zp = unit_z(idx, sc.unit, None, "per_head", 1)
    ref = _z(sc.unit[(0, "attn")].double().numpy())
    np.testing.assert_allclose(zp[(0, "attn")].double().numpy(), ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(zp[(0, "attn")].numpy(), z[(0, "attn")].numpy(), atol=1e-3)


def test_missing_channels_and_renamed_option_fail_in_one_line() -> None:
    model = tiny_llama(64)
    idx = UnitIndex(model)
    s = {(i, k): torch.rand(idx.num_units(k)) for i in range(2) for k in ("mlp", "attn")}
    with pytest.raises(SsahError, match="head_z=squared_channels needs the o_proj channel"):
        assign(idx, s, s, ScoringSettings.from_cfg(_settings()).ratios)
    with pytest.raises(SsahError, match="renamed mean_square"):
        ScorerConfig("wifv", "authors")
    with pytest.raises(SsahError, match="scoring.head_z='bogus'"):
        ScoringSettings.from_cfg(_settings(head_z="bogus"))


def _settings(**kw) -> dict:
    d = {
        "scorer": "wifv",
        "calibration": {"safety": {"source": "x"}, "utility": {"source": "y"}},
    }
    return d | kw


# ---- the units file: categories follow from the stored fields ---------------------------------
def independent_categories(path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """An outside check: z from the stored raw fields by the authors' rule, categories from
    the stored z by the ratio rule (parameter-weighted, RU, SCU, UCU, later overwriting)."""
    t = load_file(str(path))
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    ratios, units = json.loads(meta["ratios"]), json.loads(meta["units"])
    ddof = int(meta["zscore_ddof"])
    w_of = {"mlp": units["params_per_neuron"], "attn": units["params_per_head"]}
    zfromraw: dict[str, np.ndarray] = {}
    keys, zs, zu, w = [], [], [], []
    for i in range(units["num_layers"]):
        for kind in ("mlp", "attn"):
            for which in ("safety", "utility"):
                if kind == "mlp":
                    v = t[f"layers.{i}.mlp.{which}_score"].astype(np.float64)
                    zz = (v - v.mean()) / v.std(ddof=ddof)
                else:
                    c = t[f"layers.{i}.attn.channel_{which}_score"].astype(np.float64) ** 2
                    zc = (c - c.mean()) / c.std(ddof=ddof)
                    zz = zc.reshape(units["num_heads"], -1).mean(axis=1)
                zfromraw[f"layers.{i}.{kind}.{which}_z"] = zz
            zs.append(t[f"layers.{i}.{kind}.safety_z"].astype(np.float64))
            zu.append(t[f"layers.{i}.{kind}.utility_z"].astype(np.float64))
            w.append(np.full(len(zs[-1]), w_of[kind]))
            keys.append((f"layers.{i}.{kind}.category", len(zs[-1])))
    zs_, zu_, w_ = np.concatenate(zs), np.concatenate(zu), np.concatenate(w)

    def take(key: np.ndarray, ratio: float) -> np.ndarray:
        order = np.argsort(key, kind="stable")
        n = int((np.cumsum(w_[order]) <= ratio * w_.sum() + 1e-9).sum())
        m = np.zeros(len(key), bool)
        m[order[:n]] = True
        return m

    cat = np.full(len(w_), 3, np.uint8)
    cat[take(zs_ + zu_, ratios["ru"])] = 0
    cat[take(-(zs_ - zu_), ratios["scu"])] = 1
    cat[take(zs_ - zu_, ratios["ucu"])] = 2
    out, pos = {}, 0
    for name, n in keys:
        out[name] = cat[pos : pos + n]
        pos += n
    return out, zfromraw


@pytest.fixture(scope="module")
def units_path(tiny_toy, tmp_path_factory):
    from ssah.config import compose
    from ssah.score import run

    out = tmp_path_factory.mktemp("fid")
    ov = [
        "toy=tiny",
        "scoring.calibration.safety.require_keywords=[]",
        "scoring.calibration.safety.n_samples=24",
        "scoring.calibration.utility.n_samples=24",
        f"paths.score_cache={out / 'cache'}",
    ]
    run(compose("score", ov), out / "a")
    run(compose("score", ov + ["scoring.head_z=per_head"]), out / "p")
    return out


def test_units_file_categories_follow_from_stored_z(units_path) -> None:
    path = units_path / "a" / "units.safetensors"
    t = load_file(str(path))
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta["head_z"] == "squared_channels" and meta["format"] == "ssah-units/2"
    units = json.loads(meta["units"])
    assert t["layers.0.attn.channel_safety_score"].shape == (
        units["num_heads"] * units["head_dim"],
    )
    assert t["layers.0.attn.channel_utility_score"].dtype == np.float32
    assert t["layers.1.mlp.safety_z"].dtype == np.float32
    assert t["layers.1.attn.utility_z"].shape == (units["num_heads"],)
    # per-head scores are the mean of their channels (head_reduction=mean), head-major
    ch = t["layers.1.attn.channel_safety_score"].reshape(units["num_heads"], -1)
    np.testing.assert_allclose(t["layers.1.attn.safety_score"], ch.mean(axis=1), rtol=1e-5)
    cats, zraw = independent_categories(path)
    agree = sum(int((t[k] == v).sum()) for k, v in cats.items())
    total = sum(v.size for v in cats.values())
    assert agree == total  # 100%, not 99%
    for k, v in zraw.items():
        np.testing.assert_allclose(t[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_per_head_option_stores_its_own_z_and_changes_the_order(units_path) -> None:
    a = load_file(str(units_path / "a" / "units.safetensors"))
    p = load_file(str(units_path / "p" / "units.safetensors"))
    # same raw scores (the cache), different standardisation of heads only
    assert np.array_equal(a["layers.0.attn.safety_score"], p["layers.0.attn.safety_score"])
    assert np.array_equal(a["layers.0.mlp.safety_z"], p["layers.0.mlp.safety_z"])
    s = p["layers.0.attn.safety_score"].astype(np.float64)
    np.testing.assert_allclose(p["layers.0.attn.safety_z"], _z(s), rtol=1e-4, atol=1e-5)
    cats, _ = independent_categories(units_path / "p" / "units.safetensors")
    for k, v in cats.items():
        assert np.array_equal(p[k], v), k


def test_freeze_rankings_use_the_stored_z(units_path) -> None:
    """freeze extra_ranking / train_ranking rank by the units file's z (the authors' order),
    not by z re-derived from the per-head scores."""
    from ssah.config import compose
    from ssah.freeze import masks as M
    from ssah.freeze.unitsdata import read_units_for
    from ssah.models import ModelConfig, load_model

    cfg = compose("score", ["toy=tiny"])
    model = load_model(ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    path = units_path / "a" / "units.safetensors"
    units, idx = read_units_for(str(path), model, check_model=True)
    t = load_file(str(path))
    for how, want in (
        ("z_safety", lambda s, u: s),
        ("z_utility", lambda s, u: u),
        ("z_safety_minus_utility", lambda s, u: s - u),
    ):
        key = M.ranking_key(idx, units.safety, units.utility, how, 1).numpy()
        s = np.concatenate(
            [t[f"layers.{i}.{k}.safety_z"] for i in range(idx.num_layers) for k in ("mlp", "attn")]
        ).astype(np.float64)
        u = np.concatenate(
            [t[f"layers.{i}.{k}.utility_z"] for i in range(idx.num_layers) for k in ("mlp", "attn")]
        ).astype(np.float64)
        np.testing.assert_array_equal(key, want(s, u))
    # a file without z fields (older format) falls back to z of the stored scores
    raw = M.ranking_key(idx, _raw_safety(t, idx), _raw_safety(t, idx), "z_safety", 1)
    assert not np.allclose(
        raw.numpy(), M.ranking_key(idx, units.safety, units.utility, "z_safety", 1).numpy()
    )


def _raw_safety(t: dict, idx) -> dict:
    return {
        (i, k): torch.from_numpy(t[f"layers.{i}.{k}.safety_score"].copy())
        for i in range(idx.num_layers)
        for k in ("mlp", "attn")
    }


# ---- the authors' running variance (lib/layerwrapper.py BiasGPT, FLAP's fluc_inp) ----------
class _AuthorsBiasGPT:
    """Their add_batch for WIFV, line for line (float64 here), one sample per call."""

    def __init__(self, in_dim: int) -> None:
        self.nsamples = 0
        self.baseline_inp = torch.zeros(in_dim, dtype=torch.float64)
        self.fluc_inp = torch.zeros(in_dim, dtype=torch.float64)

    def add_batch(self, inp: torch.Tensor, tar: torch.Tensor) -> None:
        inp, tar = inp.unsqueeze(0), tar.unsqueeze(0)
        mask = tar.ne(-100)
        batch_size = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp[mask.flatten()].t()
        old_baseline_inp = self.baseline_inp
        self.baseline_inp *= self.nsamples / (self.nsamples + batch_size)
        self.baseline_inp += torch.mean(inp, dim=1) / (self.nsamples + batch_size)
        if self.nsamples == 0:
            self.fluc_inp = 0
        else:
            self.fluc_inp *= (self.nsamples - 1) / (self.nsamples + batch_size - 1)
            self.fluc_inp += torch.sum(
                (inp - self.baseline_inp.unsqueeze(1)) * (inp - old_baseline_inp.unsqueeze(1)),
                dim=1,
            ) / (self.nsamples + batch_size)
        self.nsamples += batch_size


def test_running_variance_is_the_authors_fluc_inp() -> None:
    from ssah.scoring.pipeline import scorer_fields
    from ssah.scoring.stats import running_fluc

    model = tiny_llama(60, hidden_size=32, heads=4, kv_heads=2, intermediate_size=24)
    idx = UnitIndex(model)
    data = _rows(9)
    data.insert(4, {"input_ids": [5, 6, 7], "labels": [-100] * 3})  # no response: skipped
    # The inputs of the padded batches running_fluc runs (a row's float32 activations alone
    # may differ in the last bit from the same row's in a batch: a CI run read 2e-9 relative),
    # so what is compared is the statistic, fed in their order: one sample at a time.
    size = 4
    own = []  # each row's inputs at its own positions (not the padding), from its batch
    for s in range(0, len(data), size):
        chunk = data[s : s + size]
        acts = _inputs(model, idx, chunk, masked=False)
        for j, row in enumerate(chunk):
            width = len(row["input_ids"])
            own.append(
                {k: a.reshape(len(chunk), -1, a.shape[-1])[j, :width] for k, a in acts.items()}
            )
    want = {}
    for layer in range(idx.num_layers):
        for w in ("down_proj", "o_proj"):
            ref = _AuthorsBiasGPT(idx.module(model, layer, w).in_features)
            for row, x in zip(data, own, strict=True):
                if any(t != -100 for t in row["labels"]):
                    ref.add_batch(torch.from_numpy(x[(layer, w)]), torch.tensor(row["labels"]))
            want[(layer, w)] = ref.fluc_inp
    got = running_fluc(model, idx, batches(data, size, pad_id=0, sort_by_length=False))
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-9, atol=1e-12)
    sample = {k: s.variance() for k, s in collect(model, idx, batches(data, 4, 0)).stats.items()}
    assert not torch.allclose(sample[(0, "o_proj")], got[(0, "o_proj")])  # another estimate
    # sorted batches change the order, so the running estimate (not the sample variance)
    resorted = running_fluc(model, idx, batches(data, 4, pad_id=0, sort_by_length=True))
    assert not torch.allclose(resorted[(0, "o_proj")], got[(0, "o_proj")])
    assert "variance" not in scorer_fields(ScorerConfig())  # old cache keys stay valid
    assert scorer_fields(ScorerConfig(variance="running"))["variance"] == "running"
    with pytest.raises(SsahError, match="scoring.variance='flap'"):
        ScorerConfig(variance="flap")
