"""Calibration sets for unit scoring: safety (harmful prompt + the model's own refusal) and
utility (ordinary instructions with safety-related samples removed).

Both go through `load_records`, so the toy world, AdvBench, Alpaca-cleaned and any local
JSONL with `prompt`/`response` fields share one path. Rows are encoded with
`encode_example` (labels -100 on the prompt), so scorers count response tokens only.
The model's own greedy answers are cached by content (weights hash, prompts, settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.chat import collate, encode_example, encode_prompt
from ssah.data.records import load_records
from ssah.errors import SsahError
from ssah.metrics import atomic_write_text

log = logging.getLogger(__name__)
RESPONSE_MODES = ("field", "self")
SHUFFLES = ("torch", "datasets")


@dataclass
class SetConfig:
    """One calibration set (conf/scoring/*.yaml: calibration.safety / calibration.utility)."""

    source: str
    split: str = "train"
    subset: str | None = None
    columns: dict[str, str] | None = None  # source column -> prompt/response
    input_column: str | None = None  # Alpaca's `input`, appended to the prompt when non-empty
    response: str = "field"  # field: the data's `response`; self: the model's own greedy answer
    n_samples: int = 128
    exclude_keywords: list[str] = field(default_factory=list)  # drop rows containing any
    require_keywords: list[str] = field(default_factory=list)  # keep responses with one of these
    # response=self only: the longest self-generated answer. The authors scored with whole
    # Llama-2-chat refusals (their data/SFT_aligned_llama2-7b-chat-hf_train*.csv; the short
    # variant in their repo has responses of median 32, max 80 words), so the default leaves
    # room for a whole one; answers that reach the limit were cut and are counted in a warning.
    max_new_tokens: int = 256
    # Rows of the source before this index are never drawn: AdvBench's first 100 are the ASR
    # test prompts (the authors' safety csv holds prompts 101-520 only).
    skip_first: int = 0
    # The draw: torch (torch.randperm, ssah's) | datasets (numpy default_rng(seed).permutation,
    # what the authors' `Dataset.shuffle(seed=0)` does).
    shuffle: str = "torch"

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLES:
            raise SsahError(
                f"calibration shuffle={self.shuffle!r} is unknown; use one of {SHUFFLES}."
            )
        if self.skip_first < 0:
            raise SsahError(f"calibration skip_first={self.skip_first} must be >= 0.")
        if self.response not in RESPONSE_MODES:
            raise SsahError(
                f"calibration response={self.response!r} is unknown; use one of {RESPONSE_MODES}."
            )
        if self.n_samples < 1:
            raise SsahError(f"calibration n_samples={self.n_samples} must be >= 1.")


@dataclass
class CalibrationConfig:
    """Both sets plus how they are encoded and batched."""

    safety: SetConfig
    utility: SetConfig
    seed: int = 0
    batch_size: int = 8
    max_length: int = 256
    system_prompt: str | None = None
    gen_batch_size: int = 16
    sort_by_length: bool = True  # less padding; the result does not depend on it

    def __post_init__(self) -> None:
        if isinstance(self.safety, dict):
            self.safety = SetConfig(**self.safety)
        if isinstance(self.utility, dict):
            self.utility = SetConfig(**self.utility)
        if self.batch_size < 1 or self.max_length < 2:
            raise SsahError("calibration.batch_size must be >= 1 and max_length >= 2.")


@dataclass
class CalibrationSet:
    """Encoded rows of one set, the text they came from, and a content hash of the tokens."""

    name: str
    rows: list[dict[str, list[int]]]
    records: list[dict[str, str]]
    digest: str

    @property
    def num_tokens(self) -> int:
        """Counted (response) tokens."""
        return sum(sum(1 for x in r["labels"] if x != -100) for r in self.rows)


def build_set(
    name: str,
    scfg: SetConfig,
    ccfg: CalibrationConfig,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    cache_dir: str | Path | None = None,
    model_digest: str | None = None,
) -> CalibrationSet:
    """Load, filter, sample (seeded), answer (if response=self) and encode one set."""
    cands = _candidates(scfg, ccfg.seed)
    if scfg.response == "field":
        recs = [r for r in cands if _keep_response(r["response"], scfg)][: scfg.n_samples]
    else:
        recs = _self_answers(cands, scfg, ccfg, model, tok, cache_dir, model_digest)
    if not recs:
        raise SsahError(
            f"calibration set {name!r} from {scfg.source!r} is empty after filtering; "
            "loosen exclude_keywords/require_keywords or give more data."
        )
    if len(recs) < scfg.n_samples:
        log.warning("calibration %s: only %d of %d samples", name, len(recs), scfg.n_samples)
    rows = [
        encode_example(tok, r["prompt"], r["response"], ccfg.system_prompt, ccfg.max_length)
        for r in recs
    ]
    rows = [r for r in rows if any(x != -100 for x in r["labels"])]
    if not rows:
        raise SsahError(
            f"calibration set {name!r}: no response token survives max_length={ccfg.max_length}; "
            "raise calibration.max_length."
        )
    return CalibrationSet(name, rows, recs, rows_digest(rows))


def build_calibration(
    ccfg: CalibrationConfig,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    cache_dir: str | Path | None = None,
    model_digest: str | None = None,
) -> dict[str, CalibrationSet]:
    """{'safety': ..., 'utility': ...}."""
    return {
        name: build_set(name, getattr(ccfg, name), ccfg, model, tok, cache_dir, model_digest)
        for name in ("safety", "utility")
    }


def batches(
    rows: Sequence[dict[str, list[int]]], batch_size: int, pad_id: int, sort_by_length: bool = True
) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches in a fixed order (stably sorted by length when asked)."""
    order = list(range(len(rows)))
    if sort_by_length:
        order.sort(key=lambda i: len(rows[i]["input_ids"]))
    return [
        collate([rows[i] for i in order[s : s + batch_size]], pad_id)
        for s in range(0, len(order), batch_size)
    ]


def rows_digest(rows: Sequence[dict[str, list[int]]]) -> str:
    """Content hash of the encoded rows (what the scorer actually sees)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r["input_ids"], r["labels"]], separators=(",", ":")).encode())
    return h.hexdigest()


# ---- loading and filtering ------------------------------------------------------------------
def _candidates(scfg: SetConfig, seed: int) -> list[dict[str, str]]:
    """All usable records in a seeded random order, safety/keyword filter applied to prompts."""
    ds = load_records(scfg.source, scfg.split, scfg.columns, None, scfg.subset)
    need = ["prompt"] + (["response"] if scfg.response == "field" else [])
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        raise SsahError(
            f"calibration data {scfg.source!r} has no {missing} column (has {ds.column_names}); "
            "map it with calibration.<set>.columns."
        )
    out = []
    for i in draw_order(len(ds), seed, scfg.shuffle, scfg.skip_first):
        r = ds[i]
        prompt = str(r["prompt"] or "").strip()
        if scfg.input_column and str(r.get(scfg.input_column) or "").strip():
            prompt = f"{prompt}\n\n{str(r[scfg.input_column]).strip()}"
        resp = str(r.get("response") or "").strip()
        if not prompt or _has_any(prompt + "\n" + resp, scfg.exclude_keywords):
            continue
        out.append({"prompt": prompt, "response": resp})
    return out


def draw_order(n: int, seed: int, shuffle: str = "torch", skip_first: int = 0) -> list[int]:
    """Seeded order of rows skip_first..n-1 (the rows a draw may take, first ones first)."""
    m = max(n - skip_first, 0)
    if shuffle == "datasets":  # datasets.Dataset.shuffle(seed) on the kept rows
        import numpy as np

        perm = np.random.default_rng(seed).permutation(m).tolist()
    else:
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed)).tolist()
    return [skip_first + i for i in perm]


def candidate_prompts(scfg: SetConfig, seed: int = 0) -> list[str]:
    """Every prompt a draw of this set may take (after skip_first and the keyword filter)."""
    return [r["prompt"] for r in _candidates(scfg, seed)]


def _has_any(text: str, words: Sequence[str]) -> bool:
    low = text.lower()
    return any(w.lower() in low for w in words)


def _keep_response(resp: str, scfg: SetConfig) -> bool:
    return bool(resp) and (not scfg.require_keywords or _has_any(resp, scfg.require_keywords))


# ---- the model's own answers ---------------------------------------------------------------
def _self_answers(
    cands: list[dict[str, str]],
    scfg: SetConfig,
    ccfg: CalibrationConfig,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    cache_dir: str | Path | None,
    model_digest: str | None,
) -> list[dict[str, str]]:
    """Answer candidates greedily in seeded order until n_samples answers pass the filter."""
    kept: list[dict[str, str]] = []
    start = 0
    while len(kept) < scfg.n_samples and start < len(cands):
        chunk = cands[start : start + max(scfg.n_samples, ccfg.gen_batch_size)]
        start += len(chunk)
        prompts = [r["prompt"] for r in chunk]
        answers = cached_generate(
            model,
            tok,
            prompts,
            ccfg.system_prompt,
            scfg.max_new_tokens,
            ccfg.gen_batch_size,
            cache_dir,
            model_digest,
        )
        for p, a in zip(prompts, answers, strict=True):
            if _keep_response(a, scfg) and len(kept) < scfg.n_samples:
                kept.append({"prompt": p, "response": a})
    cut = sum(1 for r in kept if _hit_limit(tok, r["response"], scfg.max_new_tokens))
    if cut:
        log.warning(
            "calibration: %d of %d self-generated answers reached max_new_tokens=%d and are cut "
            "short; raise calibration.<set>.max_new_tokens to score full refusals",
            cut,
            len(kept),
            scfg.max_new_tokens,
        )
    return kept


def _hit_limit(tok: PreTrainedTokenizerBase, text: str, max_new_tokens: int) -> bool:
    """The answer (re-tokenised) is as long as the generation limit: it was probably cut."""
    return len(tok(text, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 1


def cached_generate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    system_prompt: str | None,
    max_new_tokens: int,
    batch_size: int,
    cache_dir: str | Path | None = None,
    model_digest: str | None = None,
) -> list[str]:
    """Greedy answers, cached under `cache_dir/generations/` by weights hash and prompts."""
    path = None
    if cache_dir is not None and model_digest is not None:
        key = hashlib.sha256(
            json.dumps([model_digest, prompts, system_prompt, max_new_tokens]).encode()
        ).hexdigest()[:24]
        path = Path(cache_dir) / "generations" / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())["answers"]
    answers = generate_greedy(model, tok, prompts, system_prompt, max_new_tokens, batch_size)
    if path is not None:
        body = {"model": model_digest, "prompts": prompts, "answers": answers}
        atomic_write_text(path, json.dumps(body, indent=1))
    return answers


def generate_greedy(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers; the eval engineer's `ssah.eval.generation.generate` when present."""
    try:
        from ssah.eval.generation import generate
    except ImportError:
        generate = None
    if generate is not None:
        return list(
            generate(
                model,
                tok,
                prompts,
                system_prompt=system_prompt,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
        )
    return _greedy(model, tok, prompts, system_prompt, max_new_tokens, batch_size)


@torch.no_grad()
def _greedy(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    system_prompt: str | None,
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Fallback: plain HF generate, batched, left-padded, greedy."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    out: list[str] = []
    for s in range(0, len(prompts), batch_size):
        enc = [encode_prompt(tok, p, system_prompt) for p in prompts[s : s + batch_size]]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, width - len(e) :] = torch.tensor(e)
            mask[i, width - len(e) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        out += [t.strip() for t in tok.batch_decode(gen[:, width:], skip_special_tokens=True)]
    return out


def describe(sets: dict[str, CalibrationSet]) -> dict[str, Any]:
    """Sizes and hashes for headers and metrics."""
    return {
        n: {"samples": len(s.rows), "tokens": s.num_tokens, "hash": s.digest}
        for n, s in sets.items()
    }
