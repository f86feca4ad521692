"""Selection rows: a plan row that chooses among candidate rows by a rule, on their results.

Why a row: a study's settings (the defence's direction, action and alpha; activation
addition's alpha) are chosen on validation rows and then fixed for the test rows. Written as a
row, the choice is a result like any other (content-keyed by the rule and the candidates'
keys, kept under results/, exported, rendered), so the report shows what was chosen and why,
and re-running the plan never re-decides what the same candidates already decided.

    choose_defence:
      stage: select
      select:
        candidates: ["val_*"]          # rows (fnmatch patterns, conf order; ties: the first)
        reference: val_none            # the row a `max_above` bound is measured from
        minimize: safety/asr/prefill_k10/@{defence_judge}    # or maximize:
        subject_to: [{metric: safety/over_refusal, max_above: 0.05}]   # or max: / min:
        take: [defence]                # override keys of the chosen row handed on
    test_reevaluate: {stage: evaluate, overrides: ["@{test_eval}", "@{choose_defence}"]}

A row naming `@{choose_defence}` as a whole override item gets the chosen candidate's `take`
overrides in its place (and needs the selection: added for it). The candidates must be rows
on validation prompts: test prompts choose nothing. Rows behind a selection whose candidates
have not finished are planned once they have, in the same run (ssah.plan.__main__ `_more`):
the choice is made per instance, as soon as that instance's candidates are done.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssah.errors import SsahError
from ssah.metrics import write_metrics

STAGE = "select"
FIELDS = ("candidates", "reference", "minimize", "maximize", "subject_to", "take")
BOUNDS = ("max", "min", "max_above", "min_above")


@dataclass(frozen=True)
class Bound:
    """One constraint a candidate must meet: `metric` <= max (>= min), or within `max_above`
    of the reference row's value."""

    metric: str
    kind: str
    limit: float

    def ok(self, value: float, ref: float | None) -> bool:
        if self.kind in ("max_above", "min_above"):
            if ref is None:
                return False
            return (
                value <= ref + self.limit if self.kind == "max_above" else value >= ref - self.limit
            )
        return value <= self.limit if self.kind == "max" else value >= self.limit

    def text(self) -> str:
        return {
            "max": f"{self.metric} <= {self.limit:g}",
            "min": f"{self.metric} >= {self.limit:g}",
            "max_above": f"{self.metric} <= reference + {self.limit:g}",
            "min_above": f"{self.metric} >= reference - {self.limit:g}",
        }[self.kind]


@dataclass(frozen=True)
class Rule:
    """A selection row's rule, its names resolved and its @{vars} spelled."""

    candidates: tuple[str, ...]
    metric: str
    goal: str  # min | max
    bounds: tuple[Bound, ...] = ()
    reference: str | None = None
    take: tuple[str, ...] = ("defence",)

    def text(self) -> str:
        best = "lowest" if self.goal == "min" else "highest"
        cond = " and ".join(b.text() for b in self.bounds)
        where = f" among candidates with {cond}" if cond else ""
        ref = f" (reference: {self.reference})" if self.reference else ""
        return f"{best} {self.metric}{where}{ref}; ties: the first candidate in plan order"


def _where(name: str) -> str:
    return f"plan row {name!r} (stage: select)"


def parse(name: str, spec: Any, rows: Sequence[str]) -> Rule:
    """The rule of a selection row as written (patterns matched against the plan's rows, @{vars}
    left for `spelled`); SsahError names the bad key and the fix."""
    if not isinstance(spec, Mapping):
        raise SsahError(f"{_where(name)}: `select:` must be a block (candidates, minimize, ...).")
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise SsahError(
            f"{_where(name)}: unknown select field(s) {sorted(unknown)}; use {list(FIELDS)}."
        )
    pats = spec.get("candidates")
    if not pats or isinstance(pats, str):
        raise SsahError(
            f"{_where(name)}: select.candidates must be a list of rows (patterns allowed)."
        )
    found = [r for r in rows if r != name and any(fnmatch.fnmatchcase(r, str(p)) for p in pats)]
    ref = spec.get("reference")
    found = [r for r in found if r != ref]
    if not found:
        raise SsahError(f"{_where(name)}: select.candidates {list(pats)} match no row of the plan.")
    if ref is not None and str(ref) not in rows:
        raise SsahError(f"{_where(name)}: select.reference {ref!r} is not a row of the plan.")
    goals = [g for g in ("minimize", "maximize") if spec.get(g)]
    if len(goals) != 1:
        raise SsahError(
            f"{_where(name)}: give exactly one of select.minimize / select.maximize (a metric key)."
        )
    bounds = []
    for b in spec.get("subject_to") or ():
        kinds = [k for k in BOUNDS if k in (b or {})]
        if not isinstance(b, Mapping) or "metric" not in b or len(kinds) != 1:
            raise SsahError(
                f"{_where(name)}: select.subject_to entry {b!r} needs `metric` and one of {list(BOUNDS)}."
            )
        if kinds[0].endswith("_above") and ref is None:
            raise SsahError(
                f"{_where(name)}: select.subject_to {kinds[0]} needs select.reference (a row)."
            )
        bounds.append(Bound(str(b["metric"]), kinds[0], float(b[kinds[0]])))
    return Rule(
        candidates=tuple(found),
        metric=str(spec[goals[0]]),
        goal="min" if goals[0] == "minimize" else "max",
        bounds=tuple(bounds),
        reference=None if ref is None else str(ref),
        take=tuple(str(t) for t in spec.get("take") or ("defence",)),
    )


def needs_of(rule: Rule) -> tuple[str, ...]:
    """The rows a selection waits for: its candidates and its reference."""
    return (*rule.candidates, *((rule.reference,) if rule.reference else ()))


def spelled(rule: Rule, spell_one: Any) -> Rule:
    """The rule with @{vars} in its metrics spelled (spell_one: str -> str)."""
    bounds = tuple(dataclasses.replace(b, metric=spell_one(b.metric)) for b in rule.bounds)
    return dataclasses.replace(rule, metric=spell_one(rule.metric), bounds=bounds)


def users(rows: Mapping[str, Sequence[Any]], selections: set[str]) -> dict[str, set[str]]:
    """row -> the selections its overrides name as `@{selection}` (whole items)."""
    out: dict[str, set[str]] = {}
    for name, overrides in rows.items():
        used = {str(o)[2:-1] for o in _flat(overrides) if _is_ref(o) and str(o)[2:-1] in selections}
        if used:
            out[name] = used
    return out


def _flat(items: Sequence[Any]) -> list[Any]:
    return [y for x in items for y in (_flat(x) if isinstance(x, list | tuple) else [x])]


def _is_ref(o: Any) -> bool:
    return isinstance(o, str) and o.startswith("@{") and o.endswith("}")


@dataclass(frozen=True)
class Candidate:
    """What a selection reads of a finished candidate row."""

    key: str
    metrics: Mapping[str, Any]
    overrides: tuple[str, ...]


def _value(name: str, metrics: Mapping[str, Any], key: str, sel: str) -> float:
    v = metrics.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(float(v)):
        have = sorted(k for k in metrics if k.split("/")[:2] == key.split("/")[:2])[:6]
        raise SsahError(
            f"{_where(sel)}: candidate {name!r} has no metric {key!r} (it has e.g. {have}); "
            "fix select.minimize/maximize/subject_to or the candidate's suites."
        )
    return float(v)


def taken(overrides: Sequence[str], take: Sequence[str]) -> list[str]:
    """The chosen row's overrides whose key starts with one of `take` (e.g. every defence.*)."""

    def key(o: str) -> str:
        return o.lstrip("+~").split("=", 1)[0]

    return [o for o in overrides if any(key(o) == t or key(o).startswith(t + ".") for t in take)]


def decide(name: str, rule: Rule, done: Mapping[str, Candidate]) -> dict[str, Any]:
    """The choice record: every candidate's value and bounds, which met them, the chosen row
    and the overrides it hands on (chosen None when none met the bounds)."""
    ref = done[rule.reference].metrics if rule.reference else None
    rows: list[dict[str, Any]] = []
    for c in rule.candidates:
        m = done[c].metrics
        value = _value(c, m, rule.metric, name)
        checks = []
        for b in rule.bounds:
            v = _value(c, m, b.metric, name)
            r = (
                _value(str(rule.reference), ref, b.metric, name)
                if ref is not None and "above" in b.kind
                else None
            )
            checks.append({"bound": b.text(), "value": v, "reference": r, "ok": b.ok(v, r)})
        n = m.get(f"{rule.metric}/n")
        rows.append({"row": c, "key": done[c].key, "value": value, "n": n, "bounds": checks,
                     "eligible": all(x["ok"] for x in checks)})  # fmt: skip
    ok = [r for r in rows if r["eligible"]]
    sign = 1.0 if rule.goal == "min" else -1.0
    best = min(ok, key=lambda r: sign * r["value"]) if ok else None  # min keeps the first of ties
    chosen = None if best is None else best["row"]
    return {
        "rule": rule.text(),
        "metric": rule.metric,
        "goal": rule.goal,
        "reference": rule.reference,
        "reference_key": done[rule.reference].key if rule.reference else None,
        "candidates": rows,
        "chosen": chosen,
        "overrides": [] if chosen is None else taken(done[chosen].overrides, rule.take),
    }


def key_of(rule: Rule, done: Mapping[str, Candidate]) -> str:
    """Content key: the rule and the keys of the rows it read (keys chain as rows' do)."""
    body = {"stage": STAGE, "rule": dataclasses.asdict(rule),
            "rows": {n: done[n].key for n in needs_of(rule)}}  # fmt: skip
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def write(d: Path, choice: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """metrics.json (flat numbers) and meta.json (last; with the whole choice record)."""
    from ssah.plan.store import write_meta

    d.mkdir(parents=True, exist_ok=True)
    cands = choice["candidates"]
    metrics: dict[str, float] = {
        "select/candidates": float(len(cands)),
        "select/eligible": float(sum(c["eligible"] for c in cands)),
        "select/chosen_index": float(
            next((i for i, c in enumerate(cands) if c["row"] == choice["chosen"]), -1)
        ),
    }
    if choice["chosen"] is not None:
        metrics["select/chosen_value"] = next(
            c["value"] for c in cands if c["row"] == choice["chosen"]
        )
    write_metrics(d, metrics)
    write_meta(d, {**meta, "choice": dict(choice)}, 0.0)


def chosen_overrides(name: str, choice: Mapping[str, Any]) -> list[str]:
    """What `@{name}` stands for; SsahError when no candidate met the bounds."""
    if choice.get("chosen") is None:
        vals = ", ".join(f"{c['row']} {c['value']:.3g}" for c in choice.get("candidates", []))
        raise SsahError(
            f"selection {name}: no candidate meets {choice.get('rule')} ({vals}); loosen "
            "select.subject_to or add candidates (the rows that use it cannot run)."
        )
    return [str(o) for o in choice["overrides"]]


def splice(overrides: Sequence[str], choices: Mapping[str, Sequence[str]]) -> list[str]:
    """Overrides with every whole item `@{selection}` replaced by the chosen overrides."""
    out: list[str] = []
    for o in overrides:
        out += list(choices[o[2:-1]]) if _is_ref(o) and o[2:-1] in choices else [o]
    return out
