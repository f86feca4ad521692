"""What the defence costs: generation time with the monitor alone (action `observe`, which
scores every token and never acts, so the tokens are identical) and with the chosen action
(e.g. `backtrack`: a false trigger regenerates), each over time without a defence, as medians
of paired runs (each pair runs all three, in rotating order, on the same prompts and with at
least as many new tokens).

    python -m ssah.defence.bench --model <dir> --prompts <benign.jsonl> \
        --calibration outputs/defence/<key> --direction mean_diff --action backtrack --alpha 1 \
        --out outputs/bench/defence_monitor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

from ssah.defence.calibrate import Raw, probe_from
from ssah.defence.config import MonitorConfig
from ssah.defence.generate import DefendedGenerator
from ssah.eval.generation import generate_ids, prompt_ids, routed
from ssah.io import atomic_write_text
from ssah.threads import machine, set_threads


def paired_times(
    model,
    tok,
    rows,
    gens: list[DefendedGenerator | None],
    tokens: int,
    batch_size: int,
    pairs: int,
) -> list[list[float]]:  # noqa: ANN001
    """Seconds per pair for each of `gens` (None: no defence); the order rotates every pair so
    no setting always runs first; every run generates at least `tokens` per answer."""
    kw = dict(max_new_tokens=tokens, batch_size=batch_size, min_new_tokens=tokens)
    times: list[list[float]] = [[] for _ in gens]
    generate_ids(model, tok, rows[:batch_size], 4, batch_size)  # warm-up
    for p in range(pairs):
        for i in [(p + k) % len(gens) for k in range(len(gens))]:
            t0 = time.perf_counter()
            with routed(model, gens[i]) if gens[i] is not None else nullcontext():
                generate_ids(model, tok, rows, **kw)
            times[i].append(time.perf_counter() - t0)
    return times


def ratio(over: list[float], base: list[float]) -> float:
    """The median of paired ratios."""
    return statistics.median(o / b for o, b in zip(over, base, strict=True))


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
    ap.add_argument("--direction", default="auto", help="defence.monitor.direction")
    ap.add_argument("--contrast", default="auto", help="defence.monitor.contrast")
    ap.add_argument("--action", default="observe", help="defence.action, timed beside observe")
    ap.add_argument("--alpha", type=float, default=1.0, help="defence.steer.alpha")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    set_threads(a.threads)
    from ssah.models import ModelConfig, load_model, load_tokenizer

    mcfg = ModelConfig(name_or_path=a.model)
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    lines = Path(a.prompts).read_text().splitlines()
    prompts = [json.loads(x)["prompt"] for x in lines if x.strip()][: a.limit]
    rows = [prompt_ids(tok, p) for p in prompts]
    raw = Raw.load(Path(a.calibration))
    mon = MonitorConfig(max_layers=a.max_layers, direction=a.direction, contrast=a.contrast)
    probe, choice = probe_from(raw, mon)
    observe = DefendedGenerator(model, tok, probe, "observe", 0.0, "")
    act = DefendedGenerator(model, tok, probe, a.action, a.alpha, str(raw.info["refusal"]))
    gens = [None, observe] if a.action == "observe" else [None, observe, act]
    plain, monitored, *rest = paired_times(model, tok, rows, gens, a.tokens, a.batch_size, a.pairs)
    acting, ran = (rest[0], act) if rest else (monitored, observe)  # observe: timed once
    out = {
        "defence_monitor_time_ratio": ratio(monitored, plain),
        "defence_time_ratio": ratio(acting, plain),
        "action": a.action,
        "alpha": a.alpha,
        "candidate": choice.candidate,
        "layers": probe.layers,
        "trigger_rate": ran.stats.triggered / max(1, ran.stats.answers),
        "stop_rate": ran.stats.stopped / max(1, ran.stats.answers),  # answers ended by a refusal
        "plain_s": plain,
        "monitor_s": monitored,
        "action_s": acting,
        "prompts": len(rows),
        "tokens": a.tokens,
        "batch_size": a.batch_size,
        "pairs": a.pairs,
        "threads": a.threads,
        "machine": machine(),
    }
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
