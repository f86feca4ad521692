"""The plan as data: rows (a stage, its overrides, the rows it needs), expanded per world instance.

conf/plan/<name>.yaml lists the rows; conf/world/<name>.yaml `plan:` supplies the values the
rows name as `@{var}`, the rows it leaves out (`skip`) or lets another row stand for (`alias`),
and each stage's leading overrides. Everything here is pure: no Hydra composition, no I/O, so
a bad plan (an unknown row, a need that is missing, a circle) is refused before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ssah.errors import SsahError
from ssah.plan import select as selection
from ssah.plan.grid import expand_claims, expand_rows, expand_tables

STAGES = ("evaluate", "score", "prune", "train", "probe", "transfer")
REF = re.compile(r"@\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class RowSpec:
    """One row of the plan, as written in conf/plan/<name>.yaml."""

    name: str
    stage: str
    overrides: tuple[Any, ...] = ()
    needs: tuple[str, ...] = ()
    table: str = ""
    claim: bool = False
    base_only: bool = False
    select: Mapping[str, Any] | None = None  # stage `select`: its rule (ssah.plan.select)

    @classmethod
    def from_cfg(cls, name: str, c: Mapping[str, Any]) -> RowSpec:
        unknown = set(c) - {"stage", "overrides", "needs", "table", "claim", "base_only", "select"}
        if unknown:
            raise SsahError(
                f"plan row {name!r}: unknown field(s) {sorted(unknown)}; fix conf/plan."
            )
        stage = str(c.get("stage", ""))
        if stage not in (*STAGES, selection.STAGE):
            raise SsahError(
                f"plan row {name!r}: stage {stage!r} is not one of {[*STAGES, selection.STAGE]}."
            )
        if (stage == selection.STAGE) != (c.get("select") is not None):
            raise SsahError(
                f"plan row {name!r}: a `select:` block goes with stage: select, and only there."
            )
        return cls(
            name=name,
            stage=stage,
            overrides=tuple(c.get("overrides") or ()),
            needs=tuple(str(n) for n in c.get("needs") or ()),
            table=str(c.get("table", "")),
            claim=bool(c.get("claim", False)),
            base_only=bool(c.get("base_only", False)),
            select=dict(c["select"]) if c.get("select") is not None else None,
        )


def with_selections(rows: dict[str, RowSpec]) -> dict[str, RowSpec]:
    """Selection rows need their candidates and reference; a row naming `@{selection}`
    needs that selection (so a plan need not spell out what its rule already says)."""
    rules = {
        n: selection.parse(n, r.select, list(rows)) for n, r in rows.items() if r.select is not None
    }
    used = selection.users({n: r.overrides for n, r in rows.items()}, set(rules))
    out = {}
    for n, r in rows.items():
        extra = selection.needs_of(rules[n]) if n in rules else tuple(sorted(used.get(n, ())))
        out[n] = replace(r, needs=tuple(dict.fromkeys((*r.needs, *extra))))
    return out


@dataclass(frozen=True)
class WorldPlan:
    """What a world says about running the plan on it (conf/world/<name>.yaml `plan:`)."""

    seeds: tuple[int, ...]
    full: int
    instance_dir: str
    fresh_process: bool
    logger: str | None
    tables: Mapping[str, bool]
    skip: frozenset[str]
    alias: Mapping[str, str]
    stage_overrides: Mapping[str, tuple[Any, ...]]
    vars: Mapping[str, Any]
    columns: tuple[tuple[str, str, float], ...]
    judge_error: str | None = None  # labelled verdicts (experiments/judges): each judge's error
    rejudge: tuple[str, ...] = ()  # judges every row gains from its records' text (same key)

    @classmethod
    def from_cfg(cls, c: Mapping[str, Any]) -> WorldPlan:
        return cls(
            seeds=tuple(int(s) for s in c["seeds"]),
            full=int(c.get("full", 1)),
            instance_dir=str(c.get("instance_dir", "seed{seed}")),
            fresh_process=bool(c.get("fresh_process", True)),
            logger=c.get("logger"),
            tables={str(k): bool(v) for k, v in dict(c.get("tables") or {}).items()},
            skip=frozenset(str(r) for r in c.get("skip") or ()),
            alias={str(k): str(v) for k, v in dict(c.get("alias") or {}).items()},
            stage_overrides={
                str(k): tuple(v or ()) for k, v in dict(c.get("stage_overrides") or {}).items()
            },
            vars=dict(c.get("vars") or {}),
            columns=tuple((str(h), str(k), float(s)) for h, k, s in c.get("columns") or ()),
            judge_error=str(c["judge_error"]) if c.get("judge_error") else None,
            rejudge=tuple(str(j) for j in c.get("rejudge") or ()),
        )


@dataclass(frozen=True)
class PlannedRow:
    """A row of one instance, its overrides fully spelled out except the dirs of needed rows."""

    name: str
    stage: str
    seed: int
    overrides: tuple[str, ...]
    needs: tuple[str, ...]
    base_only: bool


@dataclass
class Plan:
    """Rows by name (conf order), the tables and claims of the report, the world's part."""

    name: str
    rows: dict[str, RowSpec]
    tables: list[dict[str, Any]]
    claims: list[dict[str, Any]]
    start_order: list[str] = field(default_factory=list)
    # grid rows (ssah.plan.grid): template -> [(axis -> level, row name)]
    grids: dict[str, list[tuple[dict[str, str], str]]] = field(default_factory=dict)
    # each instance's seed is also its world's alignment seed (world module `seeded`)
    align_seed_from_instance: bool = False
    seeds: tuple[int, ...] | None = None  # the plan's own instances (None: the world's)
    skipped_claims: list[str] = field(default_factory=list)  # grid claims this grid cannot make

    @classmethod
    def from_cfg(cls, c: Mapping[str, Any]) -> Plan:
        raw, grids = expand_rows(dict(c["rows"]))
        rows = {str(n): RowSpec.from_cfg(str(n), r) for n, r in raw.items()}
        rows = with_selections(rows)
        claims = [dict(x) for x in c.get("claims") or ()]
        grid_claims, skipped = expand_claims([dict(x) for x in c.get("grid_claims") or ()], grids)
        plan = cls(
            name=str(c.get("name", "plan")),
            rows=rows,
            tables=expand_tables([dict(t) for t in c.get("tables") or ()], grids),
            claims=claims + grid_claims,
            skipped_claims=skipped,
            start_order=_start_order([str(r) for r in c.get("start_order") or ()], grids),
            grids=grids,
            align_seed_from_instance=bool(c.get("align_seed_from_instance", False)),
            seeds=None if c.get("seeds") is None else tuple(int(x) for x in c["seeds"]),
        )
        plan.check()
        return plan

    def check(self) -> None:
        """Every need names a row; no row needs itself through others."""
        for r in self.rows.values():
            missing = [n for n in r.needs if n not in self.rows]
            if missing:
                raise SsahError(
                    f"plan row {r.name!r} needs {missing}, which the plan does not have."
                )
        left = {n: set(r.needs) for n, r in self.rows.items()}
        while left:
            free = [n for n, deps in left.items() if not deps & set(left)]
            if not free:
                raise SsahError(f"plan rows {sorted(left)} need each other in a circle.")
            for n in free:
                del left[n]


def _start_order(order: list[str], grids: Mapping[str, Any]) -> list[str]:
    """A grid template in start_order stands for all its rows, in grid order (a row named
    before keeps its earlier place)."""
    out = [n for r in order for n in ([g for _, g in grids[r]] if r in grids else [r])]
    return list(dict.fromkeys(out))


def enabled_rows(
    plan: Plan, world: WorldPlan, tables: Mapping[str, bool], wanted: Sequence[str] | None
) -> list[str]:
    """Rows that run: switched-on tables, not `skip` or aliased, with everything they need;
    `wanted` (a row subset) also pulls in what its rows need. Conf order."""
    on = {**world.tables, **{str(k): bool(v) for k, v in tables.items()}}
    ids = {r.table for r in plan.rows.values()} | {str(t.get("id")) for t in plan.tables}
    unknown_tables = set(tables) - set(world.tables) - ids  # a table's id hides it too
    if unknown_tables:
        raise SsahError(
            f"tables: unknown table switch(es) {sorted(unknown_tables)}; known: {sorted(set(world.tables))}."
        )
    if wanted is not None:
        unknown = [w for w in wanted if w not in plan.rows]
        if unknown:
            raise SsahError(
                f"rows: unknown row(s) {unknown}; the plan {plan.name!r} has {list(plan.rows)}."
            )
        keep: set[str] = set()
        todo = [world.alias.get(w, w) for w in wanted]
        while todo:
            n = todo.pop()
            if n in keep:
                continue
            if n in world.skip:
                raise SsahError(f"rows: {n!r} is switched off on this world (world.plan.skip).")
            keep.add(n)
            todo += [world.alias.get(d, d) for d in plan.rows[n].needs]
        return [n for n in plan.rows if n in keep]
    ok: list[str] = []
    for n, r in plan.rows.items():  # conf order puts what a row needs before it, or not: loop
        if n in world.skip or n in world.alias or not on.get(r.table, True):
            continue
        ok.append(n)
    changed = True
    while changed:  # drop rows whose needs do not run (e.g. score_ft when FT rows are off)
        changed = False
        for n in list(ok):
            if any(world.alias.get(d, d) not in ok for d in plan.rows[n].needs):
                ok.remove(n)
                changed = True
    return ok


def spell(items: Sequence[Any], values: Mapping[str, Any], rows: set[str], where: str) -> list[str]:
    """Overrides with every `@{var}` replaced by its value (a list value spliced in as
    several overrides), nested values spelled too; `@{row}` of a needed row is kept for later."""
    out: list[str] = []
    for item in items:
        if isinstance(item, list | tuple):
            out += spell(item, values, rows, where)
            continue
        text = str(item)
        value = _whole(text, values)
        if isinstance(value, list | tuple):
            out += spell(value, values, rows, where)
            continue
        out.append(_spell_one(text, values, rows, where))
    return out


def _whole(text: str, values: Mapping[str, Any]) -> Any:
    """The value an item that is exactly `@{var}` stands for, following var -> `@{var2}`."""
    seen: set[str] = set()
    v: Any = text
    while isinstance(v, str) and (m := REF.fullmatch(v)) and m.group(1) in values and v not in seen:
        seen.add(v)
        v = values[m.group(1)]
    return v


def _spell_one(
    text: str, values: Mapping[str, Any], rows: set[str], where: str, depth: int = 0
) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in rows:
            return m.group(0)
        if name not in values:
            raise SsahError(
                f"{where}: @{{{name}}} is neither a world plan var nor a row it needs; "
                f"add it to world.plan.vars or to the row's needs."
            )
        v = values[name]
        if isinstance(v, list | tuple):
            raise SsahError(f"{where}: @{{{name}}} is a list; use it as a whole override item.")
        return str(v)

    spelled = REF.sub(sub, text)
    if spelled != text and REF.search(spelled) and depth < 5:
        return _spell_one(spelled, values, rows, where, depth + 1)
    return spelled


def expand(
    plan: Plan, world: WorldPlan, names: Sequence[str], seed: int, values: Mapping[str, Any]
) -> list[PlannedRow]:
    """The rows of one instance (seed), in `names` order, overrides spelled out."""
    vals = {**world.vars, **values, "seed": seed}
    out = []
    for n in names:
        r = plan.rows[n]
        needs = tuple(world.alias.get(d, d) for d in r.needs)
        rows = set(r.needs)
        lead = spell(world.stage_overrides.get(r.stage, ()), vals, rows, f"world stage {r.stage}")
        own = spell(r.overrides, vals, rows, f"plan row {n!r}")
        refs = {m for o in own for m in REF.findall(o)} - rows
        if refs:
            raise SsahError(f"plan row {n!r} names @{{{sorted(refs)[0]}}} but does not need it.")
        own = [
            REF.sub(lambda m, a=world.alias: "@{" + a.get(m.group(1), m.group(1)) + "}", o)
            for o in own
        ]
        out.append(PlannedRow(n, r.stage, seed, (*lead, *own), needs, r.base_only))
    return out


def with_dirs(row: PlannedRow, dirs: Mapping[str, str]) -> list[str]:
    """The row's overrides with every `@{row}` replaced by that row's result dir."""
    return [REF.sub(lambda m: dirs[m.group(1)], o) for o in row.overrides]
