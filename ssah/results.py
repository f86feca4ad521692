"""A finished row's directory, read in one place: its numbers, its meta and its per-prompt
outcomes, whether the dir is a full local run or the small copy of it that is committed.

A plan row's dir holds metrics.json (the stage's numbers), meta.json (written last by the
runner: the row, seed, world, key, overrides, commit) and the per-prompt outcomes the paired
tests read. A local run has records.jsonl (every generation, text included; gitignored); what
is committed is outcomes.jsonl, the same records less their text. Both are read through
`outcome`, so a report rendered from a committed copy equals the one rendered from the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ssah.io import atomic_write_text

RECORDS = "records.jsonl"
OUTCOMES = "outcomes.jsonl"
LABELS = ("suite", "kind", "task")  # short labels a claim selects on; never prompt or answer text


def outcome(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The per-prompt outcome of one record: its labels and every flag or number (verdicts,
    refused, correct, scores, prompt_id, a defence's trigger), no text; None when it cannot be
    paired (no suite or prompt_id)."""
    keep = {
        k: v
        for k, v in record.items()
        if (k in LABELS and isinstance(v, str)) or isinstance(v, bool | int | float)
    }
    return keep if "suite" in keep and "prompt_id" in keep else None


def outcomes_of(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in map(outcome, records) if o is not None]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file ([] when it is not there); a line that is not one (a
    torn write) is skipped."""
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_outcomes(d: str | Path) -> list[dict[str, Any]]:
    """Per-prompt outcomes of a run dir: from records.jsonl when the run is here, else from the
    committed outcomes.jsonl; [] when it has neither (a stage that generates nothing)."""
    for name in (RECORDS, OUTCOMES):
        if (Path(d) / name).is_file():
            return outcomes_of(read_jsonl(Path(d) / name))
    return []


def per_prompt(
    outcomes: Sequence[Mapping[str, Any]], metric: str, avg_over: Sequence[str] = ()
) -> dict[Any, float] | None:
    """The per-prompt values behind a rate of metrics.json (prompt_id -> 0/1, or the mean over
    several samples or suites of a prompt): what every paired test reads. None when the
    outcomes cannot give that metric."""
    parts = metric.split("/")
    if len(parts) == 4 and parts[:2] == ["safety", "asr"]:
        suites, flag = ([*avg_over] if parts[2] == "avg" else [parts[2]]), f"judge/{parts[3]}"
        keep = [o for o in outcomes if o.get("suite") in suites and flag in o]
    elif len(parts) == 2 and parts[0] == "safety" and parts[1].startswith("over_refusal"):
        suite, flag = "benign" + parts[1].removeprefix("over_refusal"), "refused"
        keep = [o for o in outcomes if o.get("suite") == suite and flag in o]
    elif parts[:2] == ["utility", "accuracy"] and len(parts) <= 3:
        flag = "correct"
        keep = [o for o in outcomes if o.get("kind") == "utility" and flag in o]
        keep = [o for o in keep if len(parts) == 2 or o.get("task") == parts[2]]
    else:
        return None
    sums: dict[Any, list[float]] = {}
    for o in keep:  # several samples (or suites) of one prompt: their mean
        sums.setdefault(o["prompt_id"], []).append(float(bool(o[flag])))
    return {k: sum(v) / len(v) for k, v in sums.items()} if sums else None


def rates(outcomes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every rate the outcomes give per prompt, as its metrics.json key (sorted): each judge's
    ASR per attack suite, over-refusal per benign suite, utility accuracy."""
    out: set[str] = set()
    for o in outcomes:
        suite = str(o.get("suite"))
        if o.get("kind", "attack") == "attack":
            out |= {f"safety/asr/{suite}/{k[6:]}" for k in o if k.startswith("judge/")}
        if "refused" in o and suite.startswith("benign"):
            out.add("safety/over_refusal" + suite.removeprefix("benign"))
        if "correct" in o and o.get("kind") == "utility":
            out.add("utility/accuracy")
    return sorted(out)


def write_outcomes(path: Path, outcomes: Iterable[Mapping[str, Any]]) -> Path:
    """outcomes.jsonl: one outcome a line, keys sorted (what is committed of the records)."""
    return atomic_write_text(
        path, "".join(json.dumps(dict(o), sort_keys=True) + "\n" for o in outcomes)
    )


def refresh_outcomes(d: Path) -> None:
    """outcomes.jsonl afresh from records.jsonl when the run's records are here (a finished
    row, a re-judged one); a committed copy, which has no records, is left as it is."""
    if (d / RECORDS).is_file():
        write_outcomes(d / OUTCOMES, read_outcomes(d))


def write_meta_file(d: Path, meta: Mapping[str, Any]) -> None:
    """meta.json, written whole or not at all: its presence marks the row done (is_done)."""
    atomic_write_text(d / "meta.json", json.dumps(meta, indent=1, default=str) + "\n")


def is_done(d: Path) -> bool:
    """A finished row: its stage wrote metrics.json and the runner wrote meta.json after it."""
    return (d / "metrics.json").is_file() and (d / "meta.json").is_file()


@dataclass(frozen=True)
class Result:
    """One finished row: where it is, what it measured, its meta (row, seed, world, key, ...),
    and its per-prompt outcomes (read on first use, once)."""

    dir: Path
    metrics: dict[str, Any]
    meta: dict[str, Any]

    @property
    def row(self) -> str:
        return str(self.meta.get("row"))

    @property
    def seed(self) -> int:
        return int(self.meta.get("seed", 0))

    @property
    def instance(self) -> str:
        return str(self.meta.get("instance", f"seed{self.seed}"))

    @property
    def world(self) -> str:
        return str(self.meta.get("world", "world"))

    @cached_property
    def outcomes(self) -> list[dict[str, Any]]:
        return read_outcomes(self.dir)


def load(d: Path) -> Result | None:
    """The finished row in `d`, or None (not finished, or its JSON is damaged)."""
    if not is_done(d):
        return None
    try:
        metrics = json.loads((d / "metrics.json").read_text())
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not isinstance(meta, dict):
        return None
    return Result(d, metrics, meta)


def scan(root: Path) -> list[Result]:
    """Every finished row under `root` (a results dir, one world's, or a copy of some)."""
    found = (load(p.parent) for p in sorted(Path(root).rglob("meta.json")))
    return [r for r in found if r is not None]
