"""The judges audit: a labelled set of a world's own answers, every judge measured on it.

Three steps (`python -m ssah.reporting.judges sample|verdicts|report`, experiments/judges/):

1. `sample`: answers read back from run dirs' records.jsonl (local text), drawn stratified by
   model kind x suite group, each with an id (a hash of where it came from and what it says), a
   split (validation / test, by a hash of the request, so one request never sits in both) and
   the text, into a local label sheet (outputs/, gitignored);
2. `verdicts`: every judge on every labelled answer -> a text-free file (id, answer hash,
   strata, split, label, judge/<name>) that is committed and renders the report;
3. `report`: agreement, precision, recall per judge and stratum (Wilson 95%), a confusion-matrix
   PNG; from committed verdicts only, so it re-renders byte for byte on any clone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ssah.eval.judge_error import (
    BENIGN_LABELS,
    HARMFUL_LABELS,
    Measured,
    by_stratum,
    complies,
    measure,
)
from ssah.eval.judging import judge_rows
from ssah.io import CONF_DIR, atomic_write_text
from ssah.results import RECORDS, read_jsonl
from ssah.tables import md

# Model kind of a plan row (or of an evaluation dir named after one), for the strata.
MODEL_KINDS = {
    "base": "unaligned",
    "aligned": "aligned",
    "prune_scu": "pruned SCU",
    "prune_random": "pruned random",
    "prune_ru": "pruned RU",
    "prune_ucu": "pruned UCU",
    "ft_benign_none": "benign FT",
    "ft_harmful_none": "harmful FT",
    "ft_benign_scu_all_cu": "frozen FT",
    "ft_benign_scu_top_cu": "frozen FT",
    "ft_benign_random_matched": "frozen FT (random)",
    "defended": "defended",
}
SUITE_GROUPS = (
    ("prefill", "prefill"),
    ("poem", "poem"),
    ("purpose", "purpose"),
    ("past_tense", "past tense"),
    ("future_tense", "future tense"),
    ("dan", "template"),
    ("refusal_suppression", "template"),
    ("gcg", "GCG"),
    ("direct", "direct"),
    ("benign", "benign look-alike"),
)


def sha(text: str, n: int = 12) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def suite_group(suite: str) -> str:
    base = suite.removesuffix("_sys")
    for prefix, group in SUITE_GROUPS:
        if base.startswith(prefix):
            return group
    return base


def model_kind(row: str) -> str:
    """The stratum of a row name (`<row>-<key>` dirs and `<row>_<extra>` evaluations too)."""
    name = row.rsplit("-", 1)[0] if "-" in row else row
    for key in sorted(MODEL_KINDS, key=len, reverse=True):
        if name == key or name.startswith(key + "_"):
            return MODEL_KINDS[key]
    return name


def split_of(request: str) -> str:
    """validation or test, fixed by the request's text: the same request is always on one side."""
    return "validation" if int(sha(request.strip().lower(), 8), 16) % 2 == 0 else "test"


def answers(run_dir: Path, row: str) -> list[dict[str, Any]]:
    """Attack and over-refusal records of one run, as label-sheet rows (text kept, local)."""
    out = []
    for r in read_jsonl(run_dir / RECORDS):
        if r.get("kind") not in ("attack", "over_refusal") or str(r.get("response", "")).startswith(
            "[redacted"
        ):
            continue
        request = str(r.get("behavior") or r["prompt"])
        response = str(r.get("prefill") or "") + str(r["response"])
        out.append(
            {
                "id": sha(f"{row}|{r['suite']}|{r['prompt_id']}|{response}"),
                "row": row,
                "model": model_kind(row),
                "suite": r["suite"],
                "group": suite_group(r["suite"]),
                "prompt_id": r["prompt_id"],
                "harmful": r["kind"] == "attack",
                "split": split_of(request),
                "answer_sha1": sha(response, 40),
                "refused": r.get("refused"),  # the over-refusal judge's flag (look-alikes)
                "request": request,
                "prompt": r["prompt"],
                "prefill": str(r.get("prefill") or ""),
                "response": str(r["response"]),
            }
        )
    return out


def sample(rows: Sequence[dict[str, Any]], per_stratum: int, seed: int = 0) -> list[dict[str, Any]]:
    """At most `per_stratum` answers of each (model kind, suite group), drawn at random (seeded)."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        strata.setdefault((r["model"], r["group"]), []).append(r)
    rng = random.Random(seed)
    picked: list[dict[str, Any]] = []
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda r: r["id"])
        picked += rng.sample(group, min(per_stratum, len(group)))
    return sorted(picked, key=lambda r: r["id"])


TEXT_FREE = (
    "id",
    "answer_sha1",
    "row",
    "model",
    "suite",
    "group",
    "prompt_id",
    "harmful",
    "split",
    "label",
    "refused",
)


# What a labeller sees: the request, the forced prefill apart, the answer; never the model, the
# suite or any judge's verdict.
BLIND = ("id", "answer_sha1", "harmful", "request", "prefill", "response")


def join_labels(
    sheet: Sequence[dict[str, Any]], labels: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Sheet rows that have a label, checked: the label fits the row's kind and the answer's
    hash matches (a label belongs to the text that was read)."""
    by_id = {r["id"]: r for r in sheet}
    out = []
    for lab in labels:
        r = by_id.get(lab["id"])
        if r is None:
            continue
        allowed = HARMFUL_LABELS if r["harmful"] else BENIGN_LABELS
        if lab["label"] not in allowed:
            raise ValueError(f"label {lab['label']!r} of {lab['id']} is not one of {allowed}")
        if lab.get("answer_sha1") not in (None, r["answer_sha1"]):
            raise ValueError(f"label of {lab['id']} was given to another answer text")
        out.append({**r, "label": lab["label"]})
    return out


def collect(
    sheet: Sequence[dict[str, Any]], labels: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The committed label set: text-free rows of every labelled answer, each text once (the
    same answer to the same request drawn from two evaluations of one model is kept once)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in sorted(join_labels(sheet, labels), key=lambda r: r["id"]):
        key = (r["model"], r["answer_sha1"], sha(r["request"], 40))
        if key not in seen:
            seen.add(key)
            out.append({k: r[k] for k in TEXT_FREE})
    return out


def verdict_rows(
    labelled: Sequence[dict[str, Any]], judge_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Every judge on every labelled answer; text-free rows for committing."""
    judged = judge_rows(
        [
            {"prompt": r["request"], "response": r["response"], "prefill": r["prefill"]}
            for r in labelled
        ],
        list(judge_names),
    )
    return [
        {**{k: r[k] for k in TEXT_FREE}, **{k: v for k, v in j.items() if k.startswith("judge/")}}
        for r, j in zip(labelled, judged, strict=True)
    ]


def judges_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("judge/")})


def measured(rows: Sequence[Mapping[str, Any]], split: str = "test") -> dict[str, Measured]:
    """Each judge against the labels of one split's answers to harmful requests."""
    part = [r for r in rows if r["harmful"] and r["split"] == split]
    truth = [complies(str(r["label"])) for r in part]
    return {n: measure(truth, [bool(r[f"judge/{n}"]) for r in part]) for n in judges_in(part)}


def measured_from(path: str | Path | None) -> dict[str, Measured]:
    """`measured` of a committed verdicts file (relative paths: from the repository root);
    {} when there is none, so a world without a labelled set reports raw rates only."""
    if not path:
        return {}
    p = Path(path)
    p = p if p.is_absolute() else Path(CONF_DIR).parent / p
    return measured(read_jsonl(p)) if p.is_file() else {}


def _row(name: str, m: Measured) -> list[str]:
    return [name, m.agreement.fmt(), m.precision.fmt(), m.recall.fmt(), m.specificity.fmt()]


def judge_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    harmful = [r for r in rows if r["harmful"]]
    body = [
        _row(
            n,
            measure(
                [complies(r["label"]) for r in harmful], [bool(r[f"judge/{n}"]) for r in harmful]
            ),
        )
        for n in names
    ]
    return md(["judge", "agreement %", "precision %", "recall %", "specificity %"], body)


def paired_table(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str], ref: str = "keyword"
) -> str:
    """Each judge's agreement against the reference judge's on the same answers: the difference
    with Newcombe's paired interval and the exact McNemar p (the default's choice rests on it)."""
    from ssah.stats import mcnemar

    harmful = [r for r in rows if r["harmful"]]
    right = {
        n: [float(complies(r["label"]) == bool(r[f"judge/{n}"])) for r in harmful] for n in names
    }
    body = []
    for n in names:
        if n == ref or ref not in right:
            continue
        t = mcnemar(right[ref], right[n])
        body.append([n, f"{100 * t.a_rate:.1f}", f"{100 * t.b_rate:.1f}",
                     f"{100 * t.diff:+.1f} [{100 * t.ci_low:+.1f}, {100 * t.ci_high:+.1f}]",
                     f"{t.b_only} / {t.a_only}", f"{t.p:.2g}"])  # fmt: skip
    return md(["judge", f"{ref} agreement %", "judge agreement %", "difference (paired 95%)",
               "only judge right / only ref right", "McNemar p"], body)  # fmt: skip


def benign_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """Over-refusal: the look-alike answers labelled refused, against the over-refusal rule's
    `refused` flag and against each judge's "does not comply"."""
    benign = [r for r in rows if not r["harmful"]]
    truth = [r["label"] == "refused" for r in benign]
    judged = {
        "over-refusal rule (eval.over_refusal.judge)": [bool(r.get("refused")) for r in benign]
    }
    judged.update({f"not {n}": [not r[f"judge/{n}"] for r in benign] for n in names})
    body = [_row(k, measure(truth, v)) for k, v in judged.items()]
    return md(["refusal judge", "agreement %", "precision %", "recall %", "specificity %"], body)


def strata_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], key: str) -> str:
    harmful = [r for r in rows if r["harmful"]]
    per = {n: by_stratum(harmful, n, key) for n in names}
    groups = sorted(per[names[0]]) if names else []
    body = [
        [g, str(per[names[0]][g].n), *(f"{100 * per[n][g].agreement.value:.1f}" for n in names)]
        for g in groups
    ]
    return md([key, "n", *(f"{n} agreement %" for n in names)], body)


def composition(rows: Sequence[Mapping[str, Any]]) -> str:
    models = sorted({r["model"] for r in rows})
    groups = sorted({r["group"] for r in rows})
    body = [
        [m, *(str(sum(r["model"] == m and r["group"] == g for r in rows)) for g in groups)]
        for m in models
    ]
    return md(["model \\ suite", *groups], body)


def label_counts(rows: Sequence[Mapping[str, Any]]) -> str:
    labels = [*HARMFUL_LABELS, *BENIGN_LABELS]
    body = [[s, *(str(sum(r["split"] == s and r["label"] == lab for r in rows)) for lab in labels)]
            for s in ("validation", "test")]  # fmt: skip
    return md(["split", *labels], body)


def confusion_png(rows: Sequence[Mapping[str, Any]], names: Sequence[str], path: Path) -> None:
    """One confusion matrix per judge (rows: label; columns: judge says complies / does not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    harmful = [r for r in rows if r["harmful"]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.1 * len(names), 3.2), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        grid = [[sum(r["label"] == lab and bool(r[f"judge/{n}"]) == said for r in harmful)
                 for said in (True, False)] for lab in HARMFUL_LABELS]  # fmt: skip
        ax.imshow(grid, cmap="Blues")
        for i, line in enumerate(grid):
            for j, v in enumerate(line):
                ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks([0, 1], ["complies", "does not"])
        ax.set_yticks(range(len(HARMFUL_LABELS)), HARMFUL_LABELS)
        ax.set_title(n, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def render(rows: Sequence[Mapping[str, Any]], split: str = "test") -> str:
    """The audit's report (markdown) from text-free verdict rows: the measured tables."""
    names = judges_in(rows)
    part = [r for r in rows if r["split"] == split]
    parts = [
        "# Judges measured against labelled answers (rendered by `python -m ssah.reporting.judges report`)\n",
        f"Labelled answers: {len(rows)} ({sum(r['harmful'] for r in rows)} to harmful requests, "
        f"{sum(not r['harmful'] for r in rows)} to benign look-alikes).\n",
        "## Labels per split\n",
        label_counts(rows),
        "\n## Composition (all labelled answers)\n",
        composition(rows),
        f"\n## Every judge on the {split} half (harmful requests; complies = compliance or partial)\n",
        judge_table(part, names),
        f"\n## Each judge against `keyword` on the same answers ({split} half)\n",
        paired_table(part, names),
        f"\n## Over-refusal: benign look-alikes ({split} half; positive = refused)\n",
        benign_table(part, names),
        f"\n## Agreement per model kind ({split} half)\n",
        strata_table(part, names, "model"),
        f"\n## Agreement per suite ({split} half)\n",
        strata_table(part, names, "group"),
    ]
    return "\n".join(parts) + "\n"


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m ssah.reporting.judges", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="draw the label sheet from run dirs (ROW=DIR ...)")
    s.add_argument("runs", nargs="+", help="ROW=DIR: a run dir with records.jsonl and its row name")
    s.add_argument("--per-stratum", type=int, default=12)
    s.add_argument("--out", type=Path, default=Path("outputs/judges/sheet.jsonl"))
    b = sub.add_parser(
        "batches", help="split the sheet into blind reading batches (no model, suite or verdict)"
    )
    b.add_argument("--sheet", type=Path, default=Path("outputs/judges/sheet.jsonl"))
    b.add_argument("--n", type=int, default=4)
    b.add_argument(
        "--skip-labelled", type=Path, default=None, help="labels file: leave these answers out"
    )
    c = sub.add_parser(
        "collect", help="labels of the reading batches -> the committed, text-free label set"
    )
    c.add_argument("--sheets", type=Path, nargs="+", required=True)
    c.add_argument("--labels", type=Path, nargs="+", required=True, help="the labellers' files")
    c.add_argument("--out", type=Path, default=Path("experiments/judges/labels.jsonl"))
    v = sub.add_parser("verdicts", help="judge every labelled answer -> text-free verdicts")
    v.add_argument("--sheet", type=Path, nargs="+", default=[Path("outputs/judges/sheet.jsonl")])
    v.add_argument("--labels", type=Path, default=Path("experiments/judges/labels.jsonl"))
    v.add_argument("--judges", default="keyword,keyword_paper,keyword_zou,keyword_wei,compliance")
    v.add_argument("--out", type=Path, default=Path("experiments/judges/results/verdicts.jsonl"))
    r = sub.add_parser("report", help="render report.md and confusion.png from verdicts")
    r.add_argument(
        "--verdicts", type=Path, default=Path("experiments/judges/results/verdicts.jsonl")
    )
    r.add_argument("--out", type=Path, default=Path("experiments/judges/report.md"))
    a = ap.parse_args(argv)
    if a.cmd == "sample":
        rows = [
            x
            for spec in a.runs
            for x in answers(Path(spec.split("=", 1)[1]), spec.split("=", 1)[0])
        ]
        picked = sample(rows, a.per_stratum)
        _write(a.out, picked)
        print(f"{len(picked)} answers of {len(rows)} -> {a.out}")
    elif a.cmd == "batches":
        done = (
            {x["id"] for x in _read(a.skip_labelled)}
            if a.skip_labelled and a.skip_labelled.is_file()
            else set()
        )
        rows = [r for r in _read(a.sheet) if r["id"] not in done]
        for i in range(a.n):
            part = [{k: r[k] for k in BLIND} for r in rows[i :: a.n]]
            _write(a.sheet.with_name(f"batch_{i}.jsonl"), part)
        print(f"{len(rows)} answers in {a.n} batches beside {a.sheet}")
    elif a.cmd == "collect":
        rows = collect(
            [x for p in a.sheets for x in _read(p)], [x for p in a.labels for x in _read(p)]
        )
        _write(a.out, rows)
        print(f"{len(rows)} labelled answers -> {a.out}")
    elif a.cmd == "verdicts":
        labelled = join_labels([x for p in a.sheet for x in _read(p)], _read(a.labels))
        _write(a.out, verdict_rows(labelled, a.judges.split(",")))
        print(f"{len(labelled)} labelled answers judged -> {a.out}")
    else:
        rows = _read(a.verdicts)
        atomic_write_text(a.out, render(rows))
        confusion_png(
            [x for x in rows if x["split"] == "test"],
            judges_in(rows),
            a.out.with_name("confusion.png"),
        )
        print(f"report -> {a.out}")


if __name__ == "__main__":
    main()
