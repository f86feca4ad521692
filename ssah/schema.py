"""Typed configs at the edge: each config group has a schema (the dataclass its code builds,
or a small one here), checked at the stage door before any model or data loads.

A value of the wrong type, an unknown key, or a combination that cannot mean anything ends in
one `SsahError` line naming the key, the value and what is expected. The checks read the
dataclasses' own annotations, so a schema never drifts from the code that consumes it.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from omegaconf import DictConfig, OmegaConf

from ssah.checkpointing import CheckpointConfig
from ssah.data.datamodule import TaskConfig
from ssah.errors import SsahError
from ssah.models import ModelConfig
from ssah.module import OptimConfig
from ssah.scoring.calibration import CalibrationConfig, SetConfig
from ssah.scoring.categories import Ratios


@dataclasses.dataclass
class TrainerSchema:
    """The Trainer arguments ssah's configs set; other Lightning arguments pass unchecked."""

    max_steps: int = -1
    max_epochs: int | None = None
    accumulate_grad_batches: int = 1
    devices: Any = 1
    num_nodes: int = 1
    precision: Any = "32-true"
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 50
    num_sanity_val_steps: int = 0


@dataclasses.dataclass
class RootSchema:
    """Top-level keys shared by stages."""

    seed: int = 0
    save_model: bool = False
    evaluate: bool = True
    skip_completed: bool = False
    threads: Any = "auto"


# config key -> (schema, whether keys outside the schema are errors)
GROUPS: dict[str, tuple[type, bool]] = {
    "model": (ModelConfig, True),
    "aligned": (ModelConfig, True),
    "reference": (ModelConfig, True),
    "task": (TaskConfig, True),
    "optim": (OptimConfig, True),
    "checkpoint": (CheckpointConfig, True),
    "trainer": (TrainerSchema, False),
    "scoring.calibration": (CalibrationConfig, False),  # its two sets are checked below
    "scoring.calibration.safety": (SetConfig, True),
    "scoring.calibration.utility": (SetConfig, True),
    "scoring.ratios": (Ratios, True),
}


def _accepts(tp: Any, value: Any) -> bool:
    """Whether `value` (as Hydra parsed it) fits annotation `tp`."""
    if tp is Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is not None:  # dict[...], list[...], tuple[...]
        tp = origin
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (dict, Mapping):
        return isinstance(value, Mapping)
    if tp in (list, tuple, Sequence):
        return isinstance(value, list | tuple)
    return True  # a class we do not check here (its own constructor validates)


def _a(value: Any) -> str:
    """'a str', 'an int': the type of a value, for messages."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _name(tp: Any) -> str:
    args = typing.get_args(tp)
    if args and typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_name(a) for a in args)
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_group(key: str, node: Mapping[str, Any], schema: type, closed: bool) -> None:
    """Every key of `node` that the schema knows has the right type; unknown keys are named."""
    hints = typing.get_type_hints(schema)
    for k, v in node.items():
        if str(k).startswith("_") or k == "defaults":
            continue
        if k not in hints:
            if closed:
                raise SsahError(
                    f"{key}.{k} is not a known key of {key} (known: {sorted(hints)}); "
                    f"fix the spelling or remove it."
                )
            continue
        if not _accepts(hints[k], v):
            raise SsahError(
                f"{key}.{k}={v!r} is {_a(v)}; expected {_name(hints[k])}. "
                f"Fix the value on the command line or in conf/."
            )


def check_ratios(cfg: Mapping[str, Any]) -> None:
    """scoring.ratios: each in [0, 1] and together at most 1 (RU, SCU, UCU are disjoint)."""
    ratios = (cfg.get("scoring") or {}).get("ratios") if isinstance(cfg, Mapping) else None
    if not isinstance(ratios, Mapping):
        return
    vals = {k: ratios[k] for k in ("ru", "scu", "ucu") if k in ratios}
    for k, v in vals.items():
        if not _accepts(float, v) or not 0.0 <= float(v) <= 1.0:
            raise SsahError(f"scoring.ratios.{k}={v!r} must be a fraction in [0, 1].")
    total = sum(float(v) for v in vals.values())
    if total > 1.0 + 1e-9:
        parts = " + ".join(f"{k} {float(v):g}" for k, v in vals.items())
        raise SsahError(
            f"scoring.ratios add up to {total:g} ({parts}) > 1: RU, SCU and UCU are disjoint "
            "shares of unit parameters; lower them so their sum is at most 1."
        )


def check_wandb_online(cfg: Mapping[str, Any]) -> None:
    """logger.offline=false needs credentials from the environment, never from a config."""
    logger = cfg.get("logger")
    if not isinstance(logger, Mapping) or "Wandb" not in str(logger.get("_target_", "")):
        return
    if logger.get("offline", True) is not False:
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    raise SsahError(
        "logger.offline=false needs W&B credentials: export WANDB_API_KEY (or run `wandb "
        "login`), or keep logger.offline=true and `wandb sync` the run dir later."
    )


def validate(cfg: DictConfig) -> None:
    """All edge checks of a composed stage config (raises SsahError on the first problem)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    root_hints = typing.get_type_hints(RootSchema)
    for k in root_hints:
        if k in plain and not _accepts(root_hints[k], _resolved(cfg, k)):
            raise SsahError(f"{k}={plain[k]!r} is {_a(plain[k])}; expected {_name(root_hints[k])}.")
    for key, (schema, closed) in GROUPS.items():
        node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if OmegaConf.is_dict(node):
            values = OmegaConf.to_container(node, resolve=True)
            flat = {k: v for k, v in values.items() if not isinstance(v, Mapping)}  # type: ignore[union-attr]
            check_group(key, flat, schema, closed)
    check_ratios(plain)
    check_wandb_online(plain)


def _resolved(cfg: DictConfig, key: str) -> Any:
    """One value with interpolations resolved (a `${...}` is checked as what it resolves to)."""
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
