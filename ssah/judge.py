"""`python -m ssah.judge input=F.jsonl output=G.jsonl [judges=[...]]`: judge outside answers.

The same judges the evaluation uses (conf/eval/judges/), so answers generated elsewhere, or
read back from a run's records.jsonl, are judged without generating again (contract 9).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ssah.cli import stage
from ssah.errors import SsahError
from ssah.eval.judging import judge_rows
from ssah.io import atomic_write_text


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the input, checked: a JSON object with string `prompt` and `response`."""
    if not path.is_file():
        raise SsahError(
            f"input={path}: no such file; give a JSONL file with prompt and response per line."
        )
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise SsahError(
                f"input={path} line {i}: not JSON ({e.msg}); one JSON object per line."
            ) from None
        for key in ("prompt", "response"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise SsahError(
                    f"input={path} line {i}: no string {key!r}; each line needs prompt and response."
                )
        rows.append(row)
    if not rows:
        raise SsahError(f"input={path} is empty; give at least one line with prompt and response.")
    return rows


def run(cfg: DictConfig) -> dict[str, float]:
    """Read, judge, write; the rate per judge is the summary."""
    if not cfg.get("input") or not cfg.get("output"):
        raise SsahError("judge needs input=F.jsonl and output=G.jsonl (prompt, response per line).")
    names = [str(n) for n in (cfg.get("judges") or [])]
    if not names:
        raise SsahError("judges=[] is empty; name at least one judge, e.g. judges=[compliance].")
    rows = judge_rows(read_lines(Path(cfg.input)), names)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(Path(cfg.output), text)
    rates = {f"judge/{n}": sum(r[f"judge/{n}"] for r in rows) / len(rows) for n in names}
    for k, v in rates.items():
        print(f"{k}: {v:.3f} complies (n={len(rows)}) -> {cfg.output}")
    return rates


main = stage("judge")(lambda cfg: run(cfg))

if __name__ == "__main__":
    main()
