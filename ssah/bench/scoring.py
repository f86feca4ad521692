"""Benchmark of WIFV scoring (`make bench`): time against a plain forward, and memory.

scoring_vs_forward_ratio = WIFV scoring time / a plain no-grad forward of the causal LM over
the same calibration batches: the median over alternating pairs (ssah.bench.common.paired;
goal <= 1.3), with its spread. scoring_vs_body_forward_ratio compares with the decoder body
alone (no LM head), which is what scoring runs. Sections: the toy world's aligned model on
its own calibration sets (built at first use), a random-init ~100M Llama. Peak extra memory is
measured in fresh subprocesses (peak RSS on CPU, max_memory_allocated on CUDA) for growing
numbers of calibration tokens, next to a reference that materialises all activations.
Writes outputs/bench/scoring.json with the machine, its load and the date.

    python -m ssah.bench.scoring [--pairs 5] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ssah.bench.common import (
    TINY_LLAMA,
    BenchError,
    goal,
    machine,
    paired,
    random_llama,
    timed,
    write,
)
from ssah.scoring.scorers import ScorerConfig, score
from ssah.scoring.stats import collect, decoder_of
from ssah.units import UnitIndex

ROOT = Path(__file__).resolve().parents[2]
TINY = {**TINY_LLAMA, "tie_word_embeddings": True}
LLAMA_100M = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)
MEM_MODEL = dict(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)


def random_batches(
    n_seqs: int, seq_len: int, batch_size: int, vocab: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Token batches whose second half is 'response' (labels) and first half prompt (-100)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(0, n_seqs, batch_size):
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g)
        labels = ids.clone()
        labels[:, : seq_len // 2] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def scoring_vs_forward(
    model: torch.nn.Module, sets: list[list[dict[str, torch.Tensor]]], pairs: int = 5
) -> dict[str, Any]:
    """WIFV on every set vs plain forwards over the same batches, in alternating pairs."""
    index = UnitIndex(model)
    device = next(model.parameters()).device
    body = decoder_of(model, index)
    cfg = ScorerConfig("wifv")
    moved = [[{k: v.to(device) for k, v in b.items()} for b in s] for s in sets]

    @torch.no_grad()
    def forward(net: torch.nn.Module) -> None:
        for s in moved:
            for b in s:
                net(input_ids=b["input_ids"], attention_mask=b["attention_mask"])

    def scoring() -> None:
        for stream, s in enumerate(moved):
            score(model, index, s, cfg, stream)

    forward(model), scoring()  # warm-up
    full = paired(lambda: timed(lambda: forward(model)), lambda: timed(scoring), pairs)
    vs_body = paired(lambda: timed(lambda: forward(body)), lambda: timed(scoring), pairs)
    ratio = full["ratio"]["median"]
    return {
        "scoring_vs_forward_ratio": ratio,
        "scoring_vs_forward_ratio_spread": full["ratio"],
        "scoring_vs_forward_ratios": full["ratios"],
        "scoring_vs_body_forward_ratio": vs_body["ratio"]["median"],
        "scoring_vs_body_forward_ratio_spread": vs_body["ratio"],
        "forward_s": full["a"]["median"],
        "body_forward_s": vs_body["a"]["median"],
        "scoring_s": full["b"]["median"],
        "goal": goal(ratio, 1.3),
        "tokens": float(sum(b["input_ids"].numel() for st in sets for b in st)),
        "counted_tokens": float(sum(int((b["labels"] != -100).sum()) for st in sets for b in st)),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "pairs": pairs,
        "torch_threads": torch.get_num_threads(),
    }


def toy_entry(pairs: int = 5, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The toy world's aligned model on its own calibration sets (the world is built if
    missing, as at any stage door)."""

    from ssah.config import compose
    from ssah.models import ModelConfig, load_model, load_tokenizer
    from ssah.scoring.calibration import batches, build_calibration
    from ssah.scoring.pipeline import ScoringSettings
    from ssah.scoring.unitsfile import model_digest
    from ssah.worlds.ensure import ensure_worlds

    cfg = compose("score", list(overrides))
    ensure_worlds(cfg)
    mcfg = ModelConfig.from_cfg(cfg.model)
    model, tok = load_model(mcfg), load_tokenizer(mcfg)
    settings = ScoringSettings.from_cfg(cfg.scoring)
    ccfg = settings.calibration
    sets = build_calibration(ccfg, model, tok, cfg.paths.score_cache, model_digest(model))
    pad = tok.pad_token_id
    bs = [batches(s.rows, ccfg.batch_size, pad, ccfg.sort_by_length) for s in sets.values()]
    return {"model": mcfg.name_or_path, **scoring_vs_forward(model, bs, pairs)}


def llama_entry(pairs: int = 5, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Random-init ~100M-parameter Llama (GQA), 16 sequences x 128 tokens, half response."""
    sizes = sizes or LLAMA_100M
    model = random_llama(sizes)
    n, seq = (16, 128) if sizes is LLAMA_100M else (4, 16)
    data = random_batches(n, seq, min(8, n), sizes["vocab_size"])
    return {"config": sizes, **scoring_vs_forward(model, [data], pairs)}


# ---- memory ------------------------------------------------------------------------------------
def _peak_bytes() -> int:
    """Peak memory of this process so far. VmHWM, not ru_maxrss: ru_maxrss survives execve,
    so a subprocess would start at its parent's peak."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def memory_probe(n_batches: int) -> dict[str, float]:
    """In a fresh process: peak after a plain forward, after WIFV, after materialising."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = random_llama(MEM_MODEL).to(device)
    index = UnitIndex(model)
    data = random_batches(8 * n_batches, 128, 8, MEM_MODEL["vocab_size"])
    with torch.no_grad():
        for b in data:
            model(
                input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)
            )
    base = _peak_bytes()
    stats = collect(model, index, data)
    after_stream = _peak_bytes()
    state = sum(
        t.numel() * t.element_size() for st in stats.stats.values() for t in (st.mean, st.m2)
    )
    kept: list[torch.Tensor] = []  # the naive reference: every activation kept, then torch.var
    hooks = [
        index.module(model, layer, w).register_forward_pre_hook(
            lambda _m, a: kept.append(a[0].reshape(-1, a[0].shape[-1]).clone())
        )
        for layer in range(index.num_layers)
        for w in ("down_proj", "o_proj")
    ]
    with torch.no_grad():
        body = decoder_of(model, index)
        for b in data:
            body(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device))
    for h in hooks:
        h.remove()
    after_naive = _peak_bytes()
    return {
        "calibration_tokens": float(sum(int((b["labels"] != -100).sum()) for b in data)),
        "stream_extra_mb": (after_stream - base) / 2**20,
        "stream_state_mb": state / 2**20,
        "materialise_extra_mb": (after_naive - after_stream) / 2**20,
        "materialised_mb": sum(k.numel() * k.element_size() for k in kept) / 2**20,
    }


def memory_entry(n_batches: tuple[int, ...] = (1, 4, 16)) -> dict[str, Any]:
    rows = []
    for n in n_batches:
        code = f"import json; from ssah.bench.scoring import memory_probe; print(json.dumps(memory_probe({n})))"
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"scoring memory probe ({n} batches) failed: {last}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    growth = rows[-1]["stream_extra_mb"] - rows[0]["stream_extra_mb"]
    return {
        "model": MEM_MODEL,
        "measure": "peak CUDA allocation" if torch.cuda.is_available() else "peak RSS",
        "rows": rows,
        "stream_extra_growth_mb": growth,
        "materialise_extra_growth_mb": rows[-1]["materialise_extra_mb"]
        - rows[0]["materialise_extra_mb"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every section, write outputs/bench/scoring.json, print a short summary. A section
    that fails raises (make bench fails), nothing is written as "skipped"."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="seconds-scale sizes (smoke test)")
    p.add_argument("--toy", nargs="*", default=[], help="overrides for the toy section")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "goal": {"scoring_vs_forward_ratio": 1.3}}
    result["toy"] = toy_entry(args.pairs, tuple(args.toy))
    result["llama_100m" if not args.tiny else "llama_tiny"] = llama_entry(
        args.pairs, TINY if args.tiny else None
    )
    result["memory"] = memory_entry((1,) if args.tiny else (1, 4, 16))
    result["bench_s"] = time.perf_counter() - t0
    path = write("scoring", result)
    for name in ("toy", "llama_100m", "llama_tiny"):
        if name in result:
            r = result[name]
            sp = r["scoring_vs_forward_ratio_spread"]
            print(
                f"scoring {name}: scoring_vs_forward_ratio={sp['median']:.3f} "
                f"[{sp['min']:.3f}, {sp['max']:.3f}] over {r['pairs']} pairs "
                f"(body {r['scoring_vs_body_forward_ratio']:.3f}), forward {r['forward_s']:.2f}s"
            )
    for row in result["memory"]["rows"]:
        print(
            f"scoring memory: {row['calibration_tokens']:.0f} tokens: stream +"
            f"{row['stream_extra_mb']:.1f} MB, materialise +{row['materialise_extra_mb']:.1f} MB"
        )
    print(f"scoring bench -> {path}")
    return result


if __name__ == "__main__":
    main()
