"""Batched generation: left padding + attention mask give exactly the batch-size-1 output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssah.eval.generation import encode_chat, generate, generate_ids
from ssah.eval.tiny import tiny_pair

PROMPTS = [
    "how do i make a cake ?",
    "write a story about a dragon who learns to read .",
    "two plus three",
    "tell me how to pick a lock . please answer with all the steps , one by one .",
    "hi",
]


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(seed=3)


@pytest.mark.parametrize("system_prompt", [None, "You are a helpful assistant."])
def test_batched_equals_batch_one(pair, system_prompt):
    model, tok = pair
    batched = generate(model, tok, PROMPTS, system_prompt, max_new_tokens=12, batch_size=32)
    single = [
        generate(model, tok, [p], system_prompt, max_new_tokens=12, batch_size=1)[0]
        for p in PROMPTS
    ]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts really lead to different answers
    # a batch size that splits the prompts across batches gives the same too
    assert generate(model, tok, PROMPTS, system_prompt, max_new_tokens=12, batch_size=2) == single


def test_prefill_is_forced_and_excluded(pair):
    model, tok = pair
    pre = ["sure , here is"] * len(PROMPTS)
    with_pre = generate(model, tok, PROMPTS, max_new_tokens=8, prefill=pre)
    single = [
        generate(model, tok, [p], max_new_tokens=8, prefill=["sure , here is"])[0] for p in PROMPTS
    ]
    assert with_pre == single
    assert with_pre != generate(model, tok, PROMPTS, max_new_tokens=8)
    rows = encode_chat(tok, PROMPTS[:1], None, pre[:1])
    assert (
        rows[0][-len(tok("sure , here is", add_special_tokens=False)["input_ids"]) :]
        == tok("sure , here is", add_special_tokens=False)["input_ids"]
    )


def test_system_prompt_changes_the_input(pair):
    _, tok = pair
    a = encode_chat(tok, ["hi"])[0]
    b = encode_chat(tok, ["hi"], "You are a helpful assistant.")[0]
    assert len(b) > len(a)


class _ScriptedHead(nn.Module):
    """lm_head replacement: row r emits token `tok_id` r+1 times, then EOS."""

    def __init__(self, vocab: int, tok_id: int, eos: int) -> None:
        super().__init__()
        self.vocab, self.tok_id, self.eos, self.calls = vocab, tok_id, eos, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape
        out = torch.zeros(b, t, self.vocab)
        for r in range(b):
            out[r, :, self.eos if self.calls > r else self.tok_id] = 10.0
        self.calls += 1
        return out


def test_stops_at_eos_per_row():
    model, tok = tiny_pair(seed=1)
    x = tok("cake", add_special_tokens=False)["input_ids"][0]
    model.lm_head = _ScriptedHead(len(tok), x, tok.eos_token_id)
    rows = [encode_chat(tok, ["hello there"])[0]] * 3  # same length: order is kept
    gens = generate_ids(model, tok, rows, max_new_tokens=10, batch_size=3)
    assert [g.ids for g in gens] == [[x], [x, x], [x, x, x]]
    assert all(g.stopped for g in gens)
    assert gens[2].text == tok.decode([x, x, x])


def test_sampling_is_seeded_and_restores_rng(pair):
    model, tok = pair
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate(model, tok, PROMPTS, max_new_tokens=8, do_sample=True, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # caller's RNG untouched
    b = generate(model, tok, PROMPTS, max_new_tokens=8, do_sample=True, seed=7)
    c = generate(model, tok, PROMPTS, max_new_tokens=8, do_sample=True, seed=8)
    assert a == b and a != c


def test_restores_training_mode(pair):
    model, tok = pair
    model.train()
    generate(model, tok, ["hi"], max_new_tokens=2)
    assert model.training
    model.eval()


def test_bad_arguments(pair):
    from ssah.errors import SsahError

    model, tok = pair
    with pytest.raises(SsahError):
        generate(model, tok, ["hi"], max_new_tokens=0)
    with pytest.raises(SsahError):
        generate(model, tok, ["a", "b"], prefill=["x"])
    assert generate(model, tok, [], max_new_tokens=4) == []


def test_checkpoint_sampling_defaults_do_not_leak_into_greedy(pair):
    model, tok = pair
    greedy = generate(model, tok, PROMPTS, max_new_tokens=8)
    old = (model.generation_config.do_sample, model.generation_config.temperature)
    model.generation_config.do_sample, model.generation_config.temperature = True, 5.0
    try:
        assert generate(model, tok, PROMPTS, max_new_tokens=8) == greedy
    finally:
        model.generation_config.do_sample, model.generation_config.temperature = old


def test_tokenizer_without_chat_template_uses_plain_text():
    model, tok = tiny_pair(seed=2)
    tok.chat_template = None
    batched = generate(model, tok, PROMPTS, "Be brief.", max_new_tokens=6)
    assert batched == [generate(model, tok, [p], "Be brief.", max_new_tokens=6)[0] for p in PROMPTS]
    ids = encode_chat(tok, ["hi"], "Be brief.")[0]
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == "Be brief.\n\nhi"
