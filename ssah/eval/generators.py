"""Generators every evaluation path shares: prompt token ids in, response texts out, through
HF `generate` (default) or vLLM; and the redaction that keeps harmful text out of records."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.errors import SsahError
from ssah.eval.generation import generate_ids

Generator = Callable[[list[list[int]]], list[str]]


def make_generator(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    gcfg: dict[str, Any],
    model_path: str | None = None,
) -> Generator:
    """HF generate (default) or vLLM (`backend: vllm`, or `auto` = vLLM when usable)."""
    backend = gcfg.get("backend", "hf")
    kw = dict(
        max_new_tokens=int(gcfg.get("max_new_tokens", 64)),
        do_sample=bool(gcfg.get("do_sample", False)),
        seed=int(gcfg.get("seed", 0)),
        temperature=float(gcfg.get("temperature", 1.0)),
        top_p=float(gcfg.get("top_p", 1.0)),
    )
    if backend in ("vllm", "auto"):
        from ssah.eval import vllm_backend

        usable, why = vllm_backend.available(model_path)
        if usable:
            return vllm_backend.VllmGenerator(str(model_path), tok, gcfg, **kw)
        if backend == "vllm":
            raise SsahError(f"eval.generation.backend=vllm but {why}; use backend=hf.")
    elif backend != "hf":
        raise SsahError(f"eval.generation.backend={backend!r}; use hf, vllm or auto.")
    bs = int(gcfg.get("batch_size", 32))
    return lambda rows: [g.text for g in generate_ids(model, tok, rows, batch_size=bs, **kw)]


def redact_text(text: str) -> str:
    """A response as its length and hash: records stay joinable without the harmful text."""
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"[redacted {len(text)} chars sha1:{digest}]"
