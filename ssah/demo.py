"""`python -m ssah.demo` (`make run`): the paper in miniature on the toy world.

Each row is an ordinary stage run composed from conf/ with a few overrides, so what the demo
shows is exactly what `python -m ssah.<stage> ...` produces. Results land in this run's dir:
one sub-dir per row (metrics.json, plots, W&B run), plus report.md tying them together.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ssah.cli import run_dir, stage
from ssah.config import compose
from ssah.metrics import atomic_write_text, write_metrics
from ssah.reporting.tables import Column, markdown_table
from ssah.worlds.ensure import ensure_worlds
from ssah.worlds.toy.world import torch_threads

ASR = "safety/asr/{}/keyword"
SAFETY_COLS = [
    Column("ASR direct %", ASR.format("direct"), 100),
    Column("ASR sys %", ASR.format("direct_sys"), 100),
    Column("ASR jailbreak %", ASR.format("rationale"), 100),
    Column("over-refusal %", "safety/over_refusal", 100),
    Column("utility acc %", "utility/accuracy", 100),
]


class Demo:
    """Runs stages in-process under one dir and remembers their metrics."""

    def __init__(self, cfg: DictConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        choices = _choices()
        self.common = [f"toy={choices.get('toy', 'default')}", *cfg.overrides]
        self.group = f"demo-{out.name}"
        self.rows: dict[str, dict[str, Any]] = {}
        self.sections: list[str] = []
        self.units: Path | None = None  # the aligned model's units.safetensors

    def stage(self, name: str, row: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Compose conf/<name>.yaml with the demo's overrides and run it into <out>/<row>."""
        extra = list(self.cfg.eval_overrides) if name in ("train", "evaluate", "prune") else []
        logger = [f"logger={self.cfg.stage_logger}"] if self.cfg.stage_logger else []
        sweep = [f"++sweep_name={self.group}"] if logger else []
        common = self.common if name != "transfer" else []  # transfer reads files, no toy world
        cfg = compose(name, [*common, *logger, *sweep, *extra, *overrides])
        ensure_worlds(cfg)  # in-process stages pass no door: build the world they read here
        t0 = time.perf_counter()
        module = importlib.import_module(f"ssah.{name}")
        metrics = module.run(cfg, self.out / row)
        print(f"[demo] {row:<28} {time.perf_counter() - t0:6.1f} s", flush=True)
        self.rows[row] = metrics
        return metrics

    def section(self, title: str, body: str) -> None:
        self.sections.append(f"## {title}\n\n{body}\n")
        self.write_report()

    def write_report(self) -> Path:
        head = (
            "# ssah demo: the Superficial Safety Alignment Hypothesis in miniature\n\n"
            f"Toy world, {time.strftime('%Y-%m-%d %H:%M')}. Rates are percentages of prompts; "
            "ASR = attack success (keyword judge), utility = exact-match accuracy on held-out "
            "toy tasks. Every row's metrics.json is in the sub-dir of the same name.\n\n"
        )
        return atomic_write_text(self.out / "report.md", head + "\n".join(self.sections))


def _choices() -> dict[str, str]:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


def baseline(d: Demo) -> None:
    d.stage("evaluate", "base", ["model=toy_base"])
    d.stage("evaluate", "aligned")
    body = markdown_table(
        [("unsafe base", d.rows["base"]), ("aligned", d.rows["aligned"])], SAFETY_COLS
    )
    d.section("Starting point", body)


def scoring(d: Demo) -> None:
    """Score the aligned model once; pruning, freezing and transfer all read this file."""
    m = d.stage("score", "score_aligned", list(d.cfg.score_overrides))
    d.units = d.out / "score_aligned" / "units.safetensors"
    cols = [
        Column(f"{c} units %", f"score/units_share/{c.lower()}", 100)
        for c in ("SCU", "UCU", "CU", "RU")
    ]
    cols += [
        Column(f"{c} params %", f"score/params_share/{c.lower()}", 100)
        for c in ("SCU", "UCU", "CU", "RU")
    ]
    d.section(
        "Unit categories of the aligned model",
        markdown_table([("aligned", m)], cols)
        + "\n![categories per layer](score_aligned/units_per_layer.png)\n",
    )


def pruning(d: Demo) -> None:
    from ssah.prune import TABLE1, table_markdown

    rows = []
    for target in TABLE1:
        m = d.stage("prune", f"prune_{target}", [f"target={target}", f"units={d.units}"])
        rows.append({"target": target, **m})
    d.section("Table 1: pruning categories of the aligned model", table_markdown(rows))


FREEZE_ROWS = [
    ("benign FT", "toy_benign", "none"),
    ("benign FT + freeze SCU + top CU", "toy_benign", "scu_top_cu"),
    ("benign FT + freeze SCU + all CU", "toy_benign", "scu_all_cu"),
    ("benign FT + random matched", "toy_benign", "random_matched"),
    ("benign FT + rewind", "toy_benign", "rewind"),
    ("benign FT, LoRA (lr 1e-3)", "toy_benign", "lora"),
    ("harmful FT", "toy_harmful", "none"),
    ("harmful FT + freeze SCU + all CU", "toy_harmful", "scu_all_cu"),
]


def freezing(d: Demo) -> None:
    table: list[tuple[str, dict[str, Any]]] = [("aligned", d.rows.get("aligned", {}))]
    for label, task, spec in FREEZE_ROWS:
        row = f"ft_{task.removeprefix('toy_')}_{spec}"
        save = ["save_model=true"] if (task, spec) == ("toy_benign", "none") else []
        save += ["optim.lr=1e-3"] if spec == "lora" else []
        units = [f"freeze.units={d.units}"] if spec not in ("none", "lora") else []
        m = d.stage(
            "train",
            row,
            [
                f"task={task}",
                f"freeze={spec}",
                f"trainer.max_steps={d.cfg.ft_steps}",
                *units,
                *save,
            ],
        )
        table.append((label, m))
    cols = [
        Column("frozen params %", "freeze/frozen_params_fraction", 100),
        *SAFETY_COLS,
        Column("train loss", "train/loss", 1),
    ]
    d.section("Table 2/3: freezing during fine-tuning", markdown_table(table, cols))


def base_units(d: Demo) -> Path:
    """Units of the unsafe base (scored once). It never refuses, so its safety set uses the
    data's refusals; Table 4 ranks by utility alone, as the paper found RU in the base."""
    row = "score_base_utility_only"
    if row not in d.rows:
        d.stage(
            "score",
            row,
            [
                *d.cfg.score_overrides,
                "model=toy_base",
                "scoring.calibration.safety.response=field",
                "scoring.calibration.safety.columns={refusal:response}",
            ],
        )
    return d.out / row / "units.safetensors"


def budget(d: Demo) -> None:
    units = base_units(d)
    common = ["model=toy_base", "task=toy_align", f"trainer.max_steps={d.cfg.align_steps}"]
    full = d.stage("train", "align_full", [*common, "freeze=none"])
    ru = d.stage(
        "train",
        "align_ru_only",
        [
            *common,
            "freeze=ru_only",
            f"freeze.units={units}",
            "freeze.train_ranking=z_utility",
            "freeze.train_ratio=0.2",
        ],
    )
    cols = [Column("trained params %", "freeze/trained_params_fraction", 100), *SAFETY_COLS]
    d.section(
        "Table 4: alignment budget (train only redundant units)",
        markdown_table([("full SFT", full), ("RU-only SFT", ru)], cols),
    )


def probe(d: Demo) -> None:
    m = d.stage("probe", "probe")
    keys = sorted(k for k in m if k.startswith("probe/") and k.count("/") <= 2)
    body = "\n".join(f"- `{k}`: {m[k]:.4f}" for k in keys)
    figs = (
        "\n\n![probe](probe/probe_distances.png)\n\n![direction](probe/direction_aligned.png)"
        "\n\n![direction per answer](probe/direction_aligned_rows.png)"
    )
    d.section(
        "Figs. 2-4: reasoning-direction probe, and the direction during generation", body + figs
    )


def transfer(d: Demo) -> None:
    base_units(d)
    ft_model = d.out / "ft_benign_none" / "model"
    d.stage("score", "score_ft", [*d.cfg.score_overrides, f"model.name_or_path={ft_model}"])
    parts = []
    pairs = [
        ("transfer_base_to_aligned", "score_base_utility_only", "score_aligned", "base", "aligned"),
        ("transfer_aligned_to_ft", "score_aligned", "score_ft", "aligned", "fine-tuned"),
    ]
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
        body = table.read_text() if table.is_file() else ""
        parts.append(f"### {la} -> {lb}\n\n{body}\n![{row}]({row}/transfer.png)\n")
    d.section("Figs. 5-6: attribute transfer", "\n".join(parts))


STEPS: list[tuple[str, Callable[[Demo], None]]] = [
    ("baseline", baseline),
    ("scoring", scoring),
    ("pruning", pruning),
    ("freezing", freezing),
    ("budget", budget),
    ("probe", probe),
    ("transfer", transfer),
]


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Every enabled table, in order; report.md is rewritten after each."""
    t0 = time.perf_counter()
    d = Demo(cfg, out_dir)
    enabled = {"baseline": True, **{k: bool(v) for k, v in cfg.tables.items()}}
    with torch_threads(cfg.get("threads")):  # numbers independent of the core count
        for name, step in STEPS:
            if enabled.get(name, True):
                step(d)
    summary = {
        f"{row}/{k}": v
        for row, m in d.rows.items()
        for k, v in m.items()
        if isinstance(v, int | float)
    }
    summary["time/demo_s"] = time.perf_counter() - t0
    write_metrics(out_dir, summary)
    report = d.write_report()
    print(f"[demo] done in {summary['time/demo_s'] / 60:.1f} min; report: {report}")
    return summary


@stage("demo")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
