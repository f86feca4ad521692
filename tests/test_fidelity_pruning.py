"""Table 1 as the authors measured it: under the paper's preset, attacks are generated on the
plainly zeroed model and utility with FLAP's compensation biases (their ASR came from vLLM on a
saved Llama checkpoint without o_proj/down_proj bias); `compensation_for=all` keeps the biases
for both. A spy on the evaluation sees which model each measurement ran on."""

from __future__ import annotations

import json

import pytest

from ssah.config import compose
from ssah.errors import SsahError
from ssah.scoring.pruning import PruneConfig

OV = [
    "toy=tiny",
    "scoring.calibration.safety.require_keywords=[]",
    "scoring.calibration.safety.n_samples=16",
    "scoring.calibration.utility.n_samples=16",
    "eval.suites.jailbreak=null",
    "eval.suites.prefill=null",
    "eval.utility.mc=null",
    "eval.utility.generation.data.limit=8",
    "eval.utility.ppl.data.limit=8",
    "eval.harmful.limit=8",
    "target=random",
    "random.match=0.2",
    "bias_compensation=true",
]


def test_paper_preset_measures_asr_without_the_biases(outputs_dir) -> None:
    t1 = compose("prune", ["+experiment=table1_pruning"])
    assert t1.bias_compensation is True and t1.compensation_for == "utility"
    assert compose("prune", []).compensation_for == "all"  # the stage's own default
    with pytest.raises(SsahError, match="compensation_for='safety'"):
        PruneConfig(compensation_for="safety")


@pytest.mark.parametrize("mode", ["utility", "all"])
def test_asr_and_utility_see_the_biases_the_option_says(tiny_toy, tmp_path, monkeypatch, mode):
    import ssah.eval.suite as S

    seen = []
    real = S.evaluate_model

    def spy(model, tok, ecfg, **kw):
        biased = any(
            getattr(m, "bias", None) is not None and bool(m.bias.abs().sum() > 0)
            for n, m in model.named_modules()
            if n.endswith(("o_proj", "down_proj"))
        )
        what = ("asr" if ecfg.get("suites") else "") + ("utility" if ecfg.get("utility") else "")
        seen.append((what, biased))
        return real(model, tok, ecfg, **kw)

    monkeypatch.setattr(S, "evaluate_model", spy)
    from ssah.prune import run

    out = tmp_path / mode
    m = run(compose("prune", [*OV, f"compensation_for={mode}"]), out)
    if mode == "utility":
        assert seen == [("asr", False), ("utility", True)]
    else:
        assert seen == [("asrutility", True)]
    assert m["prune/bias_compensation/asr"] == float(mode == "all")
    assert m["prune/bias_compensation/utility"] == 1.0
    assert "safety/asr/direct/keyword" in m and "utility/ppl" in m and "utility/accuracy" in m
    assert "safety/over_refusal" in m and m["time/eval_s"] > 0
    kinds = {json.loads(s)["kind"] for s in (out / "records.jsonl").read_text().splitlines()}
    assert {"attack", "utility"} <= kinds


def test_authors_ru_row_is_the_raw_lowest_sum_before_overwriting() -> None:
    """Their log's RU row pruned the lowest z(I_S)+z(I_U) 10% of parameters before SCU/UCU
    overwrote part of it: `target=topk topk.score=sum topk.highest=false topk.ratio=<ru>`.
    The category RU is that set less what SCU and UCU took."""
    import torch

    from ssah.eval.tiny import tiny_llama
    from ssah.scoring.categories import Ratios, assign, unit_z
    from ssah.scoring.pruning import choose
    from ssah.units import KINDS, UnitIndex

    idx = UnitIndex(tiny_llama(50, intermediate_size=48, pad_token_id=None))
    g = torch.Generator().manual_seed(5)
    s0, u0 = (
        {(i, k): torch.rand(idx.num_units(k), generator=g) for i in range(2) for k in KINDS}
        for _ in range(2)
    )
    r = Ratios(0.3, 0.05, 0.2)
    cat = idx.flatten(idx.unflatten(assign(idx, s0, u0, r, head_z="per_head").category))
    zs, zu = unit_z(idx, s0, head_z="per_head"), unit_z(idx, u0, head_z="per_head")
    raw = PruneConfig("topk", topk={"score": "sum", "highest": False, "ratio": r.ru})
    raw_ru = idx.flatten(choose(raw, idx, idx.unflatten(cat), zs, zu))
    ru, scu, ucu = cat == 0, cat == 1, cat == 2
    assert torch.equal(ru, raw_ru & ~scu & ~ucu)  # RU = raw RU less the overwritten units
    assert (raw_ru & (scu | ucu)).any()  # here some were overwritten: the rows differ
