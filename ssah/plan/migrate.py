"""One-off: the freeze-budget rows of the removed study runner (ssah/plan/freeze_budget.py,
experiments/freeze_budget/results/<old name>.json) as plan rows of conf/plan/freeze_budget.yaml
(results/smollm2/<row>-<key>/: metrics.json, meta.json, outcomes.jsonl), so the plan's report
renders them.

Their content keys cannot be the plan's: a key hashes the composed config, and the config those
commands composed on 2026-12-02 is not what they compose today (eval.judges has gained
`compliance` since), while the random rows ran without `freeze.match_kv_groups`, which the plan
turns on. Giving them today's key would mark rows done that never ran with the compliance judge
(and cannot gain it: no text was kept), so the plan would never run them. They get a key of
their own instead, the hash of the command they record, which no composed config can have: the
report finds them by meta.json (row, instance) as it finds every row, the runner does not count
them as done, and a re-run row (finished later) replaces them in the report (reports.latest).
meta.json says where each came from (`migrated_from`, the command in `overrides`).

    python -m ssah.plan.migrate experiments/freeze_budget/results
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ssah.errors import SsahError
from ssah.io import atomic_write_text
from ssah.plan.grid import row_name
from ssah.results import write_meta_file, write_outcomes

OLD = re.compile(r"a(\d+)_(?:noft|s(\d+)_p([0-9.]+)_(none|[a-z_]+_b[0-9.]+))")
SUITES = {"direct": "attack", "past_tense": "attack", "benign": "over_refusal"}


def new_name(old: Mapping[str, Any]) -> str:
    """The plan row an old result stands for (conf/plan/freeze_budget.yaml's names)."""
    sel = str(old["selection"])
    if sel == "noft":
        return "noft"
    if sel == "none":
        return row_name("ft_none", {"p": float(old["p"])})
    return row_name(
        "ft_budget", {"selection": sel, "budget": float(old["budget"]), "p": float(old["p"])}
    )


def key_of(old: Mapping[str, Any]) -> str:
    """A key no composed config has: the hash of the command the old runner recorded."""
    text = json.dumps({"migrated": "ssah.plan.freeze_budget", "command": old["command"]})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def outcomes(flags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The old 0/1 strings (position = prompt_id) as outcomes.jsonl lines."""
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for name, bits in sorted(flags.items()):
        suite, flag = name.split("/")
        if suite not in SUITES:
            raise SsahError(f"flags {name!r}: unknown suite; known: {sorted(SUITES)}.")
        for i, b in enumerate(bits):
            o = by.setdefault((suite, i), {"kind": SUITES[suite], "suite": suite, "prompt_id": i})
            o["refused" if flag == "refused" else f"judge/{flag}"] = b == "1"
    return [by[k] for k in sorted(by)]


def convert(old: Mapping[str, Any], before: Mapping[str, float]) -> tuple[str, dict, dict, list]:
    """(dir name, metrics, meta, outcomes) of one old result. `before`: the no-FT row's
    held-out loss of the same alignment seed, which the train stage now records itself as
    task/heldout_loss_start (the no-FT evaluate row no longer carries a task's loss)."""
    row, key = new_name(old), key_of(old)
    metrics = dict(old["metrics"])
    if old["selection"] == "noft":
        metrics = {k: v for k, v in metrics.items() if not k.startswith("task/")}
    elif "task/heldout_loss" in before:
        metrics["task/heldout_loss_start"] = before["task/heldout_loss"]
    stage, *args = str(old["command"]).removeprefix("python -m ssah.").split()
    meta = {
        "plan": "freeze_budget",
        "row": row,
        "seed": int(old["seed"]),
        "instance": f"seed{int(old['seed'])}",
        "stage": stage,
        "world": "smollm2",
        "key": key,
        "overrides": [a for a in args if not a.startswith(("threads=", "logger="))],
        "machine": old.get("machine"),
        "finished": f"{old['finished_utc']}:00 UTC",
        "seconds": old.get("cpu_s", old.get("wall_s")),
        "migrated_from": f"experiments/freeze_budget/results/{old['row']}.json "
        "(ssah/plan/freeze_budget.py; a key of its own, see ssah/plan/migrate.py)",
    }
    return f"{row}-{key}", metrics, meta, outcomes(old.get("flags") or {})


def migrate(results: Path, world: str = "smollm2") -> list[Path]:
    """Every old <name>.json under `results` -> results/<world>/<row>-<key>/; the old file is
    removed once its row is written (its content is all in the new files)."""
    olds = {
        p: json.loads(p.read_text())
        for p in sorted(results.glob("*.json"))
        if OLD.fullmatch(p.stem)
    }
    noft = {int(o["align_seed"]): o["metrics"] for o in olds.values() if o["selection"] == "noft"}
    made = []
    for path, old in olds.items():
        name, metrics, meta, outs = convert(old, noft.get(int(old["align_seed"]), {}))
        d = results / world / name
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "metrics.json", json.dumps(metrics, indent=1, sort_keys=True) + "\n")
        if outs:
            write_outcomes(d / "outcomes.jsonl", outs)
        write_meta_file(d, meta)  # last: done
        path.unlink()
        made.append(d)
    return made


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: python -m ssah.plan.migrate <experiments/freeze_budget/results>",
            file=sys.stderr,
        )
        return 2
    for d in migrate(Path(argv[0])):
        print(f"[migrate] {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
