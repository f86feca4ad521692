"""Grid rows: one row template of conf/plan/<name>.yaml expanded over named axes.

    ft_budget:
      stage: train
      grid:
        selection:                     # a mapping: each level sets vars of its own
          safety: {freeze: [freeze=budget, freeze.selection=safety]}
          random: {freeze: [freeze=budget_random, freeze.match_kv_groups=true]}
        budget: [0.01, 0.05]           # a list: the levels themselves
        p: [0.0, 0.1]
      overrides: ["@{freeze}", "freeze.budget=@{budget}", "task.mix_ratio=@{p}"]

becomes one ordinary row per combination, named `ft_budget__selection_safety__budget_0p01__p_0`
(axes in conf order, levels written with `g` and `.` -> `p`, `-` -> `m`): only letters, digits
and `_`, so a grid row is an `@{row}`, a `rows=[...]` entry and a result dir like any row, and
the name of a combination never changes when levels are added. `@{axis}` and a level's own vars
are spelled here; every other `@{var}` is left for the world (ssah.plan.spec.spell), so a plan
stays pure data and the seed axis stays the plan's instances. Claims and tables name a grid by
its template: `grid_claims` pair two levels of one axis for every combination of the others,
a `curves` table gets its points (row, x, line, panel) from here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ssah.errors import SsahError

LEVEL = re.compile(r"[A-Za-z0-9_.\-]+")
AXIS = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def level_text(v: Any) -> str:
    """A level as it reads in a row name and in `@{axis}`: numbers with `g` (0.0 -> 0)."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return f"{v:g}"
    return str(v)


def row_name(template: str, combo: Mapping[str, Any]) -> str:
    """`ft_budget__selection_safety__budget_0p05__p_0`: stable, and a valid `@{row}`."""
    parts = [f"{a}_{level_text(v).replace('.', 'p').replace('-', 'm')}" for a, v in combo.items()]
    return "__".join([template, *parts])


def label(template: str, combo: Mapping[str, Any]) -> str:
    """How a report shows a grid row: `ft_budget[selection=safety, budget=0.05, p=0]`."""
    return f"{template}[{', '.join(f'{a}={level_text(v)}' for a, v in combo.items())}]"


def axes_of(name: str, grid: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """axis -> level text -> the vars that level sets (`{axis: level}` plus its mapping's)."""
    if not isinstance(grid, Mapping) or not grid:
        raise SsahError(f"plan row {name!r}: grid must map axis names to levels; fix conf/plan.")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, levels in grid.items():
        if not AXIS.fullmatch(str(axis)):
            raise SsahError(f"plan row {name!r}: grid axis {axis!r} must be a plain name.")
        items = levels.items() if isinstance(levels, Mapping) else ((v, {}) for v in levels or ())
        out[str(axis)] = {}
        for level, extra in items:
            text = level_text(level)
            if not LEVEL.fullmatch(text):
                raise SsahError(
                    f"plan row {name!r}: grid level {text!r} of {axis!r} may hold only letters, "
                    "digits, '.', '-' and '_'; rename it."
                )
            if not isinstance(extra, Mapping):
                raise SsahError(
                    f"plan row {name!r}: grid.{axis}.{text} must be a mapping of vars; fix conf/plan."
                )
            out[str(axis)][text] = {str(axis): level if not isinstance(level, str) else text,
                                    **{str(k): v for k, v in extra.items()}}  # fmt: skip
        if not out[str(axis)]:
            raise SsahError(f"plan row {name!r}: grid axis {axis!r} has no levels.")
    return out


def combos(name: str, grid: Mapping[str, Any]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every combination of levels (conf order, last axis fastest): (axis -> level, vars)."""
    axes = axes_of(name, grid)
    out = []
    for picked in itertools.product(*(list(levels) for levels in axes.values())):
        combo = dict(zip(axes, picked, strict=True))
        values: dict[str, Any] = {}
        for axis, level in combo.items():
            values.update(axes[axis][level])
        out.append((combo, values))
    return out


def _spell(item: Any, values: Mapping[str, Any]) -> Any:
    """`@{v}` of the grid's vars replaced (a whole-item list value spliced by the caller)."""
    if isinstance(item, list | tuple):
        return [_spell(x, values) for x in item]
    text = str(item)
    whole = re.fullmatch(r"@\{([A-Za-z0-9_]+)\}", text)
    if whole and whole.group(1) in values:
        v = values[whole.group(1)]
        return [_spell(x, values) for x in v] if isinstance(v, list | tuple) else level_text(v)
    return re.sub(
        r"@\{([A-Za-z0-9_]+)\}",
        lambda m: level_text(values[m.group(1)]) if m.group(1) in values else m.group(0),
        text,
    )


def expand_rows(rows: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Plan rows with every grid template replaced by its rows (in place, conf order), and
    template -> [(combo, row name)] for claims and tables."""
    out: dict[str, dict[str, Any]] = {}
    grids: dict[str, list[tuple[dict[str, str], str]]] = {}
    for name, row in rows.items():
        row = dict(row)
        grid = row.pop("grid", None)
        if grid is None:
            out[str(name)] = row
            continue
        grids[str(name)] = []
        for combo, values in combos(str(name), grid):
            one = dict(row)
            one["overrides"] = [_spell(o, values) for o in row.get("overrides") or ()]
            one["needs"] = [str(_spell(n, values)) for n in row.get("needs") or ()]
            rname = row_name(str(name), combo)
            out[rname] = one
            grids[str(name)].append((combo, rname))
    return out, grids


def grid_rows(
    grids: Mapping[str, Any], template: str, where: str
) -> list[tuple[dict[str, str], str]]:
    if template not in grids:
        raise SsahError(f"{where}: grid {template!r} is not a grid row of the plan; "
                        f"grids: {sorted(grids)}.")  # fmt: skip
    return list(grids[template])


def expand_claims(
    specs: Sequence[Mapping[str, Any]], grids: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """`grid_claims` entries -> ordinary claims: for every combination of the other axes, b's
    level vs a's level of `axis` (a claim id per combination, the combination in its text).

        {id: safety_vs_random, grid: ft_budget, axis: selection, a: random, b: safety,
         claim: "...", metric: "@{asr}", direction: -1}

    A claim naming a level the grid lacks (a piece that removes it, `~plan.rows.<grid>.grid.
    <axis>.<level>`, or a typo) is skipped, either side alike; the second list says which, one
    line each, for the runner to print."""
    out: list[dict[str, Any]] = []
    skipped: list[str] = []
    for spec in specs:
        spec = dict(spec)
        where = f"grid_claims {spec.get('id')!r}"
        rows = grid_rows(grids, str(spec.pop("grid", "")), where)
        axis, a, b = (
            str(spec.pop("axis", "")),
            level_text(spec.pop("a", "")),
            level_text(spec.pop("b", "")),
        )
        if not rows or axis not in rows[0][0]:
            raise SsahError(f"{where}: axis {axis!r} is not an axis of its grid; fix conf/plan.")
        levels = {c[axis] for c, _ in rows}
        gone = [x for x in (a, b) if x not in levels]
        if gone:
            skipped.append(f"{where} skipped: {axis} level(s) {gone} not in this grid "
                           f"(levels: {sorted(levels)}); if that is a typo, fix conf/plan.")  # fmt: skip
            continue
        by = {tuple(sorted(c.items())): n for c, n in rows}
        for combo, name in rows:
            if combo[axis] != b:
                continue
            a_name = by[tuple(sorted({**combo, axis: a}.items()))]
            rest = {k: v for k, v in combo.items() if k != axis}
            tail = ", ".join(f"{k}={v}" for k, v in rest.items())
            out.append({**spec, "id": f"{spec['id']}__{row_name('', rest).lstrip('_')}",
                        "claim": f"{spec['claim']} ({tail})" if tail else str(spec["claim"]),
                        "a": {"row": a_name}, "b": {"row": name}})  # fmt: skip
    return out, skipped


def expand_tables(
    tables: Sequence[Mapping[str, Any]], grids: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A table naming `grid: <template>` gets `points`: [row, {axis: level}] of every grid row;
    `start: <template>` (e.g. the unfrozen row per p) gets `start_points` likewise."""
    out = []
    for t in tables:
        t = dict(t)
        for key, dest in (("grid", "points"), ("start", "start_points")):
            if t.get(key) and str(t[key]) in grids:
                t[dest] = [
                    [n, c] for c, n in grid_rows(grids, str(t[key]), f"table {t.get('id')!r}")
                ]
            elif key == "grid" and t.get(key):
                grid_rows(grids, str(t[key]), f"table {t.get('id')!r}")  # raises: names no grid
        out.append(t)
    return out
