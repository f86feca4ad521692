"""Defences that act while the model generates (conf/defence/, beyond the paper).

The paper's consequence: alignment that picks fulfil/refuse only at the first tokens is
superficial; a model should re-evaluate that direction at every step. `reevaluate` does so
from outside the weights: a monitor projects chosen blocks' residual stream onto the model's
own refuse-minus-fulfil direction at every generated token (monitor.py), and when the running
score drifts to the fulfilling side it stops, backtracks or steers (generate.py). Direction,
layers and threshold come from validation prompts (calibrate.py). Baselines: decide once at
the first token, always-on activation addition, a streaming stop.

`defended(model, tok, cfg)` routes every `generate_ids` call for `model` through the defence,
so every eval suite, over-refusal and utility generation is defended alike; `none` is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.defence.config import DefenceConfig


class Session:
    """An attached defence: its generator's counters and the calibration it used."""

    def __init__(self) -> None:
        self.generator: Any = None
        self.extra: dict[str, float] = {}

    def metrics(self) -> dict[str, float]:
        if self.generator is None:
            return {}
        return {**self.extra, **self.generator.metrics()}


@contextmanager
def defended(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    cfg: DefenceConfig,
    source: PreTrainedModel | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[Session]:
    """Calibrate (cached) on `source` (default: `model`), then defend `model`'s generation."""
    session = Session()
    if not cfg.active:
        yield session
        return
    from ssah.defence.calibrate import calibrate, probe_from
    from ssah.defence.generate import DefendedGenerator
    from ssah.eval.generation import routed

    t0 = time.perf_counter()
    raw, where = calibrate(source if source is not None else model, tok, cfg, log=log)
    probe, info = probe_from(raw, cfg.monitor)
    refusal = cfg.refusal if cfg.refusal is not None else str(raw.info["refusal"])
    gen = DefendedGenerator(
        model, tok, probe, cfg.action, cfg.steer.alpha, refusal, cfg.max_backtracks
    )
    session.generator = gen
    session.extra = {
        "defence/calibration_s": time.perf_counter() - t0,
        "defence/threshold": float(probe.threshold),
        "defence/n_layers": float(len(probe.layers)),
        "defence/first_layer": float(min(probe.layers)),
        "defence/alpha": float(cfg.steer.alpha),
        "defence/contrast_refuse_benign": float(info["contrast"] == "refuse_benign"),
        **{f"defence/{k}": float(v) for k, v in info.items() if k != "contrast"},
        "defence/val_n_tune_benign": float(raw.info["n_tune_benign"]),
        "defence/val_n_tune_drift": float(raw.info["n_tune_drift"]),
    }
    log(
        f"[defence] {cfg.name}: action={cfg.action} contrast={info['contrast']} "
        f"layers={probe.layers} "
        f"threshold={probe.threshold:.3f} val false-trigger={info['val_false_trigger_rate']:.3f} "
        f"val detection={info['val_detection_rate']:.3f} ({where})"
    )
    with routed(model, gen):
        yield session


__all__ = ["DefenceConfig", "Session", "defended"]
