"""Calibration never sees a test prompt: the prompts a calibration draw may take, checked
against every prompt an evaluation config reads.

Scoring a model on the prompts it is then attacked with is a leak (the design's "calibration
data never contains a prompt of the evaluation sets"). The check is on the candidate pool,
not only on the drawn rows: what a draw takes depends on the model's own answers, the pool
does not. Prompts compare after lower-casing and collapsing whitespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.eval.datasets import load_prompt_set
from ssah.scoring.calibration import CalibrationConfig, candidate_prompts

PROMPT_FIELDS = ("prompt", "base_prompt")


def norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def _plain(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg or {})


def _prompts(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    return {norm(r[f]) for r in rows for f in PROMPT_FIELDS if r.get(f)}


def eval_prompts(eval_cfg: Mapping[str, Any] | DictConfig) -> set[str]:
    """Every prompt `eval_cfg` reads: the harmful set (its limit), dataset suites (prompt and
    base prompt), benign look-alikes and the utility sets (generation, chat ppl, mc)."""
    e = _plain(eval_cfg)
    out: set[str] = set()
    if e.get("harmful"):
        out |= _prompts(load_prompt_set(e["harmful"], what="eval.harmful"))
    for name, spec in (e.get("suites") or {}).items():
        if spec and spec.get("kind") == "dataset":
            out |= _prompts(load_prompt_set(spec["data"], what=f"eval suite {name!r}"))
    if e.get("benign"):
        out |= _prompts(load_prompt_set(e["benign"], what="eval.benign"))
    u = e.get("utility") or {}
    blocks = [(u.get("generation") or {}).get("data")]
    if (u.get("ppl") or {}).get("format", "chat") == "chat":
        blocks.append((u.get("ppl") or {}).get("data"))
    for t in ((u.get("mc") or {}).get("tasks") or {}).values():
        if t:
            blocks.append((t.get("from_answers") or {}).get("data") or t.get("data"))
    for b in blocks:
        if b:
            out |= _prompts(load_prompt_set(b, what="eval.utility"))
    return out


def leaks(
    scoring_cfg: Mapping[str, Any] | DictConfig, eval_cfg: Mapping[str, Any] | DictConfig
) -> dict[str, list[str]]:
    """{calibration set: its candidate prompts that are evaluation prompts} (empty: clean)."""
    c = _plain(scoring_cfg)["calibration"]
    ccfg = CalibrationConfig(**c)
    test = eval_prompts(eval_cfg)
    out = {}
    for name in ("safety", "utility"):
        hit = [p for p in candidate_prompts(getattr(ccfg, name), ccfg.seed) if norm(p) in test]
        if hit:
            out[name] = hit
    return out


def check_disjoint(
    scoring_cfg: Mapping[str, Any] | DictConfig, eval_cfg: Mapping[str, Any] | DictConfig
) -> None:
    """One clear error when a calibration set may draw an evaluation prompt."""
    bad = leaks(scoring_cfg, eval_cfg)
    if bad:
        what = ", ".join(f"{len(v)} {k}" for k, v in bad.items())
        raise SsahError(
            f"calibration may draw evaluation prompts ({what} calibration prompts are test "
            "prompts); exclude them (scoring.calibration.<set>.skip_first for AdvBench's first "
            "100, or another source) or evaluate on other prompts."
        )
