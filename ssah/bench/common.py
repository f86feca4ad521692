"""What every benchmark shares: paired repeated timing, the machine it ran on, failing loudly.

One run of each side is not a measurement on a shared machine: other work shifts both sides
of a ratio differently from one minute to the next. `paired` alternates the two sides (A B,
B A, A B, ...) so drifting load hits both alike, and reports the median ratio with its spread
(min, max, and the quartiles) over the pairs. A section that cannot run raises; `make bench`
then fails instead of writing "skipped".
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssah.threads import machine

ROOT = Path(__file__).resolve().parents[2]
# The --tiny smoke runs' Llama (a seconds-scale check of the plumbing, not a measurement);
# each benchmark adds what its section needs.
TINY_LLAMA = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


class BenchError(RuntimeError):
    """A benchmark section that cannot run (the message says why, and what to run)."""


def random_llama(sizes: dict[str, Any], seed: int = 0) -> Any:
    """A random-init LlamaForCausalLM of `sizes` (LlamaConfig fields; max_position_embeddings
    1024 unless given), eval mode, from the one random-init builder (ssah.models.random_init)."""
    from transformers import LlamaConfig

    from ssah.models import random_init

    defaults = {"max_position_embeddings": 1024, "attn_implementation": "sdpa"}
    return random_init(LlamaConfig(**(defaults | sizes)), seed).eval()


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of fn() (CUDA work finished before the clock stops)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of a list (n >= 1)."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2]}


def paired(a: Callable[[], float], b: Callable[[], float], pairs: int = 5) -> dict[str, Any]:
    """Alternate measurements of A and B (A B, B A, ...); ratio = B / A per pair.

    `a` and `b` return a measured value each (seconds, or a rate). Reports the median ratio
    and its spread over `pairs` pairs, and the values of each side.
    """
    if pairs < 1:
        raise BenchError(f"pairs={pairs}: need at least one pair")
    va: list[float] = []
    vb: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            va.append(a())
            vb.append(b())
        else:
            vb.append(b())
            va.append(a())
    ratios = [y / x for x, y in zip(va, vb, strict=True)]
    return {
        "ratio": spread(ratios),
        "ratios": ratios,
        "a": spread(va),
        "b": spread(vb),
        "pairs": pairs,
    }


def out_dir() -> Path:
    return Path(os.environ.get("SSAH_OUTPUTS", ROOT / "outputs")) / "bench"


def write(area: str, result: dict[str, Any], directory: Path | None = None) -> Path:
    """outputs/bench/<area>.json (or <directory>/<area>.json), atomically, with the machine's
    state at the end too."""
    from ssah.io import atomic_write_text

    result = {**result, "machine_at_end": machine()}
    path = (directory or out_dir()) / f"{area}.json"
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")
    return path


def goal(value: float, limit: float, at_most: bool = True) -> dict[str, Any]:
    """A goal and whether the median met it (a miss is reported, not an error)."""
    met = value <= limit if at_most else value >= limit
    return {"value": value, "limit": limit, "at_most": at_most, "met": bool(met)}
