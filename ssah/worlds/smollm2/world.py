"""Where the smollm2 world lives (pure path arithmetic) and how it is built (`ensure`).

Five artifacts, each in its own content-keyed dir `<cache_dir>/smollm2/<artifact>-<key>/`:
  base     the converted SmolLM2-135M-Instruct (key: the wheel version and conversion recipe)
  data     the prompt sets and manifest (key: base key + data recipe + this package's version)
  aligned  the model aligned by `ssah.train` (key: data key + alignment overrides)
  prefill  the prefilling attack's data: the base model's compliant answers to harmful
           prompts (key: base + data keys + the `prefill:` recipe); reads base + data only
  valsets  validation-only prompt sets no other row reads (the defence plan's selection: QA
           questions, look-alikes no calibration sees); key: base + data keys + the
           `valsets:` node + the hand-written prompts; no model runs
Each is built in `<dir>.tmp-<pid>` and renamed into place with a DONE marker last, so a build
killed at any point leaves no dir that looks finished, and the next call rebuilds it cleanly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.io import cache_lock, damage, file_sizes
from ssah.threads import torch_threads, worker_count
from ssah.worlds.smollm2.paths import (  # noqa: F401  (re-exported)
    ARTIFACTS,
    NEEDS,
    RECIPE,
    WHICH,
    World,
    config_of,
    keys_of,
    locate,
    needs_of,
    plain,
    say,
)

log = logging.getLogger(__name__)


def mentions(cfg: DictConfig) -> bool:
    """Whether any value of the (unresolved) job config names a smollm2 path."""
    text = json.dumps(OmegaConf.to_container(cfg, resolve=False), default=str)
    return "${smollm2:" in text


def needed(cfg: DictConfig) -> list[str]:
    """The artifacts a job config reads (resolved strings pointing into them) and lacks."""
    if not mentions(cfg):
        return []
    world = locate(config_of(cfg))
    parts = []
    for k in cfg:
        if k in ("world", "hydra"):
            continue
        v = cfg[k]  # a child node keeps its parent, so `${smollm2:...}` resolves against the root
        parts.append(OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
    text = json.dumps(parts, default=str)
    return [
        a for a in ARTIFACTS if a in world.keys and str(world.dir(a)) in text and not world.built(a)
    ]


def publish(tmp: Path, final: Path, meta: dict[str, Any]) -> None:
    """DONE marker last, then one rename; a concurrent build that finished first wins."""
    (tmp / "DONE").write_text(json.dumps({**meta, "file_sizes": file_sizes(tmp)}, indent=1) + "\n")
    if final.exists() and (not (final / "DONE").is_file() or damage(final)):
        say(
            f"[smollm2] {final} was left by a killed build or is damaged ({damage(final)}): replacing it"
        )
        shutil.rmtree(final, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "DONE").is_file():
            raise


def build_artifact(final: Path, body: Callable[[Path], dict[str, Any]]) -> Path:
    """Run `body(tmp_dir)` and publish its dir atomically; returns `final`."""
    if (final / "DONE").is_file() and damage(final) is None:
        return final
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        meta = body(tmp)
        meta["seconds"] = round(time.perf_counter() - t0, 1)
        publish(tmp, final, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure(cfg: DictConfig | dict[str, Any], upto: str | list[str] = "aligned") -> World:
    """Build (once) `upto` (an artifact or several) and what they read (NEEDS), and return
    the world: `upto="prefill"` builds base, data, prefill and not the aligned model. `workers`
    processes of `threads` threads share the base model's answering (same answers, less
    time). Each artifact is built under its lock, so rows that reach the door together build
    it once (the second waits, then finds it built)."""
    from ssah.worlds.smollm2 import build  # heavy imports only when building

    c = plain(cfg)
    world = locate(c)
    workers = worker_count(c.get("workers"), int(c.get("threads") or 1))
    for artifact in needs_of(upto):
        if world.built(artifact):
            continue
        with cache_lock(world.dir(artifact)):
            if world.built(artifact):  # built by another process while this one waited
                continue
            t0 = time.perf_counter()
            say(f"[smollm2] building {artifact} in {world.dir(artifact)} (once; cached)")
            with torch_threads(c.get("threads")):
                build_artifact(
                    world.dir(artifact),
                    lambda out, a=artifact: build.STEPS[a](c, world, out, workers),
                )
            say(f"[smollm2] {artifact} built in {time.perf_counter() - t0:.0f} s")
    return world
