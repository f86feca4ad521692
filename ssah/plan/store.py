"""Row results keyed by content, so they accumulate across runs, days and machines.

A row's key is the hash of its composed, resolved stage config, less what does not change its
numbers (where outputs go, the logger, threads, the toy/world recipes, whose content already
shows in the resolved paths of the artifacts a row reads). Paths under the outputs dir are
written relative to it, so the same row on another checkout or machine has the same key. A
row that reads another row's result names that dir, and so its key: keys chain. The code
version is not in the key (a result stays valid across commits that do not change configs);
meta.json records the commit, the machine and the time of every result.

Layout: <results>/<world>/<row>-<key>/ holds what the stage wrote (metrics.json last), plus
config.yaml, meta.json and outcomes.jsonl (per-prompt judge verdicts, no text: what paired
tests need, small enough to commit).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.io import atomic_write_text

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
FILES = ("metrics.json", "meta.json", "outcomes.jsonl", "config.yaml")


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


def is_done(d: Path) -> bool:
    """A finished row: its stage wrote metrics.json and the runner wrote meta.json after it."""
    return (d / "metrics.json").is_file() and (d / "meta.json").is_file()


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
    write_outcomes(d)
    full = {
        **meta,
        "commit": commit(),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": round(seconds, 1),
    }
    atomic_write_text(d / "meta.json", json.dumps(full, indent=1, default=str) + "\n")


def _flag(v: Any) -> bool:
    """A per-prompt value a table, claim or test may read (verdict, refused, correct, score,
    prompt_id, a defence's trigger): numbers and booleans only, so no text is ever kept."""
    return isinstance(v, (bool, int, float))


def write_outcomes(d: Path) -> None:
    """Every per-prompt flag of every record (judge/*, refused, correct, ...), without any text."""
    rec = d / "records.jsonl"
    if not rec.is_file():
        return
    lines = []
    for line in rec.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        keep = {k: v for k, v in r.items() if k in ("suite", "kind") or _flag(v)}
        if "suite" in keep and "prompt_id" in keep:
            lines.append(json.dumps(keep, sort_keys=True))
    atomic_write_text(d / "outcomes.jsonl", "\n".join(lines) + ("\n" if lines else ""))


@dataclass(frozen=True)
class Result:
    """One finished row: where it is, what it measured, and its meta (row, seed, world...)."""

    dir: Path
    metrics: dict[str, Any]
    meta: dict[str, Any]

    @property
    def row(self) -> str:
        return str(self.meta.get("row"))

    @property
    def seed(self) -> int:
        return int(self.meta.get("seed", 0))

    def outcomes(self) -> list[dict[str, Any]]:
        path = self.dir / "outcomes.jsonl"
        if not path.is_file():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def load(d: Path) -> Result | None:
    if not is_done(d):
        return None
    try:
        return Result(
            d,
            json.loads((d / "metrics.json").read_text()),
            json.loads((d / "meta.json").read_text()),
        )
    except (OSError, ValueError):
        return None


def scan(root: Path) -> list[Result]:
    """Every finished row under `root` (a results dir, one world's, or a copy of some)."""
    found = (load(p.parent) for p in sorted(Path(root).rglob("meta.json")))
    return [r for r in found if r is not None]


def export(results: Iterable[Result], dest: Path) -> int:
    """Copy the small files of each result to dest/<world>/<dir name>/ (for committing)."""
    n = 0
    for r in results:
        out = dest / str(r.meta.get("world", "world")) / r.dir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            if (r.dir / f).is_file():
                shutil.copy2(r.dir / f, out / f)
        n += 1
    return n
