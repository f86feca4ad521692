"""Model FLOPs and the CPU's measured peak on a model's own matmul shapes: the two halves of
model FLOPs utilisation (MFU = useful FLOPs per second / peak).

Why measure the peak instead of taking a datasheet number: what bounds a fine-tuning step on a
CPU is what its matmul library reaches on this model's shapes at this thread count, and that
differs by precision (float32 on AVX-512 vs bfloat16 on AVX512-BF16/AMX) by 4x or more. The
peak here is the rate of one step's linear layers alone: each distinct (in, out) shape of a
decoder layer and the LM head, in its three matmuls (forward X W^T, input gradient dY W, weight
gradient dY^T X) at the step's token count, weighted by how often the model runs it. Nothing
else a step does (attention, norms, the optimizer, the framework) is in it, so a step cannot
reach it; 1.0 would mean a step costs only its matmuls at library speed.

Useful FLOPs count non-padding tokens only: 2 x (weights of every linear) per token, plus the
causal attention scores and values (2 x 2 x layers x heads x head_dim x t(t+1)/2 per sequence
of t tokens); a training step is 3x its forward (backward = 2x forward), the usual MFU
convention (recomputation by activation checkpointing is not useful work). In a fine-tuning
step the LM head counts only on the tokens that have a label: its output on prompt tokens is
thrown away, so computing it is not useful work either.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shapes:
    """The sizes that decide a Llama-style decoder's FLOPs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config: Any) -> Shapes:
        """From a transformers config (Llama, Mistral, Qwen2, SmolLM2 all name them alike)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
        )

    def linears(self, lm_head: bool = True) -> list[tuple[int, int, int]]:
        """(in, out, how many per token) of every linear a forward runs."""
        h, n = self.hidden, self.layers
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = [(h, q, n), (h, kv, 2 * n), (q, h, n), (h, self.intermediate, 2 * n)]
        out.append((self.intermediate, h, n))
        if lm_head:
            out.append((h, self.vocab, 1))
        return out

    def linear_flops_per_token(self, lm_head: bool = True) -> float:
        return 2.0 * sum(i * o * c for i, o, c in self.linears(lm_head))

    def attention_flops(self, t: int, context: int = 0) -> float:
        """Scores and weighted values of `t` new tokens after `context` cached ones (causal)."""
        pairs = t * context + t * (t + 1) / 2  # (query, key) pairs that are computed
        return 2.0 * 2.0 * self.layers * self.heads * self.head_dim * pairs


def forward_flops(
    s: Shapes, lengths: list[int], lm_head: bool = True, head_tokens: int | None = None
) -> float:
    """Useful FLOPs of a forward over sequences of these (non-padding) lengths; the LM head on
    every token, or on `head_tokens` tokens in all (a loss needs it on labelled ones only)."""
    body = s.linear_flops_per_token(lm_head=False)
    total = sum(body * t + s.attention_flops(t) for t in lengths)
    if lm_head:
        total += 2.0 * s.hidden * s.vocab * (sum(lengths) if head_tokens is None else head_tokens)
    return total


def step_flops(s: Shapes, lengths: list[int], head_tokens: int | None = None) -> float:
    """Useful FLOPs of one training step (forward + backward = 3x the forward)."""
    return 3.0 * forward_flops(s, lengths, head_tokens=head_tokens)


def generation_flops(s: Shapes, prompt_lengths: list[int], new_tokens: int) -> float:
    """Useful FLOPs of greedy decoding with a KV cache: the prompt once (LM head on its last
    token only, as generate does), then one token at a time over the growing context."""
    body = s.linear_flops_per_token(lm_head=False)
    head = 2.0 * s.hidden * s.vocab
    total = 0.0
    for p in prompt_lengths:
        total += body * p + s.attention_flops(p) + head
        for j in range(1, new_tokens):  # the first new token came from the prompt's pass
            total += body + head + s.attention_flops(1, p + j - 1)
    return total


def _median_time(fn: Any, reps: int) -> float:
    fn()  # warm-up: the library picks and caches its kernel here
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(s: Shapes, tokens: int, dtype: torch.dtype, reps: int = 3) -> dict[str, Any]:
    """GFLOP/s of one training step's linear layers alone at `tokens` tokens, in `dtype`.

    Each distinct (in, out) shape runs its forward and both backward matmuls `reps` times
    (median); the step's rate weights every shape by its FLOPs in the model. Also reports the
    fastest single shape."""
    g = torch.Generator().manual_seed(0)
    per_shape: dict[str, float] = {}
    weighted_s = 0.0
    weighted_flops = 0.0
    merged: dict[tuple[int, int], int] = {}
    for i, o, c in s.linears():
        merged[(i, o)] = merged.get((i, o), 0) + c
    with torch.no_grad():
        for (i, o), count in merged.items():
            x = torch.randn(tokens, i, generator=g).to(dtype)
            w = torch.randn(o, i, generator=g).to(dtype)
            dy = torch.randn(tokens, o, generator=g).to(dtype)
            seconds = (
                _median_time(lambda x=x, w=w: torch.nn.functional.linear(x, w), reps)
                + _median_time(lambda dy=dy, w=w: dy @ w, reps)
                + _median_time(lambda dy=dy, x=x: dy.t() @ x, reps)
            )
            flops = 3 * 2.0 * tokens * i * o
            per_shape[f"{i}x{o}"] = flops / seconds / 1e9
            weighted_s += count * seconds
            weighted_flops += count * flops
    return {
        "gflops": weighted_flops / weighted_s / 1e9,
        "best_shape_gflops": max(per_shape.values()),
        "per_shape_gflops": per_shape,
        "tokens": tokens,
        "reps": reps,
    }


def peaks(s: Shapes, tokens: int, reps: int = 3) -> dict[str, Any]:
    """The step-matmul peak in float32 and bfloat16; `best` is the fastest precision's."""
    out: dict[str, Any] = {
        "float32": matmul_peak(s, tokens, torch.float32, reps),
        "bfloat16": matmul_peak(s, tokens, torch.bfloat16, reps),
    }
    best = max(("float32", "bfloat16"), key=lambda k: out[k]["gflops"])
    out["best_precision"] = best
    out["best_gflops"] = out[best]["gflops"]
    return out
