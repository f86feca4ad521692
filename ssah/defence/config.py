"""conf/defence/*.yaml as typed dataclasses, checked before any model loads.

Why typed here: a defence is an option of every eval config and every model, so a typo in
`defence.action` must end in one line at the door, not after the model has been calibrated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError

# stop: discard the answer, emit the model's own refusal; backtrack: cut back to the last token
# before the drift and resume with the direction added; steer: add the direction for the rest
# of the answer; always: add it from the first token on (activation addition, no monitor);
# observe: score every token, never act (the monitor's cost alone); steer_stop: steer at the
# first drift, stop (the refusal) if the steered answer drifts again.
ACTIONS = ("none", "stop", "backtrack", "steer", "steer_stop", "always", "observe")
# How the direction is fitted on validation answers (ssah/defence/directions.py): difference
# of means, difference of means on matched pairs (one request refused and force-complied), a
# logistic probe; `auto` chooses on validation.
DIRECTIONS = ("mean_diff", "matched_pairs", "probe")
# The safe side: own refusals (+ every benign answer, + look-alike answers only).
CONTRASTS = ("refuse", "refuse_benign", "refuse_lookalike")


@dataclass
class MonitorConfig:
    """Which layers are read and when the running score counts as a drift."""

    direction: str = "auto"  # auto (chosen on validation) or one of DIRECTIONS
    contrast: str = "auto"  # auto (chosen on validation) or one of CONTRASTS
    probe_l2: float = 1e-3  # the probe's L2 penalty (on features scaled to unit RMS)
    layers: Any = "auto"  # "auto" (chosen on validation) or a list of block indices
    candidates: list[int] | None = None  # layers `auto` chooses from; null: every block
    max_layers: int = 3  # `auto` averages the best 1..max_layers layers' projections
    smoothing: float = 0.5  # running score r_t = smoothing * r_{t-1} + (1 - smoothing) * s_t
    false_trigger_rate: float = 0.05  # share of benign validation answers allowed to trigger
    threshold: float | None = None  # null: calibrated for false_trigger_rate
    first_token_only: bool = False  # decide once, at the first generated token (a baseline)


@dataclass
class SteerConfig:
    """How much of the refuse-minus-fulfil mean difference is added at each monitored layer."""

    alpha: float = 1.0
    grace: int = 2  # steer_stop: steps after the first trigger before a second drift counts


@dataclass
class CalibrationConfig:
    """Validation prompts the direction and threshold come from (never test prompts)."""

    harmful: dict[str, Any] | None = None  # a prompt-set block (conf/eval/harmful/*.yaml)
    benign: dict[str, Any] | None = None
    harmful_limit: int | None = 64
    benign_limit: int | None = 128
    max_new_tokens: int = 64  # conf: the evaluation's own eval.generation.max_new_tokens
    opener: str = "Sure, here is"  # forced before harmful prompts: the model's complying side
    source_model: str | None = None  # calibrate on this checkpoint (null: the evaluated one)
    judge: dict[str, Any] | None = None  # labels validation answers (a judge block; null: keyword)
    # benign rows' field whose values get their own threshold: `category`, the field the
    # evaluation's prompt-set loader fills (and reports over-refusal by); rows without it: one group
    group_field: str | None = "category"
    lookalike: str | None = "own_lookalike"  # the group_field value of harmful-sounding look-alikes
    cache_dir: str = "outputs/defence"
    file: str | None = None  # a calibration.json written earlier (skips calibrating)


@dataclass
class DefenceConfig:
    """One defence: `none` (default) or a monitor plus the action it takes."""

    name: str = "none"
    action: str = "none"
    refusal: str | None = None  # what `stop` emits; null: the model's own validation refusal
    max_backtracks: int = 1  # a drift after the last backtrack ends in `stop`
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    @property
    def active(self) -> bool:
        return self.action != "none"

    @classmethod
    def from_cfg(cls, node: Any) -> DefenceConfig:
        """The `defence` group, resolved and checked; SsahError names the bad key."""
        if node is None:
            return cls()
        plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if not isinstance(plain, dict):
            raise SsahError(f"defence={plain!r} is not a config block; use defence=<name>.")
        from ssah.schema import check_group  # the edge's typed check, shared by every group

        subs = {"monitor": MonitorConfig, "steer": SteerConfig, "calibration": CalibrationConfig}
        flat = {k: v for k, v in plain.items() if k not in subs}
        check_group("defence", flat, _Top, closed=True)
        parts: dict[str, Any] = {}
        for key, schema in subs.items():
            sub = plain.get(key) or {}
            if not isinstance(sub, dict):
                raise SsahError(f"defence.{key}={sub!r} must be a block of options.")
            check_group(f"defence.{key}", sub, schema, closed=True)
            parts[key] = schema(**sub)
        cfg = cls(**flat, **parts)
        cfg.check()
        return cfg

    def check(self) -> None:
        m = self.monitor
        if self.action not in ACTIONS:
            raise SsahError(f"defence.action={self.action!r}; use one of {list(ACTIONS)}.")
        for key, allowed in (("direction", DIRECTIONS), ("contrast", CONTRASTS)):
            value = getattr(m, key)
            if value != "auto" and value not in allowed:
                raise SsahError(
                    f"defence.monitor.{key}={value!r}; use auto or one of {list(allowed)}."
                )
        if m.probe_l2 < 0:
            raise SsahError(f"defence.monitor.probe_l2={m.probe_l2} must be >= 0.")
        if self.steer.grace < 1:
            raise SsahError(f"defence.steer.grace={self.steer.grace} must be >= 1.")
        if not 0.0 <= m.false_trigger_rate < 1.0:
            raise SsahError(
                f"defence.monitor.false_trigger_rate={m.false_trigger_rate} must be in [0, 1)."
            )
        if not 0.0 <= m.smoothing < 1.0:
            raise SsahError(f"defence.monitor.smoothing={m.smoothing} must be in [0, 1).")
        if m.layers != "auto" and not (
            isinstance(m.layers, list) and m.layers and all(isinstance(i, int) for i in m.layers)
        ):
            raise SsahError(
                f"defence.monitor.layers={m.layers!r}; use auto or a list of block indices."
            )
        if m.max_layers < 1:
            raise SsahError(f"defence.monitor.max_layers={m.max_layers} must be >= 1.")
        if self.max_backtracks < 0:
            raise SsahError(f"defence.max_backtracks={self.max_backtracks} must be >= 0.")
        if self.calibration.max_new_tokens < 1:
            raise SsahError("defence.calibration.max_new_tokens must be >= 1.")
        if self.active and not self.calibration.file:
            for key in ("harmful", "benign"):
                if not getattr(self.calibration, key):
                    raise SsahError(
                        f"defence={self.name} needs validation prompts: defence.calibration.{key}"
                        f" is empty (this eval config has no eval.validation.{key}); set it to a "
                        "prompt-set block or give defence.calibration.file."
                    )


@dataclass
class _Top:
    """The flat keys of a `defence` block (its sub-blocks are checked on their own)."""

    name: str = "none"
    action: str = "none"
    refusal: str | None = None
    max_backtracks: int = 1


def as_dict(cfg: DefenceConfig) -> dict[str, Any]:
    """Plain dict (for cache keys and reports)."""
    return dataclasses.asdict(cfg)
