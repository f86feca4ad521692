"""Benchmark: tokens/s of batched greedy generation at batch 32 over batch 1 (same run).

Headline `generation_batch_speedup`: fixed-length answers of MAX_NEW_TOKENS tokens (EOS held
back, as throughput benchmarks do). `generation_batch_speedup_stop_at_eos`: the real eval path,
where a batch decodes until its longest answer stops.

Uses the toy aligned model when the default toy world is already built (it is not built
here; `python -m ssah.toy` builds it), else a random-init Llama of the toy's size and a
tiny tokenizer. Both batch sizes decode the same prompts through ssah.eval.generation,
tokens are the generated tokens actually kept. Writes
outputs/bench/generation.json with the machine and the date.

    python -m ssah.bench.generation
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ssah.eval.generation import encode_chat, generate_ids

N_PROMPTS = 32
MAX_NEW_TOKENS = 32
REPEATS = 3


def _toy_model() -> tuple[Any, Any, list[str], str]:
    """(model, tokenizer, prompts, source): the built toy model, else a random toy-sized Llama."""
    try:
        from omegaconf import OmegaConf

        from ssah.config import compose
        from ssah.toy.world import ToyWorld, config_key

        toy = OmegaConf.to_container(compose("toy").toy, resolve=True)
        root = Path(toy["cache_dir"]).expanduser().resolve() / config_key(toy)
        if (root / "DONE").is_file():
            from ssah.models import ModelConfig, load_model, load_tokenizer

            world = ToyWorld(root)
            mc = ModelConfig(name_or_path=str(world.path("aligned")))
            rows = [json.loads(x) for x in world.data("harmful_eval").read_text().splitlines()]
            rows += [json.loads(x) for x in world.data("utility_eval").read_text().splitlines()]
            prompts = [r["prompt"] for r in rows][:N_PROMPTS]
            return load_model(mc), load_tokenizer(mc), prompts, f"toy aligned model ({root})"
    except Exception as e:  # no toy world: fall back, but say why
        print(f"toy world unavailable ({type(e).__name__}: {e}); using a random Llama")
    from ssah.eval.tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(
        len(tok),
        hidden_size=128,
        layers=4,
        heads=4,
        kv_heads=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    words = "how do i make the cake and fix the bicycle before the storm comes tonight".split()
    prompts = [" ".join(words[: 3 + i % 12]) + " ?" for i in range(N_PROMPTS)]
    return model, tok, prompts, "random-init Llama, toy size (hidden 128, 4 layers)"


def _run(
    model: Any, tok: Any, rows: list[list[int]], batch_size: int, fixed: bool
) -> dict[str, float]:
    t0 = time.perf_counter()
    gens = generate_ids(
        model, tok, rows, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size,
        min_new_tokens=MAX_NEW_TOKENS if fixed else 0,
    )  # fmt: skip
    dt_s = time.perf_counter() - t0
    n = sum(len(g.ids) + int(g.stopped) for g in gens)  # kept tokens + the EOS step
    return {"seconds": dt_s, "tokens": float(n), "tokens_per_s": n / dt_s}


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["seconds"])


def main() -> dict[str, Any]:
    """Run the benchmark, write outputs/bench/generation.json, return its content."""
    model, tok, prompts, source = _toy_model()
    model.eval()
    rows = encode_chat(tok, prompts)
    generate_ids(model, tok, rows[:4], max_new_tokens=4, batch_size=4)  # warm-up
    # Interleaved repeats, best of each: load from other processes hits both sizes alike.
    # Headline: fixed-length answers (EOS suppressed until MAX_NEW_TOKENS, as throughput
    # benchmarks do), so both sizes decode the same number of tokens. Also reported: answers
    # that stop at EOS, where a batch runs until its longest answer ends.
    runs: dict[tuple[int, bool], list[dict[str, float]]] = {}
    for _ in range(REPEATS):
        for fixed in (True, False):
            for bs in (1, 32):
                runs.setdefault((bs, fixed), []).append(_run(model, tok, rows, bs, fixed))
    b1, b32 = _best(runs[(1, True)]), _best(runs[(32, True)])
    e1, e32 = _best(runs[(1, False)]), _best(runs[(32, False)])
    result = {
        "generation_batch_speedup": b32["tokens_per_s"] / b1["tokens_per_s"],
        "generation_batch_speedup_stop_at_eos": e32["tokens_per_s"] / e1["tokens_per_s"],
        "batch1": b1,
        "batch32": b32,
        "batch1_stop_at_eos": e1,
        "batch32_stop_at_eos": e32,
        "model": source,
        "n_prompts": len(rows),
        "max_new_tokens": MAX_NEW_TOKENS,
        "repeats_best_of": REPEATS,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(next(model.parameters()).device),
            "python": platform.python_version(),
        },
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    out = Path(os.environ.get("SSAH_OUTPUTS", Path(__file__).resolve().parents[2] / "outputs"))
    path = out / "bench" / "generation.json"
    from ssah.metrics import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(
        f"generation_batch_speedup: {result['generation_batch_speedup']:.1f}x "
        f"({b1['tokens_per_s']:.0f} -> {b32['tokens_per_s']:.0f} tokens/s) -> {path}"
    )
    return result


if __name__ == "__main__":
    main()
