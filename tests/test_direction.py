"""Generation-time direction tracking: projection sign, flips, greedy loop consistency."""

from __future__ import annotations

import torch
from test_probe import tiny_llama, tiny_tokenizer

from ssah.analysis import direction as D
from ssah.analysis.probe import block_states


def test_projection_maps_means_to_plus_minus_one_and_sign_follows_direction() -> None:
    refuse = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # [layers=2, hidden=3]
    fulfil = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d = D.Direction(refuse, fulfil)
    assert torch.allclose(d.project(refuse), torch.ones(2))
    assert torch.allclose(d.project(fulfil), -torch.ones(2))
    assert torch.allclose(d.project((refuse + fulfil) / 2), torch.zeros(2))
    # orthogonal moves do not count; moving toward the refused mean is positive
    states = torch.tensor(
        [[[0.3, 5.0, -2.0], [4.0, 1.6, 9.0]], [[-0.5, 0.0, 1.0], [0.0, -3.0, 0.0]]]
    )  # [n=2, L, H]
    proj = d.project(states)
    assert torch.allclose(proj, torch.tensor([[0.3, 0.6], [-0.5, -4.0]]))


def test_estimate_separability_and_auto_layer() -> None:
    g = torch.Generator().manual_seed(0)
    n, hidden = 20, 6
    noise = torch.randn(2 * n, 3, hidden, generator=g)
    shift = torch.zeros(3, hidden)
    shift[0, 0], shift[1, 0], shift[2, 0] = 0.2, 3.0, 1.0  # layer 1 separates best
    refused, fulfilled = noise[:n] + shift, noise[n:] - shift
    d = D.estimate(refused, fulfilled)
    sep = D.separability(d, refused, fulfilled)
    assert D.pick_layer("auto", sep["dprime"]) == 1
    assert sep["accuracy"][1] > 0.95 and sep["accuracy"][1] > sep["accuracy"][0]
    assert (d.project(refused).mean(0) > 0).all() and (d.project(fulfilled).mean(0) < 0).all()
    assert D.pick_layer(-1, sep["dprime"]) == 2


def test_flip_stats_counts_flips_and_flip_backs() -> None:
    series = [
        torch.tensor([1.0, 0.5, -0.5, -1.0]),  # flips, stays fulfilling
        torch.tensor([0.8, -0.2, 0.4, 0.9]),  # flips and comes back
        torch.tensor([-1.0, -0.5, 0.5]),  # starts fulfilling: no flip
        torch.tensor([1.0, 0.9, 0.7]),  # keeps refusing
    ]
    s = D.flip_stats(series, min_steps=1)
    assert s["flip_rate"] == 0.5 and s["flip_back_rate"] == 0.5
    assert s["refusing_at_start"] == 0.75 and s["refusing_at_end"] == 0.75
    assert abs(s["proj_start"] - 0.45) < 1e-6
    # with runs of 2 steps, the single negative step of series 2 is no flip
    s2 = D.flip_stats(series, min_steps=2)
    assert s2["flip_rate"] == 0.25 and s2["flip_back_rate"] == 0.0
    wobble = torch.tensor([1.0, -1.0, -1.0, 0.5, 0.5, -1.0])
    assert D.flip_stats([wobble], min_steps=2)["flip_back_rate"] == 1.0
    assert D.flip_stats([torch.tensor([1.0, 2.0])])["flip_back_rate"] != 0.0  # nan: no flips
    assert D.first_run(torch.tensor([True, False, True, True]), 2) == 2
    assert D.first_run(torch.tensor([True, True]), 2, start=1) is None


def test_greedy_states_match_a_full_forward_and_batching() -> None:
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    prompts = [[1, 5, 6, 7, 8], [1, 9], [1, 10, 11, 12]]
    forced = [[20, 21], [], [22]]
    L, H = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(1)
    d = D.Direction(torch.randn(L, H, generator=g), torch.randn(L, H, generator=g))
    kw = dict(max_new_tokens=5, eos_id=None, pad_id=tok.pad_token_id, direction=d)
    batched = D.greedy(model, prompts, forced, batch_size=3, **kw)
    single = D.greedy(model, prompts, forced, batch_size=1, **kw)
    for b, s, p, f in zip(batched, single, prompts, forced, strict=True):
        n = len(f) + 5  # forced tokens, then max_new_tokens free ones
        assert b.tokens == s.tokens and b.tokens[: len(f)] == f and len(b.tokens) == n
        assert torch.allclose(b.proj, s.proj, atol=1e-4)
        full = torch.tensor([p + b.tokens])
        states = block_states(model, full, torch.ones_like(full))[:, 0]  # [L, S, H]
        pos = len(p) - 1 + torch.arange(n)
        expect = d.project(states[:, pos].transpose(0, 1))  # [steps, L]
        assert torch.allclose(b.proj, expect, atol=1e-4)
        assert torch.allclose(b.prompt_state, states[:, len(p) - 1], atol=1e-4)
        assert torch.allclose(b.answer_state, states[:, pos].mean(1), atol=1e-4)
        # the greedy choice is the argmax of the full forward at every free step
        logits = model(input_ids=full).logits[0]
        for t in range(len(f), n):
            assert int(logits[len(p) - 1 + t].argmax()) == b.tokens[t]


def test_eos_stops_a_row_and_refusal_judge() -> None:
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    first = D.greedy(model, [[1, 5, 6]], max_new_tokens=4, eos_id=None)[0].tokens
    g = torch.Generator().manual_seed(1)
    d = D.Direction(torch.randn(2, 32, generator=g), torch.randn(2, 32, generator=g))
    stopped = D.greedy(model, [[1, 5, 6]], max_new_tokens=4, eos_id=first[1], direction=d)[0]
    n = first.index(first[1]) + 1
    assert stopped.tokens == first[:n]
    assert len(stopped.proj) == max(1, n - 1)  # the EOS-predicting state is not tracked
    assert D.is_refusal("Sorry, I can't help", ["can't"]) and not D.is_refusal("sure", ["sorry"])
    assert D.plot_layer_set(5, 32, 4) == [5, 10, 21, 31]  # nearest grid layer replaced
    assert D.plot_layer_set(3, 4, 8) == [0, 1, 2, 3]
