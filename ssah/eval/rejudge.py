"""Judge a finished evaluation again from its records (the text kept in the local run dir),
without generating again: a new judge's rates beside the old ones, with the same n and interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ssah.eval.intervals import add_intervals
from ssah.eval.judges import build_judges
from ssah.eval.judging import judge_specs
from ssah.eval.verdicts import asr_averages, asr_rates


def judgeable(records: Sequence[Mapping[str, Any]]) -> bool:
    """True when the attack records still hold their text (not redacted)."""
    attacks = [r for r in records if r.get("kind") == "attack"]
    return bool(attacks) and not any(
        str(r.get("response", "")).startswith("[redacted") for r in attacks
    )


def rejudge(
    records: list[dict[str, Any]], names: Sequence[str], avg_over: Sequence[str] = ()
) -> dict[str, Any]:
    """Add `judge/<name>` to every attack record (in place) and return the new rate keys:
    `safety/asr/<suite>/<name>` (+ n and Wilson interval), and `safety/asr/avg/<name>`."""
    judges = build_judges(judge_specs(list(names)))
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "attack":
            by_suite.setdefault(str(r["suite"]), []).append(r)
    flags: dict[str, dict[str, list[bool]]] = {}
    for suite, recs in by_suite.items():
        asked = [str(r.get("behavior") or r["prompt"]) for r in recs]
        answers = [str(r["response"]) for r in recs]
        prefills = [str(r.get("prefill") or "") for r in recs]
        for name, j in judges.items():
            fs = [bool(f) for f in j.judge_prefilled(asked, answers, prefills).flags]
            for r, f in zip(recs, fs, strict=True):
                r[f"judge/{name}"] = f
            flags.setdefault(suite, {})[name] = fs
    metrics: dict[str, Any] = asr_rates(flags)
    metrics.update(asr_averages(metrics, list(judges), avg_over))
    return add_intervals(metrics, records, avg_over)
