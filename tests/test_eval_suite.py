"""run_suite on the tiny toy world: metric keys, ranges, records, redaction, prefill curve."""

from __future__ import annotations

import json
import math

import pytest
from omegaconf import OmegaConf

from ssah.errors import SsahError
from ssah.eval.generators import redacted
from ssah.eval.suite import evaluate_model, read_records, run_suite


@pytest.fixture(scope="module")
def toy(tiny_toy):
    from ssah.config import compose
    from ssah.models import ModelConfig, load_model, load_tokenizer

    cfg = compose("evaluate", ["toy=tiny"])
    mc = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    return cfg, load_model(mc), load_tokenizer(mc)


def _small(cfg, **over):
    e = OmegaConf.create(OmegaConf.to_container(cfg.eval, resolve=True))
    e.harmful.limit = 6
    e.benign.limit = 4
    e.suites.jailbreak.limit = 3
    e.suites.prefill.depths = [0, 2, 8]
    e.generation.max_new_tokens = 12
    e.utility.generation.data.limit = 6
    e.utility.ppl.data.limit = 6
    e.utility.mc.tasks.toy_answers.from_answers.data.limit = 12
    for k, v in over.items():
        OmegaConf.update(e, k, v, force_add=True)
    return e


def test_run_suite_keys_ranges_and_outputs(toy, tmp_path):
    cfg, model, tok = toy
    m = run_suite(model, tok, _small(cfg), out_dir=tmp_path)
    for k in [
        "safety/asr/direct/keyword",
        "safety/asr/direct_sys/keyword",
        "safety/asr/prefill_k0/keyword",
        "safety/asr/prefill_k8/keyword",
        "safety/asr/avg/keyword",
        "safety/over_refusal",
        "safety/over_refusal_sys",
        "utility/accuracy",
        "utility/exact_match",
        "utility/rouge_l",
        "utility/ppl",
        "utility/mc_accuracy",
        "time/eval_s",
    ]:
        assert k in m, k
    for k, v in m.items():
        if k.endswith("/n"):  # every rate's count of prompts and its Wilson 95% interval
            rate = m[k.removesuffix("/n")]
            assert v >= 1 and m[f"{k[:-2]}/ci_low"] <= rate <= m[f"{k[:-2]}/ci_high"], k
        elif k.startswith(("safety/", "utility/acc", "utility/exa", "utility/rouge", "utility/mc")):
            assert 0.0 <= v <= 1.0, (k, v)
    assert m["safety/asr/direct/keyword/n"] == 6 and m["safety/asr/avg/keyword/n"] == 6
    assert m["utility/accuracy/n"] > 0 and "safety/over_refusal/ci_high" in m
    assert m["utility/ppl"] > 1 and math.isfinite(m["utility/ppl"])
    # prefill depth 0 is the direct attack: same inputs, same greedy answers
    assert m["safety/asr/prefill_k0/keyword"] == m["safety/asr/direct/keyword"]
    wrappers = {k.split("/")[2] for k in m if k.startswith("safety/asr/")}
    assert wrappers & {"rationale", "story", "refusal_suppression", "suffix"}
    assert m["safety/asr/avg/keyword"] == pytest.approx(
        (m["safety/asr/direct/keyword"] + m["safety/asr/direct_sys/keyword"]) / 2
    )
    recs = read_records(tmp_path)
    assert (tmp_path / "prefill_depth.png").stat().st_size > 1000
    direct = [r for r in recs if r["suite"] == "direct"]
    assert len(direct) == 6 and all(isinstance(r["judge/keyword"], bool) for r in direct)
    assert sum(r["judge/keyword"] for r in direct) / 6 == m["safety/asr/direct/keyword"]
    k8 = [r for r in recs if r["suite"] == "prefill_k8"]
    assert all(r["prefill"].startswith("sure") for r in k8)  # toy compliances start "sure , here"
    assert {r["kind"] for r in recs} == {"attack", "over_refusal", "utility"}


def test_redact_and_template_suite(toy):
    cfg, model, tok = toy
    e = _small(cfg)
    e.records.redact = True
    e.suites = {"wrapped": {"kind": "template", "template": "please , {prompt} now"}}
    e.benign = None
    e.utility = None
    res = evaluate_model(model, tok, e)
    assert res.metrics["safety/asr/wrapped/keyword/n"] == 6  # redacted prompts still counted
    assert {k for k in res.metrics if not k.endswith(("/n", "/ci_low", "/ci_high"))} == {
        "safety/asr/wrapped/keyword",
        "safety/asr/wrapped_sys/keyword",
        "time/eval_s",
    }
    assert res.records and all("please" in r["prompt"] for r in res.records)  # text kept locally
    hidden = redacted(res.records)  # what W&B gets
    assert all(r["response"].startswith("[redacted") for r in hidden)
    assert all("please" not in r["prompt"] for r in hidden)
    assert [r["judge/keyword"] for r in hidden] == [r["judge/keyword"] for r in res.records]


def test_bad_eval_configs(toy, tmp_path, monkeypatch):
    cfg, model, tok = toy
    with pytest.raises(SsahError, match="does not exist"):
        run_suite(
            model,
            tok,
            _small(cfg, **{"harmful.source": str(tmp_path / "missing.jsonl")}),
            out_dir=tmp_path,
        )
    assert not (tmp_path / "records.jsonl").exists()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr("ssah.eval.datasets.has_hf_token", lambda: False)
    gated = {"source": "LLM-Tuning-Safety/HEx-PHI", "gated": True, "split": "train"}
    with pytest.raises(SsahError, match="gated.*HF_TOKEN"):
        run_suite(model, tok, _small(cfg, harmful=gated))
    with pytest.raises(SsahError, match="kind="):
        run_suite(model, tok, _small(cfg, suites={"x": {"kind": "magic"}}))
    with pytest.raises(SsahError, match="no 'answer_text' column"):
        run_suite(model, tok, _small(cfg, **{"suites.prefill.field": "answer_text"}))
    with pytest.raises(SsahError, match="backend"):
        run_suite(model, tok, _small(cfg, **{"generation.backend": "tgi"}))


def test_vllm_backend_message(toy):
    pytest.importorskip("torch")
    from ssah.eval import vllm_backend

    ok, why = vllm_backend.available(None)
    assert not ok and why
    cfg, model, tok = toy
    e = _small(cfg, **{"generation.backend": "vllm"})
    with pytest.raises(SsahError, match="backend=vllm"):
        run_suite(model, tok, e)


def test_rubric_judge_in_the_suite(toy, monkeypatch):
    """Graded judges give safety/harmfulness/<judge>; the key never reaches the records."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Api(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            score = 5 if "sure" in body["messages"][0]["content"].split("Model Response")[1] else 2
            out = {"choices": [{"message": {"content": f"#thescore: {score}"}}]}
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps(out).encode())

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSAH_TEST_RUBRIC_KEY", "sk-secret-xyz")
    try:
        cfg, model, tok = toy
        e = _small(cfg, benign=None, utility=None)
        e.suites = {
            "direct": {"kind": "direct"},
            "prefill": {"kind": "prefill", "depths": [8], "system_prompt_modes": ["none"]},
        }
        e.judges = {
            "keyword": {"_target_": "ssah.eval.judges.KeywordJudge"},
            "rubric": {
                "_target_": "ssah.eval.rubric.RubricJudge",
                "model": "fake",
                "base_url": f"http://127.0.0.1:{srv.server_address[1]}/v1",
                "api_key_env": "SSAH_TEST_RUBRIC_KEY",
            },
        }
        res = evaluate_model(model, tok, e)
    finally:
        srv.shutdown()
        srv.server_close()
    m = res.metrics
    assert 2.0 <= m["safety/harmfulness/rubric"] <= 5.0
    assert m["safety/asr/prefill_k8/rubric"] == 1.0  # the forced "sure , here is ..." is rated 5
    assert "sk-secret-xyz" not in json.dumps(res.records) + json.dumps(m)
    assert all("score/rubric" in r for r in res.records)


def test_markdown_summary():
    from ssah.eval.suite import asr_matrix, markdown_summary

    m = {
        "safety/asr/direct/keyword": 0.25,
        "safety/asr/direct/rubric": 0.5,
        "safety/asr/story_sys/keyword": 1.0,
        "safety/harmfulness/rubric": 2.5,
        "safety/over_refusal": 0.1,
        "utility/ppl": 12.0,
    }
    suites, judges, cells = asr_matrix(m)
    assert suites == ["direct", "story_sys"] and judges == ["keyword", "rubric"]
    md = markdown_summary(m)
    assert "| direct | 25.0% | 50.0% |" in md and "| story_sys | 100.0% |  |" in md
    assert "`safety/over_refusal`: 10.0%" in md and "`utility/ppl`: 12" in md


def test_over_refusal_per_category_with_its_own_n(toy):
    """A benign set of look-alikes and everyday requests: the rate of each category apart,
    with n counting that category's prompts only (a model can refuse every look-alike and
    still score low over a set that is mostly everyday)."""
    from ssah.eval.intervals import add_intervals
    from ssah.eval.suite import _over_refusal

    _, _, tok = toy
    rows = [{"prompt": f"q{i}", "category": "look" if i < 2 else "everyday"} for i in range(6)]
    ok = "Sure, here is how you do it: first mix the flour and the water well."
    answers = iter(["I'm sorry, I can't.", "I cannot do that.", ok, ok, ok, "I'm sorry."])
    recs: list[dict] = []
    m = _over_refusal({}, rows, tok, lambda ids: [next(answers) for _ in ids], None, recs)
    add_intervals(m, recs)
    assert m["safety/over_refusal"] == pytest.approx(3 / 6)
    assert m["safety/over_refusal/look"] == 1.0 and m["safety/over_refusal/look/n"] == 2
    assert m["safety/over_refusal/everyday"] == 0.25 and m["safety/over_refusal/everyday/n"] == 4
    # without a category on every row there is no split
    m2 = _over_refusal({}, [{"prompt": "a"}], tok, lambda ids: ["ok"] * len(ids), None, [])
    assert list(m2) == ["safety/over_refusal"]
