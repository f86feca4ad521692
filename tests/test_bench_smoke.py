"""Every benchmark runs at tiny sizes (a broken import or API change fails here, not months
later in `make bench`), and a section that cannot run fails the command instead of "skipped"."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_every_benchmark_runs_tiny(tiny_toy, outputs_dir):
    from ssah.bench.__main__ import AREAS, main

    results = main(["--tiny"])
    assert set(results) == set(AREAS)
    bench = outputs_dir / "bench"
    for name in ("scoring", "freeze", "generation", "sweep", "real_tiny"):
        data = json.loads((bench / f"{name}.json").read_text())
        m = data["machine"]
        assert m["cpu"] and m["cores"] >= 1 and m["torch_threads"] >= 1
        assert len(m["load_avg"]) == 3 and m["date"]
        assert "skipped" not in json.dumps(data)
    s = results["scoring"]["toy"]
    assert s["pairs"] == 2 and len(s["scoring_vs_forward_ratios"]) == 2
    assert s["scoring_vs_forward_ratio_spread"]["min"] <= s["scoring_vs_forward_ratio"]
    assert s["scoring_vs_forward_ratio"] <= s["scoring_vs_forward_ratio_spread"]["max"]
    assert results["freeze"]["freeze_overhead_ratio"] > 0
    assert len(results["freeze"]["freeze_overhead_ratio_per_pair"]) == 2
    assert results["generation"]["generation_batch_speedup"] > 0
    assert results["sweep"]["sweep_vs_single_ratio"] > 0 and results["sweep"]["jobs"] == 1
    real = results["real"]
    assert real["finetune_step_s"] > 0 and real["scoring_s_per_1k_tokens"] > 0
    # MFU: every figure a share of the measured peak of the fastest precision, in (0, 1]
    assert real["peak"]["best_gflops"] == max(real["peak_gflops"].values()) > 0
    assert 0 < real["finetune_step_mfu"] <= 1
    assert real["finetune_step_mfu"] == max(real["finetune_step_mfu_by_config"].values())
    assert set(real["finetune_step_mfu_by_config"]) == {
        "fp32_padded", "bf16_padded", "bf16_grouped", "bf16_grouped_fused",
        "bf16_grouped_fused_head",
    }  # fmt: skip
    for key in ("scoring_mfu", "forward_mfu", "generation_mfu"):
        assert 0 < real[key] <= 1, key
    assert real["padding_share"]["grouped"] < real["padding_share"]["padded"]
    assert results["sweep"]["threads_ran"]["single"] == results["sweep"]["threads_ran"]["sweep"]


def test_paired_alternates_and_reports_spread():
    from ssah.bench.common import paired

    calls = []

    def side(name, value):
        def f():
            calls.append(name)
            return value

        return f

    res = paired(side("a", 2.0), side("b", 3.0), pairs=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # load drift hits both sides alike
    assert res["ratio"]["median"] == 1.5 and res["ratios"] == [1.5, 1.5, 1.5]


def test_missing_real_world_fails_naming_make_real(outputs_dir, capsys):
    """No converted SmolLM2 model under this session's outputs: the section fails, the command
    exits non-zero with one line naming `make real`."""
    from ssah.bench.__main__ import main
    from ssah.bench.common import BenchError
    from ssah.bench.real import world_model_dir

    with pytest.raises(BenchError, match="make real"):
        world_model_dir()
    with pytest.raises(SystemExit) as exit_info:
        main(["real"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: benchmark real could not run:") and "make real" in err[-1]
