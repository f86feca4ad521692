"""The test table of experiments/defence/README.md from outputs/defence/runs/test_* (paired on
the same prompts: Wilson intervals, Newcombe paired differences, exact McNemar p).

    PYTHONPATH=. python experiments/defence/table.py
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, "experiments/defence")
from compare import outcomes

from ssah.stats import fmt_ci, mcnemar, wilson

R = Path("outputs/defence/runs")
conds = [
    (n, d)
    for n, d in [
        ("reevaluate (steer, alpha 4)", "test_reevaluate"),
        ("streaming stop", "test_streaming_stop"),
        ("decide once", "test_decide_once"),
        ("always-on activation addition", "test_actadd"),
    ]
    if (R / d / "metrics.json").is_file()
]
rows = [
    ("past-tense ASR, `keyword`", "keyword", "past_tense"),
    ("past-tense ASR, `keyword_paper`", "keyword_paper", "past_tense"),
    ("prefill k=10 ASR, `keyword`", "keyword", "prefill_k10"),
    ("prefill k=10 ASR, `keyword_paper`", "keyword_paper", "prefill_k10"),
    ("over-refusal, 71 look-alikes", "keyword", "over_refusal"),
    ("QA accuracy (40)", "keyword", "qa"),
]
head = "| measure | none | " + " | ".join(f"{n} | paired diff vs none" for n, _ in conds) + " |"
lines = [head, "|---|---|" + "---|---|" * len(conds)]
for label, j, key in rows:
    b = outcomes(R / "test_none", j)[key]
    k = sum(b.values())
    lo, hi = wilson(k, len(b))
    cells = [f"{fmt_ci(k / len(b), lo, hi)} n={len(b)}"]
    for _n, d in conds:
        o = outcomes(R / d, j)[key]
        ids = sorted(set(b) & set(o))
        xa = [b[i] for i in ids]
        xb = [o[i] for i in ids]
        kk = sum(xb)
        lo, hi = wilson(kk, len(ids))
        pr = mcnemar(xa, xb)
        cells += [
            f"{fmt_ci(kk / len(ids), lo, hi)}",
            f"{fmt_ci(pr.diff, pr.ci_low, pr.ci_high)}, p={pr.p:.2g}",
        ]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
m0 = json.loads((R / "test_none/metrics.json").read_text())
ms = [json.loads((R / d / "metrics.json").read_text()) for _, d in conds]


def row(label: str, base: str, vals: list[str]) -> str:
    return f"| {label} | {base} | " + "".join(f"{v} |  | " for v in vals).rstrip(" ") + ""


lines.append(row("reference-answer PPL (24, teacher-forced)", f"{m0['utility/ppl']:.3f}",
                 [f"{m['utility/ppl']:.3f}" for m in ms]))  # fmt: skip
lines.append(row("defence: trigger rate, all answers", "",
                 [f"{100 * m['defence/trigger_rate']:.1f} (n={int(m['defence/answers'])})" for m in ms]))  # fmt: skip
lines.append(row("evaluation wall time, s (loaded machine)", f"{m0['time/eval_s']:.0f}",
                 [f"{m['time/eval_s']:.0f}" for m in ms]))  # fmt: skip
print("\n".join(lines))
