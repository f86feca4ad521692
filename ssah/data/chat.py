"""Chat-template formatting and prompt-masked tokenisation shared by training, scoring and eval."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100


def messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """System (optional) and user turns."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": prompt}]


def prompt_text(tok: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None = None) -> str:
    """The chat-formatted prompt, ending where the assistant's answer starts."""
    return tok.apply_chat_template(
        messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True
    )


def encode_prompt(
    tok: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None = None
) -> list[int]:
    """Token ids of the formatted prompt (the template adds BOS where the model wants it)."""
    return tok(prompt_text(tok, prompt, system_prompt), add_special_tokens=False)["input_ids"]


def encode_example(
    tok: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    system_prompt: str | None = None,
    max_length: int = 512,
) -> dict[str, list[int]]:
    """input_ids and labels for one example; labels are IGNORE on every prompt token.

    The response ends with EOS so the model learns to stop. Truncation keeps the prompt
    and cuts the response.
    """
    p = encode_prompt(tok, prompt, system_prompt)
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[:max_length]
    labels = ([IGNORE] * len(p) + r)[:max_length]
    return {"input_ids": ids, "labels": labels}


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into a batch with attention_mask."""
    width = max(len(r["input_ids"]) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        labels[i, :k] = torch.tensor(r["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
