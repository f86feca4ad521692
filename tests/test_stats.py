"""ssah.stats against hand-computed values; interval keys beside every rate of an evaluation."""

from __future__ import annotations

import math

import pytest

from ssah import stats


def test_wilson_hand_values():
    # k=5, n=10, z=1.959964: centre (0.5 + z^2/20)/(1 + z^2/10) = 0.5,
    # half = z*sqrt(0.025 + z^2/400)/(1 + z^2/10) = 0.263407
    lo, hi = stats.wilson(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)
    # k=0: upper bound z^2/(n + z^2) = 3.841459/13.841459
    lo, hi = stats.wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.277533, abs=1e-6)
    assert all(math.isnan(x) for x in stats.wilson(0, 0))
    # wider at lower level? no: narrower
    assert stats.wilson(5, 10, 0.9)[0] > lo


def test_exact_mcnemar_and_newcombe_by_hand():
    # A = [1]*0 + ..., B wins on 5 prompts, A on none, 5 ties at 0: discordant 5-0
    a = [0] * 10
    b = [1] * 5 + [0] * 5
    r = stats.mcnemar(a, b)
    assert (r.n, r.b_only, r.a_only) == (10, 5, 0)
    assert r.diff == pytest.approx(0.5)
    assert r.p == pytest.approx(2 / 32)  # 2 * (1/2)^5
    # phi = 0 (a zero margin): L = 0.5 - sqrt((0.5-0.236593)^2 + 0.277533^2), U = 0.763407
    assert r.ci_low == pytest.approx(0.5 - math.hypot(0.5 - 0.236593, 0.277533), abs=1e-5)
    assert r.ci_high == pytest.approx(0.763407, abs=1e-5)
    # 12 vs 2 discordant: p = 2 * (1 + 14 + 91) / 2^14
    assert stats.binom_two_sided(2, 14) == pytest.approx(212 / 16384)
    assert stats.binom_two_sided(7, 14) == 1.0
    r = stats.mcnemar([1] * 36 + [0] * 12 + [1] * 2, [1] * 36 + [1] * 12 + [0] * 2)
    assert r.diff == pytest.approx(0.2) and r.ci_low < 0.2 < r.ci_high
    assert r.p == pytest.approx(212 / 16384)


def test_no_difference_straddles_zero_and_is_inconclusive():
    r = stats.mcnemar([1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 1, 0])
    assert r.diff == 0 and r.ci_low < 0 < r.ci_high and r.p == 1.0
    assert stats.verdict(r.ci_low, r.ci_high) == stats.INCONCLUSIVE


def test_stratified_pools_discordant_pairs_over_seeds():
    s0 = ([0, 0, 0, 1], [1, 1, 0, 1])  # B-only 2
    s1 = ([0, 0, 1, 1], [1, 0, 1, 0])  # B-only 1, A-only 1
    r = stats.stratified_paired([s0, s1])
    assert (r.n, r.strata, r.b_only, r.a_only) == (8, 2, 3, 1)
    assert r.p == pytest.approx(stats.binom_two_sided(1, 4)) and r.p == pytest.approx(10 / 16)
    # graded outcomes: Monte Carlo sign flip, seeded and reproducible
    g = stats.stratified_paired([([0.2] * 30, [0.8] * 30)], resamples=2000)
    assert g.p < 0.01 and g.diff == pytest.approx(0.6)
    with pytest.raises(ValueError):
        stats.stratified_paired([([0, 1], [1])])


def test_t_quantiles_and_mean_ci():
    for df, t in ((1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139), (29, 2.045230)):
        assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=1e-5)
    s = stats.mean_ci([1.0, 2.0, 3.0])  # sd 1, half = 4.302653 / sqrt(3)
    assert s.mean == 2.0 and s.n == 3
    assert s.ci_high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    one = stats.mean_ci([0.4])
    assert one.n == 1 and math.isnan(one.ci_low)
    assert stats.verdict(one.ci_low, one.ci_high) == stats.INCONCLUSIVE


def test_verdicts_and_margins():
    assert stats.verdict(0.01, 0.3) == stats.SUPPORTED
    assert stats.verdict(-0.3, -0.01) == stats.CONTRADICTED
    assert stats.verdict(-0.01, 0.3) == stats.INCONCLUSIVE
    assert stats.verdict(-0.3, -0.01, direction=-1) == stats.SUPPORTED
    # "utility drops by less than 5 points": drop interval [1, 3] is below the margin
    assert stats.verdict(0.01, 0.03, direction=-1, margin=0.05) == stats.SUPPORTED
    assert stats.verdict(0.06, 0.09, direction=-1, margin=0.05) == stats.CONTRADICTED
    assert stats.fmt_ci(0.234, 0.148, 0.35) == "23.4 [14.8, 35.0]"
    assert stats.fmt_ci(float("nan"), 0, 1) == "-"


def test_interval_keys_from_records():
    from ssah.eval.intervals import add_intervals, is_interval_key

    recs = [
        {"suite": s, "prompt_id": i, "judge/keyword": bool(i % 2)}
        for s in ("direct", "direct_sys")
        for i in range(10)
    ] + [{"suite": "benign", "prompt_id": i, "refused": i < 3} for i in range(4)]
    m = {
        "safety/asr/direct/keyword": 0.5,
        "safety/asr/direct_sys/keyword": 0.5,
        "safety/asr/avg/keyword": 0.5,
        "safety/over_refusal": 0.75,
        "safety/asr/other/keyword": 0.1,  # no records: no interval made up
    }
    add_intervals(m, recs, ["direct", "direct_sys"])
    assert m["safety/asr/direct/keyword/n"] == 10 and m["safety/asr/avg/keyword/n"] == 10
    assert m["safety/asr/direct/keyword/ci_low"] == pytest.approx(0.236593, abs=1e-6)
    assert m["safety/over_refusal/n"] == 4
    assert "safety/asr/other/keyword/n" not in m
    assert is_interval_key("safety/over_refusal/ci_high") and not is_interval_key("utility/ppl")


def test_similar_claims_need_the_interval_inside_the_margin():
    assert stats.verdict(-0.02, 0.03, direction=0, margin=0.05) == stats.SUPPORTED
    assert stats.verdict(-0.02, 0.08, direction=0, margin=0.05) == stats.INCONCLUSIVE
    assert stats.verdict(0.06, 0.08, direction=0, margin=0.05) == stats.CONTRADICTED
    with pytest.raises(ValueError):
        stats.verdict(0.0, 0.1, direction=0)
    lo, hi = stats.newcombe_unpaired(0.5, 10, 0.0, 10)  # phi = 0: same as the paired case
    assert (lo, hi) == pytest.approx(stats.newcombe_paired(0, 5, 0, 5))
