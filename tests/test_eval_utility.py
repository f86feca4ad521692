"""Utility metrics: string metrics, perplexity, log-likelihood multiple choice, lm-eval adapter."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from ssah.data.chat import encode_example
from ssah.errors import SsahError
from ssah.eval.lm_harness import loglikelihood, multiple_choice, run_lm_eval, score_ids
from ssah.eval.tiny import tiny_pair
from ssah.eval.utility import (
    contains_answer,
    exact_match,
    final_answer_match,
    mc_from_answers,
    perplexity,
    rouge_l,
    text_windows,
)


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(seed=5)


def test_string_metrics():
    assert final_answer_match("the answer is 17 .", "17")
    assert not final_answer_match("the answer is 117 .", "17")
    assert final_answer_match("white black gold", "white black gold")
    assert not final_answer_match("", "4")
    assert contains_answer("there are 4 words .", "4") and not contains_answer(
        "there are 14 .", "4"
    )
    assert contains_answer("18 27 29", "18 27 29") and not final_answer_match(
        "there are 4 words .", "4"
    )
    assert exact_match("There are 4 words .", "there are 4 words.")
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a b c d", "a c") == pytest.approx(2 * (2 / 4) * 1.0 / (2 / 4 + 1.0))
    assert rouge_l("x", "y") == 0.0


def test_perplexity_matches_hf_loss(pair):
    model, tok = pair
    row = encode_example(tok, "how do i make a cake ?", "step 1 get the parts .", None, 64)
    ppl = perplexity(model, [row], tok.pad_token_id)
    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor([row["labels"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss.item()
    assert ppl == pytest.approx(math.exp(loss), rel=1e-4)
    # padding a second row does not change the first row's contribution
    short = encode_example(tok, "hi", "yes .", None, 64)
    both = perplexity(model, [row, short], tok.pad_token_id)
    sep = [perplexity(model, [r], tok.pad_token_id) for r in (row, short)]
    n = [sum(x != -100 for x in r["labels"][1:]) for r in (row, short)]
    pooled = math.exp(sum(math.log(p) * k for p, k in zip(sep, n, strict=True)) / sum(n))
    assert both == pytest.approx(pooled, rel=1e-4)
    win = text_windows(tok, ["one two three four five six seven"] * 4, max_length=8)
    assert all(len(w["input_ids"]) <= 8 for w in win) and len(win) > 2


def test_loglikelihood_is_the_sum_of_token_logprobs(pair):
    model, tok = pair
    ctx, cont = (
        tok("how do i", add_special_tokens=False)["input_ids"],
        tok(" make a cake", add_special_tokens=False)["input_ids"],
    )
    ((lp, greedy, n),) = score_ids(model, [(ctx, cont)])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0], -1)
    manual = sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
    assert lp == pytest.approx(manual, abs=1e-4) and n == len(cont)
    # batching with other lengths gives the same numbers
    many = loglikelihood(
        model, tok, [("how do i", " make a cake"), ("hi", " there friend , how are you")]
    )
    assert many[0][0] == pytest.approx(lp, abs=1e-4)


def test_multiple_choice_accuracy_follows_the_model(pair, tmp_path):
    model, tok = pair
    items = [{"prompt": "pick one", "choices": ["red", "blue", "green"], "label": 0}]
    lps = [
        x[0]
        for x in loglikelihood(
            model,
            tok,
            [
                (
                    tok.apply_chat_template(
                        [{"role": "user", "content": "pick one"}],
                        tokenize=False,
                        add_generation_prompt=True,
                    ),
                    c,
                )
                for c in items[0]["choices"]
            ],
        )
    ]
    best = max(range(3), key=lambda j: lps[j])
    items[0]["label"] = best
    assert multiple_choice(model, tok, items)["acc"] == 1.0
    items[0]["label"] = (best + 1) % 3
    assert multiple_choice(model, tok, items)["acc"] == 0.0
    with pytest.raises(SsahError):
        multiple_choice(model, tok, [{"prompt": "x", "choices": ["a"], "label": 3}])
    data = tmp_path / "u.jsonl"
    rows = [
        {
            "prompt": f"what is {i} plus 1 ?",
            "response": f"the answer is {i + 1} .",
            "answer": str(i + 1),
            "task": "add",
        }
        for i in range(6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    mc = mc_from_answers({"data": {"source": str(data)}, "group_field": "task", "n_choices": 4})
    assert len(mc) == 6
    for it, r in zip(mc, rows, strict=True):
        assert it["choices"][it["label"]] == r["response"] and len(set(it["choices"])) == 4


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval installed")
def test_lm_eval_missing_is_a_clear_error(pair):
    model, tok = pair
    with pytest.raises(SsahError, match="pip install lm-eval"):
        run_lm_eval(model, tok, ["boolq"])
