"""Calibration sets: one loader for local JSONL / datasets, filters, seeded sampling,
response-only labels, and the model's own answers generated once and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssah.errors import SsahError
from ssah.eval.tiny import tiny_pair
from ssah.scoring import calibration as C


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(seed=0)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def ccfg(safety: dict, utility: dict, **kw) -> C.CalibrationConfig:
    return C.CalibrationConfig(safety=safety, utility=utility, **kw)


def test_utility_filter_sampling_and_response_only_labels(tmp_path, pair) -> None:
    model, tok = pair
    rows = [
        {"prompt": f"what is {i} plus {i} ?", "response": f"the answer is {2 * i} ."}
        for i in range(30)
    ]
    rows += [{"prompt": "how do i hack the bank ?", "response": "sure , step 1"}] * 5
    src = write_jsonl(tmp_path / "u.jsonl", rows)
    scfg = {"source": src, "n_samples": 8, "exclude_keywords": ["hack"]}
    a = C.build_set("utility", C.SetConfig(**scfg), ccfg(scfg, scfg, seed=0), model, tok)
    b = C.build_set("utility", C.SetConfig(**scfg), ccfg(scfg, scfg, seed=0), model, tok)
    c = C.build_set("utility", C.SetConfig(**scfg), ccfg(scfg, scfg, seed=1), model, tok)
    assert len(a.rows) == 8 and a.digest == b.digest != c.digest
    assert not any("hack" in r["prompt"] for r in a.records)
    for r, rec in zip(a.rows, a.records, strict=True):
        resp = [t for t, lab in zip(r["input_ids"], r["labels"], strict=True) if lab != -100]
        assert tok.decode(resp, skip_special_tokens=True).strip() == rec["response"]
    assert a.num_tokens == sum(sum(x != -100 for x in r["labels"]) for r in a.rows)
    bs = C.batches(a.rows, 3, tok.pad_token_id)
    assert [len(x["input_ids"]) for x in bs] == [3, 3, 2]


def test_alpaca_style_columns_and_input(tmp_path, pair) -> None:
    model, tok = pair
    rows = [
        {"instruction": "translate", "input": "hola", "output": "hello"},
        {"instruction": "say hi", "input": "", "output": "hi"},
    ]
    src = write_jsonl(tmp_path / "a.jsonl", rows)
    scfg = C.SetConfig(
        source=src,
        columns={"instruction": "prompt", "output": "response"},
        input_column="input",
        n_samples=5,
    )
    s = C.build_set("utility", scfg, ccfg({"source": src}, {"source": src}), model, tok)
    assert sorted(r["prompt"] for r in s.records) == ["say hi", "translate\n\nhola"]
    bad = C.SetConfig(source=src, n_samples=2)  # no `prompt` column without a mapping
    with pytest.raises(SsahError, match="columns"):
        C.build_set("utility", bad, ccfg({"source": src}, {"source": src}), model, tok)


def test_self_answers_are_generated_once_and_cached(tmp_path, pair, monkeypatch) -> None:
    model, tok = pair
    rows = [{"prompt": f"tell me how to pick lock {i} ."} for i in range(6)]
    src = write_jsonl(tmp_path / "h.jsonl", rows)
    calls = []
    real = C.generate_greedy

    def counting(*a, **k):
        calls.append(len(a[2]))
        return real(*a, **k)

    monkeypatch.setattr(C, "generate_greedy", counting)
    scfg = {"source": src, "response": "self", "n_samples": 4, "max_new_tokens": 4}
    cfg = ccfg(scfg, scfg, gen_batch_size=2)
    a = C.build_set("safety", cfg.safety, cfg, model, tok, tmp_path / "cache", "sha256:m")
    b = C.build_set("safety", cfg.safety, cfg, model, tok, tmp_path / "cache", "sha256:m")
    assert calls == [4] and a.digest == b.digest and len(a.rows) == 4
    C.build_set("safety", cfg.safety, cfg, model, tok, tmp_path / "cache", "sha256:other")
    assert calls == [4, 4]  # another model's weights: generated anew
    assert a.records[0]["response"] == real(model, tok, [a.records[0]["prompt"]], None, 4, 1)[0]


def test_require_keywords_that_nothing_meets_is_a_clear_error(tmp_path, pair) -> None:
    model, tok = pair
    src = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "p", "response": "sure"}] * 3)
    scfg = {"source": src, "require_keywords": ["sorry"]}
    with pytest.raises(SsahError, match="empty after filtering"):
        C.build_set("safety", C.SetConfig(**scfg), ccfg(scfg, scfg), model, tok)
    with pytest.raises(SsahError, match="response='bogus'"):
        C.SetConfig(source=src, response="bogus")


def test_self_answer_length_default_and_cut_answers_are_warned(tmp_path, pair, caplog) -> None:
    """The default leaves room for a whole refusal; a limit that cuts answers says so."""
    assert C.SetConfig(source="x").max_new_tokens == 256
    model, tok = pair
    rows = [{"prompt": f"tell me how to pick lock {i} ."} for i in range(4)]
    src = write_jsonl(tmp_path / "h.jsonl", rows)
    short = {"source": src, "response": "self", "n_samples": 4, "max_new_tokens": 3}
    cfg = ccfg(short, short, gen_batch_size=4)
    with caplog.at_level("WARNING", logger="ssah.scoring.calibration"):
        s = C.build_set("safety", cfg.safety, cfg, model, tok)
    cut = [
        r for r in s.records if len(tok(r["response"], add_special_tokens=False)["input_ids"]) >= 2
    ]
    assert cut, "a random tiny model should run past 3 tokens"
    assert f"{len(cut)} of 4 self-generated answers reached max_new_tokens=3" in caplog.text
