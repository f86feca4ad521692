"""`ssah.score` end to end on the tiny toy world: contract-4 file, cache reuse, byte-identical
reruns, categories recomputed from the stored scores by independent code, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from ssah.errors import SsahError

OVERRIDES = [
    "toy=tiny",
    "scoring.calibration.safety.require_keywords=[]",
    "scoring.calibration.safety.n_samples=24",
    "scoring.calibration.utility.n_samples=24",
]


@pytest.fixture(scope="module")
def scored(tiny_toy, tmp_path_factory):
    from ssah.config import compose
    from ssah.score import run

    out = tmp_path_factory.mktemp("score")
    own_cache = [
        *OVERRIDES,
        f"paths.score_cache={out / 'cache'}",
    ]  # cold cache, whatever ran before
    first = run(compose("score", own_cache), out / "a")
    second = run(compose("score", own_cache), out / "b")
    return out, first, second


def recompute(path) -> dict[str, np.ndarray]:
    """What an outside check does: stored z (tests/test_fidelity_scoring.py checks them against
    the raw fields), global ranking, parameter ratios."""
    t = load_file(str(path))
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    ratios, units = json.loads(meta["ratios"]), json.loads(meta["units"])
    w_of = {"mlp": units["params_per_neuron"], "attn": units["params_per_head"]}
    keys, zs, zu, w = [], [], [], []
    for i in range(units["num_layers"]):
        for kind in ("mlp", "attn"):
            s = t[f"layers.{i}.{kind}.safety_z"].astype(np.float64)  # the z the ranking used
            u = t[f"layers.{i}.{kind}.utility_z"].astype(np.float64)
            zs.append(s)
            zu.append(u)
            w.append(np.full(len(s), w_of[kind]))
            keys.append((f"layers.{i}.{kind}.category", len(s)))
    zs, zu, w = np.concatenate(zs), np.concatenate(zu), np.concatenate(w)

    def take(key, ratio):
        order = np.argsort(key, kind="stable")
        n = int((np.cumsum(w[order]) <= ratio * w.sum() + 1e-9).sum())
        m = np.zeros(len(key), bool)
        m[order[:n]] = True
        return m

    cat = np.full(len(w), 3, np.uint8)
    cat[take(zs + zu, ratios["ru"])] = 0
    cat[take(-(zs - zu), ratios["scu"])] = 1
    cat[take(zs - zu, ratios["ucu"])] = 2
    out, pos = {}, 0
    for name, n in keys:
        out[name] = cat[pos : pos + n]
        pos += n
    return out


def test_units_file_contract_cache_and_reproducibility(scored) -> None:
    out, first, second = scored
    a, b = out / "a" / "units.safetensors", out / "b" / "units.safetensors"
    assert a.read_bytes() == b.read_bytes()
    assert first["score/cache_hit"] == 0.0 and second["score/cache_hit"] == 1.0
    assert (out / "a" / "units_per_layer.png").stat().st_size > 1000
    assert json.loads((out / "a" / "metrics.json").read_text()) == pytest.approx(first)
    t = load_file(str(a))
    assert t["layers.0.mlp.safety_score"].dtype == np.float32
    assert t["layers.1.attn.category"].dtype == np.uint8 and t["layers.1.attn.category"].shape == (
        4,
    )
    with safe_open(str(a), framework="np") as f:
        meta = f.metadata()
    assert meta["scorer"] == "wifv" and "aligned" in meta["model"]
    assert set(json.loads(meta["calibration_hashes"])) == {"safety", "utility"}
    assert json.loads(meta["ratios"]) == {"ru": 0.1, "scu": 0.01, "ucu": 0.1}
    for name, cat in recompute(a).items():
        assert np.array_equal(t[name], cat), name
    shares = sum(v for k, v in first.items() if k.startswith("score/units_share/"))
    assert shares == pytest.approx(1.0)


def test_changed_ratios_reuse_scores_and_bad_input_is_refused(scored, tmp_path) -> None:
    from ssah.config import compose
    from ssah.score import run

    out, *_ = scored
    cache = f"paths.score_cache={out / 'cache'}"  # the fixture's cache, whatever ran before
    m = run(compose("score", OVERRIDES + [cache, "scoring.ratios.scu=0.05"]), tmp_path / "c")
    assert m["score/cache_hit"] == 1.0
    assert m["score/selected_params_share/scu"] == pytest.approx(0.05, abs=0.05)
    with pytest.raises(SsahError, match=r"ratios.ru=1.5"):
        run(compose("score", OVERRIDES + ["scoring.ratios.ru=1.5"]), tmp_path / "d")
    # scores made for another model (the tiny base) are refused, not silently reused
    units = out / "a" / "units.safetensors"
    other = compose("score", OVERRIDES + ["model=toy_base", f"scores_from={units}"])
    with pytest.raises(SsahError, match="not for the loaded model"):
        run(other, tmp_path / "e")
    assert not (tmp_path / "e" / "units.safetensors").exists()
