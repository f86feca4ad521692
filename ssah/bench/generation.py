"""Benchmark: tokens/s of batched greedy generation at batch 32 over batch 1 (same run).

Headline `generation_batch_speedup`: fixed-length answers of MAX_NEW_TOKENS tokens (EOS held
back, as throughput benchmarks do), the median over alternating pairs (batch 1, batch 32;
batch 32, batch 1; ...) of tokens/s at 32 over tokens/s at 1, with its spread; goal >= 5.
`generation_batch_speedup_stop_at_eos`: the real eval path, where a batch decodes until its
longest answer stops. The toy world's aligned model (built at first use, as at any stage
door) on its own eval prompts; both batch sizes decode the same prompts through
ssah.eval.generation, tokens are the generated tokens actually kept.
Writes outputs/bench/generation.json with the machine, its load and the date.

    python -m ssah.bench.generation [--pairs 5] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ssah.bench.common import goal, machine, paired, write
from ssah.eval.generation import encode_chat, generate_ids

N_PROMPTS = 32
MAX_NEW_TOKENS = 32


def toy_model(overrides: tuple[str, ...] = ()) -> tuple[Any, Any, list[str], str]:
    """(model, tokenizer, prompts, source): the toy world's aligned model and eval prompts."""

    from ssah.config import compose
    from ssah.models import ModelConfig, load_model, load_tokenizer
    from ssah.worlds.ensure import ensure_worlds

    cfg = compose("evaluate", list(overrides))
    ensure_worlds(cfg)
    mc = ModelConfig.from_cfg(cfg.model)
    prompts: list[str] = []
    for node in (cfg.eval.harmful, cfg.eval.benign):
        lines = Path(str(node.source)).read_text().splitlines()
        prompts += [json.loads(x)["prompt"] for x in lines if x.strip()]
    return load_model(mc), load_tokenizer(mc), prompts[:N_PROMPTS], mc.name_or_path


def _run(
    model: Any, tok: Any, rows: list[list[int]], batch_size: int, fixed: bool, new: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    gens = generate_ids(
        model, tok, rows, max_new_tokens=new, batch_size=batch_size,
        min_new_tokens=new if fixed else 0,
    )  # fmt: skip
    dt_s = time.perf_counter() - t0
    n = sum(len(g.ids) + int(g.stopped) for g in gens)  # kept tokens + the EOS step
    return {"seconds": dt_s, "tokens": float(n), "tokens_per_s": n / dt_s}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write outputs/bench/generation.json, return its content."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="seconds-scale sizes (smoke test)")
    p.add_argument("--toy", nargs="*", default=[], help="overrides for the toy world")
    args = p.parse_args(argv)
    new = 4 if args.tiny else MAX_NEW_TOKENS
    model, tok, prompts, source = toy_model(tuple(args.toy))
    model.eval()
    rows = encode_chat(tok, prompts)
    generate_ids(model, tok, rows[:4], max_new_tokens=4, batch_size=4)  # warm-up
    big = min(32, len(rows))
    out: dict[str, Any] = {}
    for fixed, key in ((True, "fixed_length"), (False, "stop_at_eos")):
        runs: dict[int, list[dict[str, float]]] = {1: [], big: []}

        def rate(bs: int, fixed: bool = fixed, runs: dict = runs) -> float:
            r = _run(model, tok, rows, bs, fixed, new)
            runs[bs].append(r)
            return r["tokens_per_s"]

        res = paired(lambda: rate(1), lambda: rate(big), args.pairs)
        out[key] = {
            "speedup": res["ratio"]["median"],
            "speedup_spread": res["ratio"],
            "speedups": res["ratios"],
            "batch1_tokens_per_s": res["a"],
            f"batch{big}_tokens_per_s": res["b"],
            "tokens_per_run": runs[1][0]["tokens"],
        }
    speedup = out["fixed_length"]["speedup"]
    result = {
        "generation_batch_speedup": speedup,
        "generation_batch_speedup_spread": out["fixed_length"]["speedup_spread"],
        "generation_batch_speedup_stop_at_eos": out["stop_at_eos"]["speedup"],
        "goal": goal(speedup, 5.0, at_most=False),
        **out,
        "model": source,
        "n_prompts": len(rows),
        "batch_size": big,
        "max_new_tokens": new,
        "pairs": args.pairs,
        "device": str(next(model.parameters()).device),
        "machine": machine(),
    }
    path = write("generation", result)
    sp = result["generation_batch_speedup_spread"]
    print(
        f"generation_batch_speedup: {speedup:.1f}x [{sp['min']:.1f}, {sp['max']:.1f}] over "
        f"{args.pairs} pairs (goal >= 5) -> {path}"
    )
    return result


if __name__ == "__main__":
    main()
