"""Batched chat generation through HF `generate`: left padding, KV cache, stop at EOS.

Why left padding: every row's last prompt token then sits at the same position, so one
`generate` call extends all rows together; the attention mask hides the pads and HF derives
position ids from it, so a batched row decodes exactly as it would alone (tested).
Prompts are sorted by length inside the call so batches carry little padding; results come
back in the caller's order. Greedy decoding is deterministic; sampling is seeded and the
caller's RNG state is restored afterwards (stages call this in the middle of training).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.chat import encode_prompt
from ssah.errors import SsahError

# Our GenerationConfig is complete: keep HF (>= 4.50) from filling "default-looking" fields from
# the checkpoint's generation_config (Llama-2-chat ships do_sample=True, temperature=0.6).
_NO_MODEL_DEFAULTS = (
    {"use_model_defaults": False}
    if "use_model_defaults" in inspect.signature(GenerationMixin.generate).parameters
    else {}
)


@dataclass
class Generation:
    """One row's output: the new token ids (stop token excluded) and their text."""

    ids: list[int]
    text: str
    stopped: bool  # True when the model emitted a stop token before max_new_tokens


def stop_ids(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS plus the model's (e.g. Llama-3 eot)."""
    ids: set[int] = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if not ids:
        raise SsahError("the tokenizer has no eos_token; set one so generation can stop.")
    return sorted(ids)


def prompt_ids(
    tok: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None = None
) -> list[int]:
    """Chat-template ids; a tokenizer without a chat template (a base model) gets the plain
    text, system prompt first, after BOS (when the tokenizer has one)."""
    if getattr(tok, "chat_template", None):
        return encode_prompt(tok, prompt, system_prompt)
    text = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    ids = tok(text, add_special_tokens=True)["input_ids"]
    bos = tok.bos_token_id
    return [bos, *ids] if bos is not None and (not ids or ids[0] != bos) else ids


def encode_chat(
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    system_prompt: str | None = None,
    prefill: Sequence[str] | None = None,
) -> list[list[int]]:
    """Chat-formatted prompt ids, each followed by its prefill's ids (tokenised separately,
    so a prefill of k tokens forces exactly those k tokens)."""
    if prefill is not None and len(prefill) != len(prompts):
        raise SsahError(f"prefill has {len(prefill)} entries for {len(prompts)} prompts.")
    rows = []
    for i, p in enumerate(prompts):
        ids = prompt_ids(tok, p, system_prompt)
        if prefill is not None and prefill[i]:
            ids = ids + tok(prefill[i], add_special_tokens=False)["input_ids"]
        rows.append(ids)
    return rows


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def generate_ids(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    rows: list[list[int]],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    do_sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
) -> list[Generation]:
    """Generate from already-encoded prompts; one `Generation` per row, in input order.

    `min_new_tokens` suppresses EOS until that many tokens exist (fixed-length benchmarks)."""
    if max_new_tokens < 1 or batch_size < 1:
        raise SsahError(
            f"max_new_tokens={max_new_tokens} and batch_size={batch_size} must both be >= 1."
        )
    if not rows:
        return []
    route = _ROUTE.get()
    if route is not None and route[0] is model:  # a defence acting during generation
        return route[1](
            rows,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            do_sample=do_sample,
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            min_new_tokens=min_new_tokens,
        )
    stops = stop_ids(model, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    gen_cfg = generation_config(
        model, tok, max_new_tokens, min_new_tokens, do_sample, temperature, top_p
    )
    device = next(model.parameters()).device
    out: list[Generation | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            for b, idx in enumerate(batches([len(r) for r in rows], batch_size)):
                ids, mask = _left_pad([rows[i] for i in idx], pad_id)
                if do_sample:
                    torch.manual_seed(seed + b)
                seqs = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    generation_config=gen_cfg,
                    **_NO_MODEL_DEFAULTS,
                )
                new = seqs[:, ids.shape[1] :].tolist()
                for i, toks in zip(idx, new, strict=True):
                    out[i] = _finish(tok, toks, stops)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def generation_config(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> GenerationConfig:
    """The complete GenerationConfig every HF `generate` call of ssah uses."""
    stops = stop_ids(model, tok)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens or None,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        top_k=None,
        num_beams=1,
        eos_token_id=stops,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else stops[0],
        bos_token_id=_first_not_none(
            getattr(getattr(model, "generation_config", None), "bos_token_id", None),
            tok.bos_token_id,
        ),
    )


# A defence that acts while the model generates (ssah/defence) routes every
# `generate_ids` call for its model through itself; everything else stays untouched.
RouteFn = Callable[..., list[Generation]]
_ROUTE: ContextVar[tuple[PreTrainedModel, RouteFn] | None] = ContextVar(
    "ssah_generation_route", default=None
)


@contextmanager
def routed(model: PreTrainedModel, fn: RouteFn) -> Iterator[None]:
    """While open, `generate_ids(model, ...)` calls `fn(rows, **generation kwargs)` instead."""
    token = _ROUTE.set((model, fn))
    try:
        yield
    finally:
        _ROUTE.reset(token)


# What is being generated (an attack suite, `benign`, `utility`), for whoever routes the
# generations: a defence counts its triggers per label (defence/trigger_rate/<label>).
_LABEL: ContextVar[str] = ContextVar("ssah_generation_label", default="")


@contextmanager
def labelled(label: str) -> Iterator[None]:
    """While open, generations are counted under `label` (see `current_label`)."""
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


def current_label() -> str:
    return _LABEL.get()


def batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices of each batch `generate_ids` runs: longest first (OOM early), stable."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _first_not_none(*xs: object) -> object:
    return next((x for x in xs if x is not None), None)


def _finish(tok: PreTrainedTokenizerBase, toks: list[int], stops: list[int]) -> Generation:
    cut = next((k for k, t in enumerate(toks) if t in stops), None)
    kept = toks if cut is None else toks[:cut]
    return Generation(kept, tok.decode(kept, skip_special_tokens=True), cut is not None)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    prefill: Sequence[str] | None = None,
    do_sample: bool = False,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[str]:
    """Answer each prompt under the chat template; returns only the newly generated text.

    `system_prompt=None` formats without a system turn. `prefill[i]` is forced as the start of
    the assistant's answer; it is NOT part of the returned text (judge `prefill[i] + text` to
    see the whole answer). Greedy by default; batched output equals batch-size-1 output.
    """
    rows = encode_chat(tokenizer, prompts, system_prompt, prefill)
    gens = generate_ids(
        model, tokenizer, rows, max_new_tokens, batch_size, do_sample, seed, temperature, top_p
    )
    return [g.text for g in gens]
