"""A cache of the base model's answers, so a data rebuild that keeps the benign prompts
re-answers nothing (answering ~300 prompts takes ~15 min on a laptop CPU).

One entry per `answer(prompts, n)` call, keyed by the base model artifact's content key, the
generation settings, `n` and the whole ordered prompt list: batched greedy decoding can differ
in the last bits with a prompt's batch mates, so only the same list is sure to give the same
answers a fresh run would. Entries are written atomically; an unreadable one is a miss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssah.io import atomic_write_text


@dataclass(frozen=True)
class AnswerCache:
    """Raw answers (before tidying) under `root`; `salt` names the model and its settings."""

    root: Path
    salt: dict[str, Any] = field(default_factory=dict)

    def path(self, prompts: list[str], n: int) -> Path:
        blob = json.dumps([self.salt, n, prompts], sort_keys=True, ensure_ascii=False)
        return self.root / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"

    def get(self, prompts: list[str], n: int) -> list[str] | None:
        try:
            doc = json.loads(self.path(prompts, n).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(doc, dict) and doc.get("prompts") == prompts and doc.get("n") == n
        answers = doc.get("answers") if ok else None
        ok = isinstance(answers, list) and len(answers) == len(prompts)
        return [str(a) for a in answers] if ok else None  # type: ignore[union-attr]

    def put(self, prompts: list[str], n: int, answers: list[str]) -> Path:
        doc = {"salt": self.salt, "n": n, "prompts": prompts, "answers": answers}
        return atomic_write_text(self.path(prompts, n), json.dumps(doc, ensure_ascii=False))


def cached_answers(
    cache: AnswerCache | None,
    prompts: list[str],
    n: int,
    answer: Callable[[list[str], int], list[str]],
) -> tuple[list[str], bool]:
    """`answer(prompts, n)` through `cache` (written after a miss); and whether it was a hit.
    The one way every world artifact answers with the base model (data and prefill)."""
    texts = cache.get(prompts, n) if cache else None
    if texts is not None:
        return texts, True
    texts = answer(prompts, n)
    if cache:
        cache.put(prompts, n, texts)
    return texts, False
