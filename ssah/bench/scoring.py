"""Benchmark of WIFV scoring (`make bench`): time against a plain forward, and memory.

scoring_vs_forward_ratio = WIFV scoring time / a plain no-grad forward of the causal LM
over the same calibration batches, measured in the same run (interleaved, best of
`repeats`; goal <= 1.3). scoring_vs_body_forward_ratio compares with the decoder body
alone (no LM head), which is what scoring runs. Peak extra memory is measured in fresh
subprocesses (peak RSS on CPU, max_memory_allocated on CUDA) for growing numbers of
calibration tokens, next to a reference that materialises all activations.
Writes outputs/bench/scoring.json with the machine and date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ssah.metrics import atomic_write_text
from ssah.scoring.scorers import ScorerConfig, score
from ssah.scoring.stats import collect, decoder_of
from ssah.units import UnitIndex

ROOT = Path(__file__).resolve().parents[2]
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


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m": os.getloadavg()[0],  # other work on the machine skews timings
    }


def random_llama(sizes: dict[str, int], seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(max_position_embeddings=1024, attn_implementation="sdpa", **sizes)
    return LlamaForCausalLM(cfg).eval()


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


def _timed(fn: Callable[[], Any]) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def scoring_vs_forward(
    model: torch.nn.Module, sets: list[list[dict[str, torch.Tensor]]], repeats: int = 2
) -> dict[str, float]:
    """WIFV on every set vs plain forwards over the same batches; best of `repeats`."""
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
    t_fwd, t_body, t_score = [], [], []
    for _ in range(repeats):
        t_fwd.append(_timed(lambda: forward(model)))
        t_score.append(_timed(scoring))
        t_body.append(_timed(lambda: forward(body)))
    f, b, s = min(t_fwd), min(t_body), min(t_score)
    return {
        "forward_s": f,
        "body_forward_s": b,
        "scoring_s": s,
        "scoring_vs_forward_ratio": s / f,
        "scoring_vs_body_forward_ratio": s / b,
        "tokens": float(sum(b["input_ids"].numel() for st in sets for b in st)),
        "counted_tokens": float(sum(int((b["labels"] != -100).sum()) for st in sets for b in st)),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "repeats": float(repeats),
    }


def toy_entry() -> dict[str, Any]:
    """The default toy aligned model on its real calibration sets, if the toy world is built."""
    from omegaconf import OmegaConf

    from ssah.config import compose
    from ssah.data.calibration import batches, build_calibration
    from ssah.models import ModelConfig, load_model, load_tokenizer
    from ssah.scoring.pipeline import ScoringSettings
    from ssah.scoring.unitsfile import model_digest
    from ssah.toy.world import config_key

    cfg = compose("score")
    toy = OmegaConf.to_container(cfg.toy, resolve=True)
    root = Path(toy["cache_dir"]).expanduser().resolve() / config_key(toy)
    if not (root / "DONE").is_file():
        return {"skipped": f"toy world not built at {root}; run `python -m ssah.toy` first"}
    mcfg = ModelConfig(name_or_path=str(root / "aligned"))
    model, tok = load_model(mcfg), load_tokenizer(mcfg)
    settings = ScoringSettings.from_cfg(cfg.scoring)
    ccfg = settings.calibration
    sets = build_calibration(ccfg, model, tok, cfg.paths.score_cache, model_digest(model))
    pad = tok.pad_token_id
    bs = [batches(s.rows, ccfg.batch_size, pad, ccfg.sort_by_length) for s in sets.values()]
    out = {"model": str(root / "aligned"), **scoring_vs_forward(model, bs, repeats=5)}
    threads = torch.get_num_threads()
    if threads > 1:  # one thread: less sensitive to other work on a shared machine
        torch.set_num_threads(1)
        try:
            one = scoring_vs_forward(model, bs, repeats=5)
        finally:
            torch.set_num_threads(threads)
        out["one_thread"] = {
            k: one[k]
            for k in (
                "forward_s",
                "scoring_s",
                "scoring_vs_forward_ratio",
                "scoring_vs_body_forward_ratio",
            )
        }
    return out


def llama_entry() -> dict[str, Any]:
    """Random-init ~100M-parameter Llama (GQA), 16 sequences x 128 tokens, half response."""
    model = random_llama(LLAMA_100M)
    data = random_batches(16, 128, 8, LLAMA_100M["vocab_size"])
    return {"config": LLAMA_100M, **scoring_vs_forward(model, [data], repeats=2)}


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
            return {"error": proc.stderr.strip().splitlines()[-1:]}
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


def out_path() -> Path:
    return Path(os.environ.get("SSAH_OUTPUTS", ROOT / "outputs")) / "bench" / "scoring.json"


def main() -> dict[str, Any]:
    """Run every entry, write outputs/bench/scoring.json, print a short summary."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "goal": {"scoring_vs_forward_ratio": 1.3},
    }
    try:
        result["toy"] = toy_entry()
    except Exception as e:  # the toy world is someone else's build; report, do not crash
        result["toy"] = {"skipped": f"{type(e).__name__}: {e}"}
    result["llama_100m"] = llama_entry()
    result["memory"] = memory_entry()
    result["bench_s"] = time.perf_counter() - t0
    atomic_write_text(out_path(), json.dumps(result, indent=2) + "\n")
    for name in ("toy", "llama_100m"):
        r = result[name]
        if "scoring_vs_forward_ratio" in r:
            print(
                f"scoring {name}: scoring_vs_forward_ratio={r['scoring_vs_forward_ratio']:.3f} "
                f"(body {r['scoring_vs_body_forward_ratio']:.3f}), forward {r['forward_s']:.2f}s"
            )
        else:
            print(f"scoring {name}: {r.get('skipped')}")
    mem = result["memory"]
    for row in mem.get("rows", []):
        print(
            f"scoring memory: {row['calibration_tokens']:.0f} tokens: stream +"
            f"{row['stream_extra_mb']:.1f} MB, materialise +{row['materialise_extra_mb']:.1f} MB"
        )
    print(f"scoring bench -> {out_path()}")
    return result


if __name__ == "__main__":
    main()
