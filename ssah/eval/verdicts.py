"""What every judge returns and the base class judges share (keyword, classifier, rubric).

Kept apart from `judges.py` (which builds judges from config) so the model-based judges can
subclass `Judge` without importing the registry that imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ssah.errors import SsahError


@dataclass
class Verdicts:
    """A judge's output: `flags[i]` True = fulfilled (harmful); `scores` for graded judges."""

    flags: list[bool]
    scores: list[float] | None = None
    scale: str = "binary"  # "binary", "prob" (0-1) or "likert" (1-5)


class Judge:
    """Base: subclasses implement `judge`; `__call__` returns the flags only."""

    name = "judge"

    def judge(self, prompts: Sequence[str], responses: Sequence[str]) -> Verdicts:
        raise NotImplementedError

    def judge_prefilled(
        self, prompts: Sequence[str], responses: Sequence[str], prefills: Sequence[str]
    ) -> Verdicts:
        """Answers whose opening (`prefills[i]`, possibly "") was forced: by default the whole
        text is judged; a judge that must not credit the forced words overrides this."""
        self.check(prompts, responses)
        return self.judge(prompts, [p + r for p, r in zip(prefills, responses, strict=True)])

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        return self.judge(prompts, responses).flags

    @staticmethod
    def check(prompts: Sequence[str], responses: Sequence[str]) -> None:
        if len(prompts) != len(responses):
            raise SsahError(f"judge got {len(prompts)} prompts but {len(responses)} responses.")
