"""What every judge returns and the base class judges share (keyword, classifier, rubric).

Kept apart from `judges.py` (which builds judges from config) so the model-based judges can
subclass `Judge` without importing the registry that imports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def asr_rates(flags: Mapping[str, Mapping[str, Sequence[bool]]]) -> dict[str, float]:
    """`safety/asr/<suite>/<judge>`: the share of answers flagged as complying, per suite and
    judge; the one place an evaluation and a later re-judging compute them."""
    return {
        f"safety/asr/{suite}/{judge}": sum(map(bool, fs)) / len(fs) if fs else 0.0
        for suite, by_judge in flags.items()
        for judge, fs in by_judge.items()
    }


def asr_averages(
    metrics: Mapping[str, float], judges: Sequence[str], avg_over: Sequence[str]
) -> dict[str, float]:
    """`safety/asr/avg/<judge>`: the mean of that judge's ASR over the `avg_over` suites
    present in `metrics` (read after every suite, the paper protocol's rows included)."""
    out: dict[str, float] = {}
    for judge in judges:
        keys = [f"safety/asr/{s}/{judge}" for s in avg_over if f"safety/asr/{s}/{judge}" in metrics]
        if keys:
            out[f"safety/asr/avg/{judge}"] = sum(metrics[k] for k in keys) / len(keys)
    return out
