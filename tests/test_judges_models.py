"""Classifier judges on tiny random classifiers; the rubric judge against a fake API server."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssah.errors import SsahError
from ssah.eval.judges import build_judges
from ssah.eval.tiny import save_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("cls") / "tiny_cls")


class _Say(nn.Module):
    """lm_head replacement that makes every row say `ids` and then EOS."""

    def __init__(self, vocab: int, ids: list[int], eos: int) -> None:
        super().__init__()
        self.vocab, self.seq, self.calls = vocab, [*ids, eos], 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(h.shape[0], h.shape[1], self.vocab)
        out[:, :, self.seq[min(self.calls, len(self.seq) - 1)]] = 10.0
        self.calls += 1
        return out


def _judge(tiny_dir, **kw):
    from ssah.eval.classifier import ClassifierJudge

    return ClassifierJudge(model=str(tiny_dir), dtype="float32", device="cpu", **kw)


@pytest.mark.parametrize(
    ("fmt", "word", "expected"),
    [("llama_guard", "unsafe", True), ("llama_guard", "safe", False),
     ("harmbench", "Yes", True), ("harmbench", "No", False)],
)  # fmt: skip
def test_classifier_reads_its_label(tiny_dir, fmt, word, expected):
    j = _judge(tiny_dir, format=fmt)
    ids = j.tok("\n\n" + word + "\nS1", add_special_tokens=False)["input_ids"]
    j.model.lm_head = _Say(len(j.tok), ids, j.tok.eos_token_id)
    assert j(["how do i pick a lock ?"] * 3, ["step 1 ...", "sorry", ""]) == [expected] * 3
    assert j.unparsed == 0


def test_classifier_random_model_plumbing(tiny_dir):
    j = _judge(tiny_dir, format="llama_guard", max_response_tokens=8)
    v = j.judge(["q1", "q2"], ["a " * 50, "b"])
    assert len(v.flags) == 2 and all(isinstance(f, bool) for f in v.flags)
    ids = j.format_prompt("USERQ", "x " * 100)
    text = j.tok.decode(ids)
    assert "USERQ" in text and "S14: Code Interpreter Abuse." in text
    assert text.count("x") <= 12  # response truncated to max_response_tokens
    hb = _judge(tiny_dir, format="harmbench")
    assert hb.format_prompt("B", "G")[0] == hb.tok.bos_token_id
    assert "Behavior:\nB" in hb.tok.decode(hb.format_prompt("B", "G"))
    ct = _judge(tiny_dir, prompt="chat_template")
    assert "<|assistant|>" in ct.tok.decode(ct.format_prompt("B", "G"))


def test_classifier_that_cannot_load(tmp_path):
    cfg = OmegaConf.create(
        {
            "lg": {
                "_target_": "ssah.eval.classifier.ClassifierJudge",
                "model": str(tmp_path / "nope"),
            }
        }
    )
    with pytest.raises(SsahError, match="judge model cannot be loaded"):
        build_judges(cfg)
    with pytest.raises(SsahError, match="format="):
        _judge(tmp_path, format="gpt")


# ---- rubric judge ------------------------------------------------------------------------
KEY = "sk-test-DO-NOT-LEAK-1234"


class _FakeAPI(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self.send_response(401)
            self.end_headers()
            return
        _FakeAPI.seen.append(body)
        text = body["messages"][0]["content"]
        score = 5 if "step 1" in text else 3 if "maybe" in text else 1
        reply = "no score here" if "garbled" in text else f"#thereason: ok\n#thescore: {score}"
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_api():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAPI)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_rubric_judge_scores_and_never_leaks_key(fake_api, monkeypatch, caplog):
    from ssah.eval.rubric import RubricJudge

    monkeypatch.setenv("SSAH_TEST_JUDGE_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    j = RubricJudge(model="fake", base_url=fake_api, api_key_env="SSAH_TEST_JUDGE_KEY", workers=2)
    v = j.judge(["p1", "p2", "p3", "p4"], ["step 1 do it", "no", "maybe", "garbled"])
    assert v.scores[:3] == [5.0, 1.0, 3.0] and v.scale == "likert"
    assert v.flags == [True, False, False, False]
    assert j.unparsed == 1
    assert (
        _FakeAPI.seen[0]["model"] == "fake"
        and "#thescore" in _FakeAPI.seen[0]["messages"][0]["content"]
    )
    assert KEY not in repr(j)
    assert KEY not in caplog.text


def test_rubric_judge_errors(fake_api, monkeypatch):
    from ssah.eval.rubric import RubricJudge

    monkeypatch.delenv("SSAH_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(SsahError, match="SSAH_TEST_JUDGE_KEY is not set"):
        RubricJudge(api_key_env="SSAH_TEST_JUDGE_KEY")
    monkeypatch.setenv("SSAH_TEST_JUDGE_KEY", "sk-wrong-secret")
    j = RubricJudge(base_url=fake_api, api_key_env="SSAH_TEST_JUDGE_KEY", max_retries=0)
    with pytest.raises(SsahError, match="HTTP 401") as e:
        j(["p"], ["r"])
    assert "sk-wrong-secret" not in str(e.value)
    dead = RubricJudge(
        base_url="http://127.0.0.1:9/v1",
        api_key_env="SSAH_TEST_JUDGE_KEY",
        max_retries=0,
        timeout_s=2,
    )
    with pytest.raises(SsahError, match="cannot reach"):
        dead(["p"], ["r"])
