"""Choose the defence's settings on validation (rule fixed before the test runs): among the
validation runs named `<prefix>*` (default `val_`; each one `python -m ssah.evaluate ... defence=...` on validation
prompts) whose over-refusal is at most `--bound` above the undefended run `val_none`'s, the
lowest prefill k=10 ASR by `--judge`; ties go to the run whose name sorts first. Prints the
chosen run's defence overrides (from its .hydra/overrides.yaml) for the test runs.

    python experiments/defence/choose.py outputs/defence/runs --judge keyword
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def overrides(run: Path) -> str:
    """The run's defence overrides, as given on its command line."""
    path = run / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    return " ".join(str(x) for x in items if str(x).lstrip("+").startswith("defence"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--judge", default="keyword")
    ap.add_argument("--suite", default="prefill_k10")
    ap.add_argument("--bound", type=float, default=0.05, help="over-refusal above val_none")
    ap.add_argument("--prefix", default="val_", help="candidate runs' name prefix")
    a = ap.parse_args(argv)
    found = {*a.runs.glob(f"{a.prefix}*/metrics.json"), a.runs / "val_none" / "metrics.json"}
    m = {p.parent.name: json.loads(p.read_text()) for p in sorted(found) if p.is_file()}
    if "val_none" not in m:
        raise SystemExit(f"error: {a.runs}/val_none/metrics.json is missing; run it first.")
    asr = f"safety/asr/{a.suite}/{a.judge}"
    base = m["val_none"]["safety/over_refusal"]
    names = [n for n in m if n != "val_none" and asr in m[n]]
    ok = [n for n in names if m[n]["safety/over_refusal"] <= base + a.bound]
    for n in ["val_none", *names]:
        held = m[n].get("defence/heldout_false_trigger_rate", float("nan"))
        print(f"# {n}: {a.suite} {m[n][asr]:.3f} over_refusal {m[n]['safety/over_refusal']:.3f} "
              f"held-out false triggers {held:.3f}", file=sys.stderr)  # fmt: skip
    if not ok:
        raise SystemExit("error: no validation run keeps over-refusal within the bound.")
    print(overrides(a.runs / min(ok, key=lambda n: (m[n][asr], n))))


if __name__ == "__main__":
    main()
