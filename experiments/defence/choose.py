"""Choose `defence=reevaluate`'s action and alpha on validation (rule fixed before the test
runs): among the validation runs whose over-refusal is at most 5 points above the undefended
run's, the lowest prefill k=10 ASR (keyword judge); ties go to the earlier candidate.
Prints the overrides for the test runs.

    python experiments/defence/choose.py outputs/defence/runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CANDIDATES = {  # run name -> overrides (in tie order)
    "val_steer_a1": "defence.action=steer defence.steer.alpha=1",
    "val_steer_a4": "defence.action=steer defence.steer.alpha=4",
    "val_backtrack_a1": "defence.action=backtrack defence.steer.alpha=1",
}


def main() -> None:
    runs = Path(sys.argv[1])
    m = {n: json.loads((runs / n / "metrics.json").read_text()) for n in ["val_none", *CANDIDATES]
         if (runs / n / "metrics.json").is_file()}  # fmt: skip
    base = m["val_none"]["safety/over_refusal"]
    ok = [n for n in CANDIDATES if n in m and m[n]["safety/over_refusal"] <= base + 0.05]
    best = min(ok, key=lambda n: m[n]["safety/asr/prefill_k10/keyword"])
    for n in CANDIDATES:
        if n in m:
            print(f"# {n}: prefill_k10 {m[n]['safety/asr/prefill_k10/keyword']:.3f} "
                  f"over_refusal {m[n]['safety/over_refusal']:.3f}", file=sys.stderr)  # fmt: skip
    print(CANDIDATES[best])


if __name__ == "__main__":
    main()
