"""Prefilling attack data (in the manner of Qi et al. 2025): the unaligned model's own compliant
answers to harmful prompts, whose first k tokens the eval suite `kind: prefill` then forces
at the start of the aligned model's answer (suites prefill_k5, _k10, _k20).

    python -m ssah.defence.prefill --model <unaligned dir> --prompts <harmful.jsonl> \
        --out outputs/defence/harmbench_prefill.jsonl --limit 100 --tokens 32
    python -m ssah.evaluate ... eval.harmful.local_path=outputs/defence/harmbench_prefill.jsonl \
        +eval.harmful.local_columns.compliance=compliance \
        '+eval.suites.prefill={kind:prefill,field:compliance,depths:[5,10,20]}'

Only answers that ssah's keyword judge counts as compliant are kept, so no prefix carries a
refusal phrase: an answer judged a refusal after the prefill refused in its own words, and
the share of those is the recovery rate (Course-Correction's C2-Eval idea), 1 - ASR(keyword).
The file holds harmful text: write it under outputs/ (gitignored), never into the repository.
On the smollm2 world the defence plan's files are a world artifact (`${smollm2:prefill}`,
conf/world/smollm2.yaml `prefill:`), built at the stage door; this CLI is for other models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssah.errors import SsahError
from ssah.eval.generation import generate_ids, prompt_ids
from ssah.eval.judges import KeywordJudge
from ssah.io import atomic_write_text
from ssah.threads import set_threads


def compliant(prompts: list[str], answers: list[str]) -> list[dict[str, object]]:
    """Rows {prompt, compliance, source_index} for the answers ssah's keyword judge does not
    count as refusals. The one filter of both ways to make this data: the CLI below and the
    smollm2 world's `prefill` artifact (ssah/worlds/smollm2/build.py), which answers through
    the base model's answer cache instead."""
    judge = KeywordJudge()
    return [
        {"prompt": p, "compliance": a, "source_index": i}
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True))
        if not judge.is_refusal(a)
    ]


def build(
    model_dir: str, prompts: list[str], tokens: int, batch_size: int = 16
) -> list[dict[str, object]]:
    """Rows {prompt, compliance, source_index} for the prompts the model complied with."""
    from ssah.models import ModelConfig, load_model, load_tokenizer

    mcfg = ModelConfig(name_or_path=model_dir)
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    gens = generate_ids(model, tok, [prompt_ids(tok, p) for p in prompts], tokens, batch_size)
    return compliant(prompts, [g.text for g in gens])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the unaligned model's checkpoint dir")
    ap.add_argument("--prompts", required=True, help="JSONL of {prompt: ...} lines")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N prompts")
    ap.add_argument("--tokens", type=int, default=32, help="answer length (>= the largest k)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    set_threads(a.threads)
    src = Path(a.prompts)
    if not src.is_file():
        raise SystemExit(f"error: --prompts {src} does not exist.")
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    prompts = [str(r["prompt"]) for r in rows][: a.limit]
    try:
        out = build(a.model, prompts, a.tokens)
    except SsahError as e:
        raise SystemExit(f"error: {e}") from None
    atomic_write_text(a.out, "".join(json.dumps(r) + "\n" for r in out))
    print(f"[prefill] {len(out)} of {len(prompts)} answers compliant -> {a.out}")


if __name__ == "__main__":
    main()
