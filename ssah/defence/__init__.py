"""Defences that act while the model generates (conf/defence/, beyond the paper).

The paper's consequence: alignment that picks fulfil/refuse only at the first tokens is
superficial; a model should re-evaluate that direction at every step. `reevaluate` does so
from outside the weights: a monitor projects chosen blocks' residual stream onto the model's
own refuse-minus-fulfil direction at every generated token (monitor.py), and when the running
score drifts to the fulfilling side it stops, backtracks or steers (generate.py). Direction,
layers and threshold come from validation prompts (calibrate.py; the false-trigger rate is
reported on benign validation prompts that did not set the threshold). Baselines: decide once at
the first token, always-on activation addition, a streaming stop.

`defended(model, tok, cfg)` routes every `generate_ids` call for `model` through the defence,
so every eval suite, over-refusal and utility generation is defended alike; `none` is a no-op.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.defence.config import CONTRASTS, DIRECTIONS, DefenceConfig


class Session:
    """An attached defence: its generator's counters and the calibration it used."""

    def __init__(self) -> None:
        self.generator: Any = None
        self.extra: dict[str, float] = {}

    def metrics(self, observed: Mapping[str, Any] | None = None) -> dict[str, float]:
        """defence/<...>: calibration, the generator's counters and, from the evaluation's
        `observed` metrics, the recovery rate of every prefill suite."""
        if self.generator is None:
            return {}
        return {**self.extra, **self.generator.metrics(), **recovery(observed or {})}

    def annotate(self, records: list[dict[str, Any]]) -> None:
        """`defence/triggered` on each record of a suite whose answers the generator counted
        under that label (`eval.generation.labelled`), by its prompt_id: which prompts the
        monitor fired on, joined to the judges' verdicts in outcomes.jsonl. A suite generated
        more than once under one label (its count differs) is left as it is."""
        if self.generator is None:
            return
        fired = {k: [f for f, _ in v] for k, v in self.generator.stats.by_label.items()}
        count = Counter(str(r.get("suite")) for r in records)
        for r in records:
            flags, i = fired.get(str(r.get("suite"))), r.get("prompt_id")
            if flags is not None and len(flags) == count[str(r["suite"])] and isinstance(i, int):
                r["defence/triggered"] = flags[i]


def recovery(metrics: Mapping[str, Any]) -> dict[str, float]:
    """defence/recovery/<prefill suite>/<judge>: the share of prefilled answers that the judge
    does not count as complying, i.e. that recovered (Course-Correction's measure), 1 - ASR,
    with the ASR's n and interval."""
    out: dict[str, float] = {}
    for key, v in metrics.items():
        parts = key.split("/")
        if len(parts) != 4 or parts[:2] != ["safety", "asr"] or not parts[2].startswith("prefill"):
            continue
        name = f"defence/recovery/{parts[2]}/{parts[3]}"
        out[name] = 1.0 - float(v)
        if f"{key}/n" in metrics:
            out[f"{name}/n"] = float(metrics[f"{key}/n"])
            out[f"{name}/ci_low"] = 1.0 - float(metrics[f"{key}/ci_high"])
            out[f"{name}/ci_high"] = 1.0 - float(metrics[f"{key}/ci_low"])
    return out


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
    probe, choice = probe_from(raw, cfg.monitor)
    refusal = cfg.refusal if cfg.refusal is not None else str(raw.info["refusal"])
    gen = DefendedGenerator(
        model, tok, probe, cfg.action, cfg.steer.alpha, refusal, cfg.max_backtracks,
        grace=cfg.steer.grace,
    )  # fmt: skip
    session.generator = gen
    session.extra = {
        "defence/calibration_s": time.perf_counter() - t0,
        "defence/threshold": float(probe.threshold),
        "defence/n_layers": float(len(probe.layers)),
        "defence/first_layer": float(min(probe.layers)),
        "defence/alpha": float(cfg.steer.alpha),
        **{f"defence/direction_{d}": float(choice.direction == d) for d in DIRECTIONS},
        **{f"defence/contrast_{c}": float(choice.contrast == c) for c in CONTRASTS},
        **{f"defence/{k}": float(v) for k, v in choice.info.items()},
        "defence/val_max_new_tokens": float(raw.info["max_new_tokens"]),
        "defence/val_n_set_benign": float(raw.info["n_set_benign"]),
        "defence/val_n_report_benign": float(raw.info["n_report_benign"]),
        "defence/val_n_tune_drift": float(raw.info["n_tune_drift"]),
    }
    held = choice.info["heldout_false_trigger_rate"]
    log(
        f"[defence] {cfg.name}: action={cfg.action} candidate={choice.candidate} "
        f"layers={probe.layers} threshold={probe.threshold:.3f} "
        f"val detection={choice.info['val_detection_rate']:.3f} held-out false-trigger="
        f"{held:.3f} (n={choice.info['heldout_false_trigger_rate/n']:.0f}) ({where})"
    )
    with routed(model, gen):
        yield session


__all__ = ["DefenceConfig", "Session", "defended"]
