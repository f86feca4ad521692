"""What the monitor costs: generation time with it (action `observe`, which scores every token
and never acts, so the tokens are identical) over time without it, as the median of paired
runs (each pair runs both, in alternating order, on the same prompts and token count).

    python -m ssah.defence.bench --model <dir> --prompts <benign.jsonl> \
        --calibration outputs/defence/<key> --out outputs/bench/defence_monitor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ssah.defence.calibrate import Raw, probe_from
from ssah.defence.config import MonitorConfig
from ssah.defence.generate import DefendedGenerator
from ssah.eval.generation import generate_ids, prompt_ids, routed
from ssah.io import atomic_write_text
from ssah.threads import set_threads


def paired_times(
    model, tok, rows, gen: DefendedGenerator, tokens: int, batch_size: int, pairs: int
) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """(seconds without, seconds with) per pair; every run generates exactly `tokens`."""
    kw = dict(max_new_tokens=tokens, batch_size=batch_size, min_new_tokens=tokens)
    plain, monitored = [], []
    generate_ids(model, tok, rows[:batch_size], 4, batch_size)  # warm-up
    for p in range(pairs):
        for first in (False, True) if p % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            if first:
                with routed(model, gen):
                    generate_ids(model, tok, rows, **kw)
                monitored.append(time.perf_counter() - t0)
            else:
                generate_ids(model, tok, rows, **kw)
                plain.append(time.perf_counter() - t0)
    return plain, monitored


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSONL of {prompt: ...}")
    ap.add_argument("--calibration", required=True, help="a dir outputs/defence/<key>")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--max-layers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    set_threads(a.threads)
    from ssah.models import ModelConfig, load_model, load_tokenizer

    mcfg = ModelConfig(name_or_path=a.model)
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    lines = Path(a.prompts).read_text().splitlines()
    prompts = [json.loads(x)["prompt"] for x in lines if x.strip()][: a.limit]
    rows = [prompt_ids(tok, p) for p in prompts]
    probe, _ = probe_from(Raw.load(Path(a.calibration)), MonitorConfig(max_layers=a.max_layers))
    gen = DefendedGenerator(model, tok, probe, "observe", 0.0, "")
    plain, mon = paired_times(model, tok, rows, gen, a.tokens, a.batch_size, a.pairs)
    ratios = [m / p for m, p in zip(mon, plain, strict=True)]
    out = {
        "defence_monitor_time_ratio": statistics.median(ratios),
        "ratios": ratios,
        "plain_s_median": statistics.median(plain),
        "monitor_s_median": statistics.median(mon),
        "layers": probe.layers,
        "prompts": len(rows),
        "tokens": a.tokens,
        "batch_size": a.batch_size,
        "pairs": a.pairs,
        "threads": a.threads,
        "torch": torch.__version__,
    }
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
