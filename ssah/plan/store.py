"""Row results keyed by content, so they accumulate across runs, days and machines.

A row's key is the hash of its composed, resolved stage config, less what does not change its
numbers (where outputs go, the logger, threads, the toy/world recipes, whose content already
shows in the resolved paths of the artifacts a row reads). Paths under the outputs dir are
written relative to it, so the same row on another checkout or machine has the same key. A
row that reads another row's result names that dir, and so its key: keys chain. The code
version is not in the key (a result stays valid across commits that do not change configs);
meta.json records the commit, the machine and the time of every result.

Layout: <results>/<world>/<row>-<key>/ holds what the stage wrote (metrics.json last), plus
config.yaml, meta.json and outcomes.jsonl (every per-prompt flag, no text: what paired tests
need, small enough to commit). Reading a row's dir back is ssah.results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.results import OUTCOMES, Result, load, refresh_outcomes, write_meta_file, write_outcomes
from ssah.threads import machine

UNKEYED = (
    "paths",
    "hydra",
    "toy",
    "world",
    "logger",
    "threads",
    "sweep_name",
    "checkpoint",
    "cache",
)
FILES = ("metrics.json", "meta.json", OUTCOMES, "config.yaml")


def _relative(node: Any, roots: Iterable[str], name: str) -> Any:
    if isinstance(node, dict):
        return {k: _relative(v, roots, name) for k, v in node.items()}
    if isinstance(node, list):
        return [_relative(v, roots, name) for v in node]
    if isinstance(node, str):
        for r in roots:
            if node == r or node.startswith(r + "/"):
                return name + node[len(r) :]
    return node


def keyed_config(cfg: DictConfig, results: str | Path | None = None) -> dict[str, Any]:
    """The part of a stage config that decides its numbers, with portable paths: under the
    outputs dir -> `<outputs>/...`, under the results dir -> `<results>/...` (a needed row's
    dir still names its key, so keys chain wherever the results are kept)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    outputs = str(plain.get("paths", {}).get("outputs", "/nonexistent"))
    body = {k: v for k, v in plain.items() if k not in UNKEYED}
    if results is not None:
        body = _relative(body, [str(Path(results).resolve()), str(results)], "<results>")
    return _relative(body, [str(Path(outputs).resolve()), outputs], "<outputs>")


def content_key(stage: str, cfg: DictConfig, results: str | Path | None = None) -> str:
    body = keyed_config(cfg, results)
    text = json.dumps({"stage": stage, "config": body}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_meta(d: Path, meta: Mapping[str, Any], seconds: float) -> None:
    """meta.json (last: it marks the row done) and outcomes.jsonl beside the stage's files."""
    refresh_outcomes(d)
    full = {
        **meta,
        "commit": commit(),
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": round(seconds, 1),
    }
    write_meta_file(d, full)


def twin(results: Path, key: str, stage: str, name: str) -> Result | None:
    """A finished row of another name with this key and stage: the same keyed config, so the
    same numbers (a plan's `aligned` and another plan's `noft` evaluate one model alike)."""
    for d in sorted(Path(results).glob(f"*-{key}")):
        found = load(d) if d.name != name else None
        if found is not None and found.meta.get("stage") == stage:
            return found
    return None


def _link(src: str, dst: str) -> None:
    """A hard link where the file system allows (a trained model is not copied), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def adopt(src: Result, dest: Path, meta: Mapping[str, Any]) -> None:
    """`dest` becomes `src`'s result under this row's meta, which names `src` (`same_as`) and
    keeps when, where and by which commit its numbers were made. Built beside `dest` and
    renamed into place, meta.json last: a crash leaves no half-adopted row; an interrupted
    attempt of the row itself in `dest` is replaced."""
    tmp = dest.with_name(dest.name + ".adopting")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src.dir, tmp, copy_function=_link, ignore=shutil.ignore_patterns("meta.json"))
    made = ("commit", "machine", "finished", "seconds", "attempts")
    full = {**meta, **{k: src.meta[k] for k in made if k in src.meta}, "same_as": src.dir.name}
    write_meta_file(tmp, full)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def export(results: Iterable[Result], dest: Path, plan: str | None = None) -> int:
    """Copy the small files of each result to dest/<world>/<dir name>/ (for committing); its
    outcomes.jsonl is written afresh from the records when they are there, so a row finished
    before outcomes kept every flag is exported with all of them. With `plan`, a row another
    plan made (a shared row name and key: the same numbers) is exported as that plan's, its
    maker kept as `made_by_plan`, so a study folder holds one plan's rows."""
    n = 0
    for r in results:
        out = dest / r.world / r.dir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            if f != OUTCOMES and (r.dir / f).is_file():
                shutil.copy2(r.dir / f, out / f)
        if plan is not None and r.meta.get("plan") != plan:
            meta = {**r.meta, "plan": plan, "made_by_plan": r.meta.get("plan")}
            write_meta_file(out, meta)
        if r.outcomes:
            write_outcomes(out / OUTCOMES, r.outcomes)
        n += 1
    return n
