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


TEXT_FIELDS = ("prompt", "prefill", "response", "behavior")


def redacted(records: list[dict], on: bool = True) -> list[dict]:
    """Copies of eval records with their text as length and hash (`eval.records.redact`): what
    leaves the machine (W&B tables) stays joinable without the harmful text; records.jsonl in the
    local run dir keeps the text so answers can be read and re-judged."""
    if not on:
        return records
    return [
        {k: redact_text(v) if k in TEXT_FIELDS and isinstance(v, str) else v for k, v in r.items()}
        for r in records
    ]


def redact_text(text: str) -> str:
    """A response as its length and hash: records stay joinable without the harmful text."""
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"[redacted {len(text)} chars sha1:{digest}]"
