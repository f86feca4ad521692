"""The smollm2 world behind the world interface (ssah/worlds/base.py): the base model and
prompt sets are built in the plan's own process (the base model's answers are shared by
`workers` processes), the aligned model is a job that rows on it wait for, so rows that read
only the base model run beside the alignment."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig

from ssah.worlds.base import WorldJob
from ssah.worlds.smollm2.paths import config_of, locate, plain
from ssah.worlds.smollm2.validation import SOURCES


def needed(cfg: DictConfig) -> list[str]:
    from ssah.worlds.smollm2.world import needed as missing

    return missing(cfg)


def ensure(cfg: DictConfig, missing: list[str]) -> None:
    from ssah.worlds.smollm2.world import ensure as build

    build(config_of(cfg), upto=list(missing))  # what they read too, nothing else


def prepare(world: dict[str, Any], workers: int) -> None:
    from ssah.worlds.smollm2.world import ensure as build

    build({**plain(world), "workers": workers}, upto="data")


def align(world: dict[str, Any]) -> dict[str, Any]:
    """In a worker: the world's aligned model (built once, cached); its DONE record."""
    from ssah.worlds.smollm2.world import ensure as build

    build(world)
    return json.loads((locate(world).dir("aligned") / "DONE").read_text())


def jobs(world: dict[str, Any], seed: int) -> list[WorldJob]:
    """The alignment job; one per alignment seed when a plan ties it to the instance seed
    (`world_aligned` for seed 0, `world_aligned_a<S>` for the others)."""
    a = int(plain(world)["align"]["seed"])
    name = "world_aligned" if a == 0 else f"world_aligned_a{a}"
    return [WorldJob(name, align, (plain(world),), early=False)]


def seeded(world: dict[str, Any], seed: int) -> dict[str, Any]:
    """The world of an instance whose alignment seed is its seed (plan
    `align_seed_from_instance: true`): another aligned model per seed, the same base and data;
    the rows get it through the recipe overrides (`values`)."""
    w = plain(world)
    return {**w, "align": {**w["align"], "seed": int(seed)}}


def _value(v: Any) -> str:
    """A Hydra override value: numbers, booleans and null bare, strings quoted, lists and
    dicts of them."""
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def recipe_overrides(w: dict[str, Any]) -> list[str]:
    """The world's recipe (data, alignment, prefill data, validation-only sets) as overrides
    of every row, so a row's `${smollm2:...}` paths name the world the plan was given
    (world.align.overrides=... on the plan's command line reaches the rows, not only the
    world's build job)."""
    parts = [p for p in ("data", "align", "prefill", "valsets") if w.get(p) is not None]
    return [f"world.{part}.{k}={_value(v)}" for part in parts for k, v in w[part].items()]


def values(world: dict[str, Any], seed: int, plan: DictConfig) -> dict[str, Any]:
    w = plain(world)
    return {
        "world_recipe": recipe_overrides(w),
        "world_align_seed": w["align"]["seed"],
        "world_align_overrides": list(w["align"]["overrides"]),
        "world_data": str(locate(w).path("data")),
    }


def describe(world: dict[str, Any]) -> str:
    """The aligned model, how it was trained, its validation numbers, the data's manifest."""
    from ssah.reporting.format import rate

    w = locate(plain(world))
    done_file = w.dir("aligned") / "DONE"
    if not done_file.is_file():
        return "- (not aligned yet)\n"
    done = json.loads(done_file.read_text())
    val = done.get("val", {})
    per = ", ".join(f"{s} {rate(val, f'safety/asr/val_{s}/compliance')}" for s in SOURCES)
    return (
        f"Aligned model: `{w.dir('aligned')}/model`. Alignment (full SFT with `ssah.train`, "
        f"{done.get('train_s', 0):.0f} s): `python -m ssah.train "
        f"{' '.join(done.get('overrides', []))}`.\n\nValidation split (eval=smollm2_val: "
        f"harmful prompts of five sources, validation benign prompts) of the aligned model: "
        f"ASR (compliance judge, mean over sources) {rate(val, 'safety/asr/avg/compliance')} "
        f"({per}), over-refusal "
        f"{rate(val, 'safety/over_refusal')}. Sources and licences: "
        f"`{w.path('data') / 'manifest.json'}`.\n"
    )
