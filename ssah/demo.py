"""`python -m ssah.demo` (`make run`): the paper in miniature on several toy worlds.

One toy world is one sample, so the demo builds `worlds` independent toy worlds (`toy.seed`;
world w also fine-tunes, draws random sets and samples with seed w) and runs every row of
the paper's tables in each: ordinary stage runs composed from conf/ with a few overrides,
so what the demo shows is exactly what `python -m ssah.<stage> ...` produces. The first
`full_worlds` worlds run every row; the others run the rows the claims rest on. Worlds run
in `jobs` parallel processes, one torch thread each. Results: <out>/world<w>/<row>/ (one
stage run each, metrics.json, records.jsonl, plots, W&B run) and <out>/world<w>/report.md;
<out>/report.md opens with the claims table (ssah.reporting.claims) and aggregates every row
over the worlds (mean, 95% interval, n) with the same code as `python -m ssah.report`.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssah.cli import run_dir, stage
from ssah.config import compose
from ssah.metrics import atomic_write_text, write_metrics
from ssah.reporting.aggregate import Row, make_row
from ssah.reporting.claims import CLAIMS_NOTE, NOT_RUN, claims_markdown, evaluate_all
from ssah.reporting.collect import Run
from ssah.reporting.pruning import LABELS, TABLE1
from ssah.reporting.tables import Column, md
from ssah.threads import torch_threads
from ssah.worlds.ensure import ensure_worlds

ASR = "safety/asr/{}/keyword"
SAFETY_COLS = [
    Column("ASR direct %", ASR.format("direct"), 100),
    Column("ASR sys %", ASR.format("direct_sys"), 100),
    Column("ASR jailbreak %", ASR.format("rationale"), 100),
    Column("over-refusal %", "safety/over_refusal", 100),
    Column("utility acc %", "utility/accuracy", 100),
]
PRUNE_COLS = [
    Column("params %", "prune/params_fraction", 100),
    Column("ASR direct %", ASR.format("direct"), 100),
    Column("ASR avg %", ASR.format("avg"), 100),
    Column("utility acc %", "utility/accuracy", 100),
    Column("PPL", "utility/ppl", 1),
]
FREEZE_COLS = [
    Column("frozen params %", "freeze/frozen_params_fraction", 100),
    *SAFETY_COLS,
    Column("train loss", "train/loss", 1),
]
BUDGET_COLS = [Column("trained params %", "freeze/trained_params_fraction", 100), *SAFETY_COLS]
PROBE_COLS = [
    Column("aligned gap", "probe/aligned/gap_mean", 1),
    Column("base gap", "probe/base/gap_mean", 1),
    Column("aligned - base", "probe/gap_difference", 1),
]
CATEGORY_COLS = [
    Column(f"{c} {w} %", f"score/{w}_share/{c.lower()}", 100)
    for w in ("units", "params")
    for c in ("SCU", "UCU", "CU", "RU")
]

PRUNE_ROWS = [(LABELS[t], t) for t in TABLE1]  # (label, target): Table 1
FREEZE_ROWS = [  # (label, task, freeze spec): Tables 2 and 3
    ("benign FT", "toy_benign", "none"),
    ("benign FT + freeze SCU + top CU", "toy_benign", "scu_top_cu"),
    ("benign FT + freeze SCU + all CU", "toy_benign", "scu_all_cu"),
    ("benign FT + random matched", "toy_benign", "random_matched"),
    ("benign FT + rewind", "toy_benign", "rewind"),
    ("benign FT, LoRA (lr 1e-3)", "toy_benign", "lora"),
    ("harmful FT", "toy_harmful", "none"),
    ("harmful FT + freeze SCU + all CU", "toy_harmful", "scu_all_cu"),
]
# Rows every world runs: the claims rest on them (conf/demo.yaml `claims`).
CLAIM_ROWS = {
    "base",
    "aligned",
    "score_aligned",
    "prune_dense",
    "prune_scu",
    "prune_random",
    "ft_benign_none",
    "ft_benign_scu_all_cu",
    "ft_benign_random_matched",
    "score_base_utility_only",
    "align_full",
    "align_ru_only",
    "probe",
}


def ft_row(task: str, spec: str) -> str:
    return f"ft_{task.removeprefix('toy_')}_{spec}"


# ---------------------------------------------------------------- one world


@dataclass
class World:
    """Runs the stages of one toy world in-process under <out>/world<seed>."""

    cfg: DictConfig
    seed: int
    out: Path
    full: bool
    common: list[str]
    group: str

    def __post_init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def wants(self, row: str) -> bool:
        return self.full or row in CLAIM_ROWS

    def stage(self, name: str, row: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Compose conf/<name>.yaml with the demo's overrides and run it into <out>/<row>."""
        if row in self.rows:
            return self.rows[row]
        extra = list(self.cfg.eval_overrides) if name in ("train", "evaluate", "prune") else []
        logger = [f"logger={self.cfg.stage_logger}"] if self.cfg.stage_logger else []
        sweep = [f"++sweep_name={self.group}"] if logger else []
        world = [*self.common, f"toy.seed={self.seed}"] if name != "transfer" else []
        cfg = compose(name, [*world, *logger, *sweep, *extra, *overrides])
        ensure_worlds(cfg)  # in-process stages pass no door: build the world they read here
        t0 = time.perf_counter()
        module = importlib.import_module(f"ssah.{name}")
        self.rows[row] = module.run(cfg, self.out / row)
        print(f"[demo w{self.seed}] {row:<26} {time.perf_counter() - t0:6.1f} s", flush=True)
        return self.rows[row]

    @property
    def units(self) -> Path:
        return self.out / "score_aligned" / "units.safetensors"


def baseline(w: World) -> None:
    w.stage("evaluate", "base", ["model=toy_base", f"seed={w.seed}"])
    w.stage("evaluate", "aligned", [f"seed={w.seed}"])
    w.stage("score", "score_aligned", list(w.cfg.score_overrides))


def pruning(w: World) -> None:
    for _, target in PRUNE_ROWS:
        if w.wants(f"prune_{target}"):
            seeded = [f"random.seed={w.seed}"] if target == "random" else []
            w.stage("prune", f"prune_{target}", [f"target={target}", f"units={w.units}", *seeded])


def freezing(w: World) -> None:
    for _, task, spec in FREEZE_ROWS:
        row = ft_row(task, spec)
        if not w.wants(row):
            continue
        extra = ["save_model=true"] if (task, spec) == ("toy_benign", "none") and w.full else []
        extra += ["optim.lr=1e-3"] if spec == "lora" else []
        extra += [f"freeze.units={w.units}"] if spec not in ("none", "lora") else []
        extra += [f"freeze.seed={w.seed}"] if spec == "random_matched" else []
        steps = f"trainer.max_steps={w.cfg.ft_steps}"
        w.stage("train", row, [f"task={task}", f"freeze={spec}", steps, f"seed={w.seed}", *extra])


def base_units(w: World) -> Path:
    """Units of the unsafe base (scored once). It never refuses, so its safety set uses the
    data's refusals; Table 4 ranks by utility alone, as the paper found RU in the base."""
    row = "score_base_utility_only"
    w.stage(
        "score",
        row,
        [
            *w.cfg.score_overrides,
            "model=toy_base",
            "scoring.calibration.safety.response=field",
            "scoring.calibration.safety.columns={refusal:response}",
        ],
    )
    return w.out / row / "units.safetensors"


def budget(w: World) -> None:
    units = base_units(w)
    common = [
        "model=toy_base",
        "task=toy_align",
        f"trainer.max_steps={w.cfg.align_steps}",
        f"seed={w.seed}",
    ]
    w.stage("train", "align_full", [*common, "freeze=none"])
    ru = ["freeze=ru_only", f"freeze.units={units}", "freeze.train_ranking=z_utility"]
    w.stage("train", "align_ru_only", [*common, *ru, "freeze.train_ratio=0.2"])


def probe(w: World) -> None:
    w.stage("probe", "probe")


def transfer(w: World) -> None:
    if not w.full:
        return
    base_units(w)
    ft_model = w.out / "ft_benign_none" / "model"
    w.stage("score", "score_ft", [*w.cfg.score_overrides, f"model.name_or_path={ft_model}"])
    for row, a, b, la, lb in TRANSFER_PAIRS:
        units = [f"a={w.out / a / 'units.safetensors'}", f"b={w.out / b / 'units.safetensors'}"]
        w.stage("transfer", row, [*units, f"labels.a={la}", f"labels.b={lb}"])


TRANSFER_PAIRS = [
    ("transfer_base_to_aligned", "score_base_utility_only", "score_aligned", "base", "aligned"),
    ("transfer_aligned_to_ft", "score_aligned", "score_ft", "aligned", "fine-tuned"),
]
STEPS = {
    "baseline": baseline,
    "pruning": pruning,
    "freezing": freezing,
    "budget": budget,
    "probe": probe,
    "transfer": transfer,
}


def run_world(
    cfg_plain: dict[str, Any], seed: int, out: str, full: bool, common: list[str], group: str
) -> dict[str, dict[str, Any]]:
    """Every enabled table in one toy world (also the body of a worker process)."""
    cfg = OmegaConf.create(cfg_plain)
    w = World(cfg, seed, Path(out), full, common, group)
    enabled = {"baseline": True, **{k: bool(v) for k, v in cfg.tables.items()}}
    with torch_threads(cfg.get("threads")):  # numbers independent of the core count
        for name, step in STEPS.items():
            if enabled.get(name, True):
                step(w)
    return w.rows


# ---------------------------------------------------------------- all worlds, the report


def sections() -> list[tuple[str, list[tuple[str, str]], list[Column], str]]:
    """(title, [(label, row)], columns, note) of every table of the report."""
    return [
        ("Starting point", [("unsafe base", "base"), ("aligned", "aligned")], SAFETY_COLS, ""),
        ("Unit categories of the aligned model", [("aligned", "score_aligned")], CATEGORY_COLS, ""),
        (
            "Table 1: pruning categories of the aligned model",
            [(label, f"prune_{t}") for label, t in PRUNE_ROWS],
            PRUNE_COLS,
            "",
        ),
        (
            "Tables 2/3: freezing during fine-tuning",
            [("aligned", "aligned")] + [(lab, ft_row(t, s)) for lab, t, s in FREEZE_ROWS],
            FREEZE_COLS,
            "Frozen rows train twice the steps (freeze.epochs_multiplier).",
        ),
        (
            "Table 4: alignment budget (train only redundant units)",
            [("full SFT", "align_full"), ("RU-only SFT", "align_ru_only")],
            BUDGET_COLS,
            "",
        ),
        (
            "Figs. 2-4: reasoning-direction probe",
            [("aligned vs unsafe base", "probe")],
            PROBE_COLS,
            "gap = cosine distance to the malicious continuation minus to the benign one, "
            "mean over queries, layers and k: > 0 sits closer to the benign continuation.",
        ),
    ]


def aggregate_rows(per_world: dict[int, dict[str, dict[str, Any]]], out: Path) -> list[Row]:
    """One reporting Row per demo row, its members the worlds that ran it."""
    names = list(dict.fromkeys(r for rows in per_world.values() for r in rows))
    result = []
    for name in names:
        members = [
            Run(out / f"world{s}" / name, {}, {"row": name, "world": str(s)}, rows[name])
            for s, rows in per_world.items()
            if name in rows
        ]
        row = make_row(name, members, ["world"])
        row.settings = {"row": name}
        result.append(row)
    return result


def write_report(cfg: DictConfig, out: Path, rows: list[Row], worlds: Sequence[int]) -> Path:
    """report.md: claims first, then every table aggregated over the worlds."""
    by_name = {r.label: r for r in rows}
    results = [
        r for r in evaluate_all(list(cfg.claims), rows, list(cfg.avg_over)) if r.verdict != NOT_RUN
    ]
    parts = [
        "# ssah demo: the Superficial Safety Alignment Hypothesis in miniature\n",
        f"{len(worlds)} independently built toy worlds (toy.seed = seed = "
        f"{', '.join(map(str, worlds))}), {time.strftime('%Y-%m-%d %H:%M')}. Rates are "
        "percentages of prompts; ASR = attack success (keyword judge), utility = accuracy on "
        "held-out toy tasks. Cells: mean over the worlds that ran the row [95% interval: "
        "Student t across worlds, never narrower than the Wilson interval of the pooled "
        "prompts; one world: its Wilson interval]; n = worlds. Per world: "
        + ", ".join(f"[world {s}](world{s}/report.md)" for s in worlds)
        + ".\n",
        "## Claims\n",
        claims_markdown(results),
        CLAIMS_NOTE,
    ]
    for title, spec, cols, note in sections():
        got = [(label, by_name[row]) for label, row in spec if row in by_name]
        if not got:
            continue
        cols = [c for c in cols if any(c.key in r.metrics for _, r in got)]
        body = [[label, str(r.n), *(c.cell(r.metrics) for c in cols)] for label, r in got]
        parts += [f"## {title}\n", md(["row", "n", *(c.header for c in cols)], body)]
        parts += [f"{note}\n"] if note else []
    w0 = f"world{worlds[0]}"
    parts += [
        "## Figures (first world)\n",
        f"![categories per layer]({w0}/score_aligned/units_per_layer.png)\n",
        f"![probe]({w0}/probe/probe_distances.png)\n",
        f"![direction]({w0}/probe/direction_aligned.png)\n",
    ]
    parts += [f"![{row}]({w0}/{row}/transfer.png)\n" for row, *_ in TRANSFER_PAIRS]
    return atomic_write_text(out / "report.md", "\n".join(parts))


def world_report(out: Path, seed: int, rows: dict[str, dict[str, Any]]) -> Path:
    """<out>/world<seed>/report.md: the tables of one world, each rate with its Wilson interval."""
    parts = [f"# ssah demo, toy world {seed} (toy.seed = seed = {seed})\n"]
    for title, spec, cols, note in sections():
        got = [(label, rows[row]) for label, row in spec if row in rows]
        if got:
            cols = [c for c in cols if any(c.key in m for _, m in got)]
            body = [[label, *(c.cell(m) for c in cols)] for label, m in got]
            parts += [f"## {title}\n", md(["row", *(c.header for c in cols)], body)]
            parts += [f"{note}\n"] if note else []
    for row, _, _, la, lb in TRANSFER_PAIRS:
        table = out / row / "transfer.md"
        if table.is_file():
            parts += [
                f"## Figs. 5-6: {la} -> {lb}\n",
                table.read_text(),
                f"![{row}]({row}/transfer.png)\n",
            ]
    return atomic_write_text(out / "report.md", "\n".join(parts))


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Every world (in parallel processes when jobs > 1), then the aggregated report."""
    t0 = time.perf_counter()
    worlds = [int(s) for s in cfg.worlds]
    common = [f"toy={_choices().get('toy', 'default')}", *cfg.overrides]
    group = f"demo-{out_dir.name}"
    plain = OmegaConf.to_container(cfg, resolve=True)
    args = [
        (plain, s, str(out_dir / f"world{s}"), i < int(cfg.full_worlds), common, group)
        for i, s in enumerate(worlds)
    ]
    per_world: dict[int, dict[str, dict[str, Any]]] = {}
    jobs = max(1, min(int(cfg.jobs), len(worlds)))
    if jobs == 1:
        for a in args:
            per_world[a[1]] = run_world(*a)
    else:
        os.environ["OMP_NUM_THREADS"] = str(cfg.get("threads") or 1)  # inherited by workers
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {a[1]: pool.submit(run_world, *a) for a in args}
            per_world = {s: f.result() for s, f in futures.items()}
    for s, rows in per_world.items():
        world_report(out_dir / f"world{s}", s, rows)
    rows = aggregate_rows(per_world, out_dir)
    report = write_report(cfg, out_dir, rows, worlds)
    summary: dict[str, Any] = {
        f"{r.label}/{k}": v
        for r in rows
        for k, v in r.metrics.items()
        if isinstance(v, int | float)
    }
    for c in evaluate_all(list(cfg.claims), rows, list(cfg.avg_over)):
        if c.verdict != NOT_RUN:
            key = f"claims/{c.claim.id}"
            summary.update({f"{key}/effect": c.effect, f"{key}/ci_low": c.ci_low})
            summary.update({f"{key}/ci_high": c.ci_high, f"{key}/p": c.p})
            summary[f"{key}/supported"] = float(c.verdict == "supported")
    summary["time/demo_s"] = time.perf_counter() - t0
    write_metrics(out_dir, summary)
    print(f"[demo] {len(worlds)} worlds in {summary['time/demo_s'] / 60:.1f} min; report: {report}")
    return summary


def _choices() -> dict[str, str]:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


@stage("demo")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
