"""Judge a finished evaluation again from its records (the text kept in the local run dir),
without generating again: a new judge's rates beside the old ones, with the same n and interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ssah.eval.intervals import add_intervals
from ssah.eval.judges import build_judges
from ssah.eval.judging import judge_specs


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
    metrics: dict[str, Any] = {}
    for suite, recs in by_suite.items():
        asked = [str(r.get("behavior") or r["prompt"]) for r in recs]
        answers = [str(r["response"]) for r in recs]
        prefills = [str(r.get("prefill") or "") for r in recs]
        for name, j in judges.items():
            flags = j.judge_prefilled(asked, answers, prefills).flags
            for r, f in zip(recs, flags, strict=True):
                r[f"judge/{name}"] = bool(f)
            metrics[f"safety/asr/{suite}/{name}"] = sum(map(bool, flags)) / len(flags)
    for name in judges:
        keys = [f"safety/asr/{s}/{name}" for s in avg_over if f"safety/asr/{s}/{name}" in metrics]
        if keys:
            metrics[f"safety/asr/avg/{name}"] = sum(metrics[k] for k in keys) / len(keys)
    return add_intervals(metrics, records, avg_over)
