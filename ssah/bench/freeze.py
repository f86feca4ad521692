"""Benchmark: training step time with exact freezing (scu_all_cu) over none, same model, same run.

A random-init Llama of ~26M parameters (GQA), a synthetic units file (RU 15%, SCU 5%, UCU 15%,
CU 65% of units), AdamW weight_decay 0.1 with clipping, through the same Lightning harness as
the train stage. Specs alternate in blocks (none, scu_all_cu, none, ...) so load on the machine
hits both alike, and the order alternates from pair to pair (none first, then scu_all_cu first,
...). Each pair's ratio is the median scu_all_cu step over the median none step (first steps
of every block dropped); the headline is the median of the pairs' ratios, with its spread. The time spent inside the freeze hooks (zeroing, restoring; median per step) is
timed too: unlike the ratio, it does not depend on other load on the machine. Also records the extra memory the exact freeze holds (the saved frozen values,
partial parameters only; whole frozen parameters need no copy) against the frozen values.
Goal: freeze_overhead_ratio <= 1.05. Writes outputs/bench/freeze.json.

    python -m ssah.bench.freeze [--steps 6] [--repeats 5] [--batch 8] [--seq 128] [--device cpu]
                                [--tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import LlamaForCausalLM

from ssah.bench.common import TINY_LLAMA, goal, machine, random_llama, spread, write
from ssah.freeze import plan
from ssah.freeze.synthetic import synthetic_units
from ssah.module import CausalLMModule, OptimConfig
from ssah.training import quiet_trainer

SIZE = dict(
    vocab_size=8192,
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=256,
)
TINY = {**TINY_LLAMA, "max_position_embeddings": 64}
SPECS: dict[str, dict[str, Any]] = {
    "none": {"spec": "none", "mode": "none"},
    "scu_all_cu": {"spec": "scu_all_cu", "mode": "freeze", "categories": ["SCU", "CU"]},
}
WARMUP = 2


class StepTimer(pl.Callback):
    """Wall time of every training step (forward, backward, hooks, optimizer, restore)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.hook_times: list[float] = []  # time inside the freeze hooks, per step
        self.hook_acc = [0.0]
        self._t = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._sync(pl_module)
        self.hook_acc[0] = 0.0
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._t)
        self.hook_times.append(self.hook_acc[0])


def model(size: dict[str, int] | None = None) -> LlamaForCausalLM:
    return random_llama(size or SIZE).train()


def loader(batch: int, seq: int, steps: int, vocab: int = SIZE["vocab_size"]) -> DataLoader:
    ids = torch.randint(0, vocab, (batch * steps, seq), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r} for r in ids]
    return DataLoader(rows, batch_size=batch)


def _timed(fn: Any, acc: list[float]) -> Any:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            acc[0] += time.perf_counter() - t

    return wrapper


def one_block(name: str, units: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    m = model(args.size)
    fp = plan({**SPECS[name], "units": units, "verify_every_n_steps": 25}, m, out / name)
    timer = StepTimer()
    for cb in fp.callbacks:  # time the freeze hooks themselves (a noise-free share of a step)
        cb.on_before_optimizer_step = _timed(cb.on_before_optimizer_step, timer.hook_acc)
        cb._after_step = _timed(cb._after_step, timer.hook_acc)
    trainer = quiet_trainer(
        args.steps,
        accelerator="gpu" if args.device == "cuda" else "cpu",
        precision=args.precision,
        gradient_clip_val=1.0,
        callbacks=[*fp.callbacks, timer],
    )
    m.train()
    trainer.fit(
        CausalLMModule(m, OptimConfig(lr=1e-4, weight_decay=0.1, warmup_steps=0)),
        train_dataloaders=loader(args.batch, args.seq, args.steps, args.size["vocab_size"]),
    )
    fp.after_fit(m)
    info: dict[str, Any] = {
        "times": timer.times[WARMUP:],
        "metrics": fp.metrics,
        "hook_s_per_step": statistics.median(timer.hook_times[WARMUP:]),
    }
    if fp.callbacks:
        cb = fp.callbacks[0]
        t = time.perf_counter()
        cb.verify("bench")
        info["verify_s"] = time.perf_counter() - t
        info["saved_bytes"] = cb.saved_bytes()
        info["index_bytes"] = cb.index_bytes()
        info["partial_frozen_value_bytes"] = sum(
            e.saved.numel() * e.param.element_size() for e in cb.entries
        )
    info["params"] = sum(p.numel() for p in m.parameters())
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    blocks: dict[str, list[dict[str, Any]]] = {k: [] for k in SPECS}
    with tempfile.TemporaryDirectory() as tmp:
        units = str(synthetic_units(model(args.size), Path(tmp) / "units.safetensors", seed=0))
        for i in range(args.repeats):  # alternate which spec goes first
            for name in SPECS if i % 2 == 0 else reversed(SPECS):
                blocks[name].append(one_block(name, units, args, Path(tmp)))
    step = {k: statistics.median([t for b in v for t in b["times"]]) for k, v in blocks.items()}
    paired = [
        statistics.median(f["times"]) / statistics.median(n["times"])
        for n, f in zip(blocks["none"], blocks["scu_all_cu"], strict=True)
    ]
    ratio = spread(paired)
    frozen = blocks["scu_all_cu"][0]
    hook = statistics.median(b["hook_s_per_step"] for b in blocks["scu_all_cu"])
    result = {
        "benchmark": "freeze",
        "freeze_overhead_ratio": ratio["median"],
        "freeze_overhead_ratio_spread": ratio,
        "freeze_overhead_ratio_per_pair": paired,
        "goal": goal(ratio["median"], 1.05),
        "goal_memory": "extra memory <= frozen values",
        "freeze_overhead_ratio_pooled": step["scu_all_cu"] / step["none"],
        "freeze_hook_s_per_step": hook,
        "freeze_hook_share_of_step": hook / step["none"],
        "verify_s": frozen["verify_s"],
        "step_s_none": step["none"],
        "step_s_scu_all_cu": step["scu_all_cu"],
        "params": frozen["params"],
        "frozen_params_fraction": frozen["metrics"]["freeze/frozen_params_fraction"],
        "frozen_units_fraction": frozen["metrics"]["freeze/frozen_units_fraction"],
        "extra_memory_bytes": frozen["saved_bytes"],
        "extra_memory_over_frozen_values": frozen["saved_bytes"]
        / max(1, frozen["partial_frozen_value_bytes"]),
        "frozen_value_bytes": int(frozen["metrics"]["freeze/frozen_params"]) * 4,
        "index_bytes": frozen["index_bytes"],
        "max_undone_drift": frozen["metrics"]["freeze/max_undone_drift"],
        "steps_timed_per_spec": sum(len(b["times"]) for b in blocks["none"]),
        "settings": {
            "batch": args.batch,
            "seq": args.seq,
            "steps": args.steps,
            "pairs": args.repeats,
            "device": args.device,
            "precision": args.precision,
            "optimizer": "AdamW wd=0.1, clip 1.0",
            "model": args.size,
        },
        "machine": machine(),
    }
    name = "freeze" if args.device == "cpu" else f"freeze_{args.device}"
    write(name, result, Path(args.out))
    return result


def default_out() -> Path:
    from ssah.bench.common import out_dir

    return out_dir()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=5, help="alternating pairs of blocks")
    p.add_argument("--tiny", action="store_true", help="seconds-scale sizes (smoke test)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="32-true")
    p.add_argument("--out", default=str(default_out()))
    args = p.parse_args(argv)
    args.size = TINY if args.tiny else SIZE
    if args.tiny:
        args.batch, args.seq = min(args.batch, 2), min(args.seq, 16)
    if args.steps <= WARMUP:
        p.error(f"--steps must be > {WARMUP} (the first {WARMUP} steps of a block are not timed)")
    res = run(args)
    sp = res["freeze_overhead_ratio_spread"]
    print(
        f"freeze_overhead_ratio={sp['median']:.3f} [{sp['min']:.3f}, {sp['max']:.3f}] over "
        f"{args.repeats} pairs (goal <= 1.05)"
    )
    print(
        json.dumps(
            {
                k: res[k]
                for k in (
                    "freeze_hook_share_of_step",
                    "step_s_none",
                    "step_s_scu_all_cu",
                    "params",
                    "extra_memory_over_frozen_values",
                )
            }
        )
    )
    return res


if __name__ == "__main__":
    main()
