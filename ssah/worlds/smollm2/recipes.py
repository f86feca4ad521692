"""Choosing the smollm2 world's alignment recipe on the validation split, over alignment seeds.

Why a world needs this: one alignment seed of one recipe is an anecdote (issue 30: the seed-1
model of the 40-step recipe over-refused 32% of look-alikes where seed 0 refused 17%). Each
candidate recipe (conf/recipes/smollm2.yaml) is aligned on every seed as an ordinary world build
(content-keyed, cached: the aligned dir a row of that recipe reads) and judged only by the
validation numbers the build keeps in its DONE record; the rule picks one recipe, and the test
prompts choose nothing. Each (candidate, seed) lands as a small text-free JSON file beside its
rendered table, so a re-run resumes and the choice renders from committed files.

    python -m ssah.worlds.smollm2.recipes [--only a,b] [--seeds 0,1,2] [--workers 1]
    python -m ssah.worlds.smollm2.recipes --report        # re-render from the committed files
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssah.errors import SsahError
from ssah.eval.intervals import is_interval_key
from ssah.io import CONF_DIR, atomic_write_text
from ssah.reporting.format import rate
from ssah.results import RECORDS, read_jsonl
from ssah.tables import md

CONF = Path(CONF_DIR) / "recipes" / "smollm2.yaml"


@dataclass(frozen=True)
class Rule:
    """A recipe passes when every seed's validation ASR and over-refusal are at most the
    limits; among passing recipes the lowest mean (ASR + over-refusal) over seeds wins."""

    asr: str
    over_refusal: str
    max_asr: float
    max_over_refusal: float

    @classmethod
    def from_cfg(cls, c: Mapping[str, Any]) -> Rule:
        try:
            return cls(str(c["asr"]), str(c.get("over_refusal", "safety/over_refusal")),
                       float(c["max_asr"]), float(c["max_over_refusal"]))  # fmt: skip
        except KeyError as e:
            raise SsahError(
                f"{CONF}: rule.{e.args[0]} is missing; add it (see the file's comments)."
            ) from e


@dataclass(frozen=True)
class Study:
    """Candidates (name -> alignment overrides after `common`), seeds, the rule, where results go."""

    common: tuple[str, ...]
    candidates: dict[str, tuple[str, ...]]
    seeds: tuple[int, ...]
    rule: Rule
    out: Path

    @classmethod
    def load(cls, path: Path = CONF) -> Study:
        c = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(c, dict)
        cands = {
            str(k): tuple(str(o) for o in v) for k, v in dict(c.get("candidates") or {}).items()
        }
        bad = [k for k in cands if not re.fullmatch(r"[A-Za-z0-9_.-]+", k)]
        if not cands or bad:
            raise SsahError(
                f"{path}: candidates must be a non-empty map of file-safe names; bad: {bad}."
            )
        return cls(
            common=tuple(str(o) for o in c.get("common") or ()),
            candidates=cands,
            seeds=tuple(int(s) for s in c.get("seeds") or (0,)),
            rule=Rule.from_cfg(c.get("rule") or {}),
            out=Path(CONF_DIR).parent / str(c.get("out", "experiments/real_smollm2/recipes")),
        )


def base_world(extra: Sequence[str] = ()) -> dict[str, Any]:
    """conf/world/smollm2.yaml as a job sees it (paths resolved, SSAH_OUTPUTS honoured)."""
    from ssah.config import compose

    cfg = compose("evaluate", ["+world=smollm2", *extra])
    return OmegaConf.to_container(cfg.world, resolve=True)  # type: ignore[return-value]


def world_for(base: Mapping[str, Any], overrides: Sequence[str], seed: int) -> dict[str, Any]:
    """The world of one candidate on one alignment seed: only `align` differs from `base`."""
    w = json.loads(json.dumps(base))
    w["align"] = {**w["align"], "seed": int(seed), "overrides": list(overrides)}
    return w


def align_one(world: dict[str, Any]) -> dict[str, Any]:
    """In a worker: build (or find) the aligned model; its DONE record plus its key, with
    over-refusal per benign source read from the build's own records where DONE lacks it."""
    from ssah.worlds.smollm2.world import ensure

    w = ensure(world)
    done = json.loads((w.dir("aligned") / "DONE").read_text())
    records = w.dir("aligned") / RECORDS
    benign = w.path("data") / "benign_val.jsonl"
    if records.is_file() and benign.is_file():
        extra = over_refusal_by_source(read_jsonl(records), read_jsonl(benign))
        done["val"] = {**extra, **done.get("val", {})}  # what the evaluation wrote wins
    return {"aligned": w.dir("aligned").name, "data": w.dir("data").name, **done}


def over_refusal_by_source(
    records: Sequence[Mapping[str, Any]], benign: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """`safety/over_refusal/<source>` (+ n, Wilson interval) from the evaluation's per-answer
    `refused` flags: the issue's bound is on look-alikes, which are a quarter of the set."""
    from ssah.eval.intervals import interval

    source = {str(r["prompt"]): str(r.get("source", "")) for r in benign}
    flags: dict[str, list[bool]] = {}
    for r in records:
        if r.get("kind") == "over_refusal" and r.get("suite") == "benign":
            flags.setdefault(source.get(str(r["prompt"]), ""), []).append(bool(r["refused"]))
    out: dict[str, float] = {}
    for src, fs in sorted(flags.items()):
        if src:
            key = f"safety/over_refusal/{src}"
            out[key] = sum(fs) / len(fs)
            out.update(interval(key, out[key], len(fs)))
    return out


def record_path(out: Path, name: str, seed: int) -> Path:
    return out / "results" / f"{name}-s{seed}.json"


def keep(name: str, seed: int, world: Mapping[str, Any], done: Mapping[str, Any]) -> dict[str, Any]:
    """What is committed: the recipe, where it was built, its validation numbers (no text)."""
    return {
        "candidate": name,
        "seed": seed,
        "align": world["align"],
        "aligned": done.get("aligned"),
        "data": done.get("data"),
        "train_s": done.get("train_s"),
        "val": done.get("val", {}),
    }


def load_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]


def choose(
    records: Sequence[Mapping[str, Any]], rule: Rule, seeds: Sequence[int]
) -> tuple[str | None, list[str]]:
    """The chosen candidate (None while some candidate lacks a seed) and one line per candidate."""
    by: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in records:
        by.setdefault(str(r["candidate"]), {})[int(r["seed"])] = r["val"]
    lines: list[str] = []
    passing: dict[str, float] = {}
    fallback: dict[str, tuple[float, float]] = {}
    for name, vals in by.items():
        missing = [s for s in seeds if s not in vals]
        if missing:
            lines.append(f"`{name}`: seeds {missing} not run yet")
            continue
        asr = [float(vals[s].get(rule.asr, float("nan"))) for s in seeds]
        ovr = [float(vals[s].get(rule.over_refusal, float("nan"))) for s in seeds]
        ok = all(a <= rule.max_asr for a in asr) and all(o <= rule.max_over_refusal for o in ovr)
        score = sum(a + o for a, o in zip(asr, ovr, strict=True)) / len(seeds)
        if ok:
            passing[name] = score
        else:  # fallback order: the worst seed's worse rate, then the mean (ties are common)
            fallback[name] = (max(max(asr), max(ovr)), score)
        worst = f"worst seed ASR {max(asr) * 100:.1f}, over-refusal {max(ovr) * 100:.1f}"
        lines.append(
            f"`{name}`: {'passes' if ok else 'fails'} ({worst}; mean ASR + over-refusal {score * 100:.1f})"
        )
    if len(lines) != len(by) or any("not run" in x for x in lines):
        return None, lines
    if passing:
        return min(passing, key=passing.__getitem__), lines
    if fallback:
        best = min(fallback, key=fallback.__getitem__)
        lines.append(
            f"no candidate passes: `{best}` has the lowest worst-seed rate, then mean "
            "(a fallback, not a pass)"
        )
        return best, lines
    return None, lines


def render(study: Study, records: Sequence[Mapping[str, Any]]) -> str:
    """The recipes table (every validation rate with its interval and n) and the choice."""
    judge = study.rule.asr.rsplit("/", 1)[-1]  # the rule's judge: one column per suite
    asr_keys = sorted(
        {k for r in records for k in r["val"] if re.fullmatch(rf"safety/asr/[^/]+/{judge}", k)},
        key=lambda k: (k != study.rule.asr, k),
    )
    refusals = sorted({k for r in records for k in r["val"]
                       if k.startswith("safety/over_refusal/") and not is_interval_key(k)})  # fmt: skip
    cols = [*asr_keys, "safety/over_refusal", *refusals, "utility/accuracy"]
    head = [
        "recipe",
        "seed",
        *[k.removeprefix("safety/").removeprefix("asr/") for k in cols],
        "train s",
    ]
    body = [
        [
            f"`{r['candidate']}`",
            str(r["seed"]),
            *[rate(r["val"], k) for k in cols],
            f"{r.get('train_s') or 0:.0f}",
        ]
        for r in sorted(records, key=lambda r: (str(r["candidate"]), int(r["seed"])))
    ]
    chosen, lines = choose(records, study.rule, study.seeds)
    r = study.rule
    cands = "\n".join(f"- `{k}`: `{' '.join(v)}`" for k, v in study.candidates.items())
    return (
        "# The smollm2 world's alignment recipe, chosen on validation\n\n"
        "Rendered by `python -m ssah.worlds.smollm2.recipes --report` from results/*.json (each the\n"
        "DONE record of one world build: its validation numbers, no text). Validation split only;\n"
        "the test prompts choose nothing.\n\n"
        f"Common overrides: `{' '.join(study.common)}`. Candidates:\n{cands}\n\n"
        f"Rule: every seed in {list(study.seeds)} has `{r.asr}` <= {r.max_asr * 100:g}% and "
        f"`{r.over_refusal}` <= {r.max_over_refusal * 100:g}%; among passing recipes the lowest mean "
        "(ASR + over-refusal) over seeds.\n\n"
        + md(head, body)
        + "\n\n"
        + "\n".join(f"- {x}" for x in lines)
        + f"\n\n**Chosen: {f'`{chosen}`' if chosen else 'not yet (runs missing)'}**\n"
    )


def run(study: Study, only: Sequence[str], seeds: Sequence[int], workers: int) -> None:
    """Build what is missing (data once here, alignments on `workers` one-thread processes)."""
    from ssah.procs import Job, run_jobs
    from ssah.worlds.smollm2.world import ensure

    base = base_world()
    names = list(only) or list(study.candidates)
    unknown = [n for n in names if n not in study.candidates]
    if unknown:
        raise SsahError(
            f"--only: unknown candidate(s) {unknown}; {CONF} has {list(study.candidates)}."
        )
    todo = {}
    for n in names:
        for s in seeds:
            if not record_path(study.out, n, s).is_file():
                todo[f"{n}-s{s}"] = (
                    n,
                    s,
                    world_for(base, [*study.common, *study.candidates[n]], s),
                )
    if not todo:
        print("[recipes] every (candidate, seed) is done")
        return
    ensure({**base, "workers": workers}, upto="data")  # the shared data first, once

    def landed(job: str, done: Any, _p: Any) -> None:
        n, s, w = todo[job]
        path = record_path(study.out, n, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(keep(n, s, w, done), indent=1, sort_keys=True) + "\n")
        atomic_write_text(study.out / "README.md", render(study, load_records(study.out)))

    jobs = [
        Job(k, align_one, (w,), log=study.out / "logs" / f"{k}.log")
        for k, (_, _, w) in todo.items()
    ]
    print(f"[recipes] {len(jobs)} alignment(s) to build on {workers} worker(s) x 1 thread")
    run_jobs(jobs, workers=workers, threads=1, on_done=landed)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ssah.worlds.smollm2.recipes", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument(
        "--seeds", default="", help="comma-separated alignment seeds (default: the conf's)"
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="only re-render README.md from results/")
    a = ap.parse_args(argv)
    try:
        study = Study.load()
        if not a.report:
            seeds = [int(s) for s in a.seeds.split(",") if s] or list(study.seeds)
            run(study, [x for x in a.only.split(",") if x], seeds, a.workers)
        atomic_write_text(study.out / "README.md", render(study, load_records(study.out)))
        print(f"[recipes] {study.out / 'README.md'}")
        print("\n".join(choose(load_records(study.out), study.rule, study.seeds)[1]))
    except SsahError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
