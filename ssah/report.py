"""`python -m ssah.report DIR|wandb:ENTITY/PROJECT/GROUP [overrides of conf/report.yaml]`.

Finds every metrics.json under DIR (a sweep or run dir), labels each run by the overrides that
vary across runs, aggregates runs that differ only in `group_over` (seeds: mean, 95% t-interval
across seeds, n), and writes DIR/report.md (opening with the claims table: each paper claim,
the paper's number, ours with its interval and n, the stratified paired test and a verdict),
report.csv, report.tex and PNG plots. `wandb:ENTITY/PROJECT/GROUP` first downloads the finished
runs of an online W&B group into `wandb_download_dir`/GROUP and reports on that. The library
is ssah.reporting; the demo uses the same aggregation and claims.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ssah.errors import SsahError
from ssah.reporting import claims as claims_mod
from ssah.reporting.aggregate import attach_paper, rows
from ssah.reporting.collect import collect, sweep_name_of, varying
from ssah.reporting.wandb_groups import from_wandb_group, log_report
from ssah.tables import Column, columns, csv_text, latex, md, pivot, table_cells


def build(root: str | Path, cfg: Any) -> dict[str, Any]:
    """Write report.md/.csv/.tex and PNGs into root; return paths, rows and claims."""
    from ssah.metrics import atomic_write_text
    from ssah.reporting.plots import plots

    root = Path(root)
    runs = collect(root)
    axes = varying(runs, list(cfg.ignore_overrides))
    group_over = list(cfg.group_over)
    rows_ = rows(runs, axes, group_over)
    attach_paper(rows_, list(cfg.paper))
    header, body = table_cells(rows_, columns(cfg.columns))
    label_axes = [a for a in axes if a not in group_over]
    group = sweep_name_of(runs, root, cfg.get("sweep_name"))
    results = claims_mod.evaluate_all(list(cfg.get("claims") or []), rows_, list(cfg.avg_over))
    ran = [r for r in results if r.verdict != claims_mod.NOT_RUN]
    parts = [f"# Report: {group}\n"]
    if ran:
        parts += ["## Claims\n", claims_mod.claims_markdown(ran), claims_mod.CLAIMS_NOTE]
    parts += [
        f"{len(runs)} runs under `{root}`; axes: "
        + (", ".join(f"`{a}`" for a in axes) or "none")
        + f"; aggregated over: {group_over} (n = runs; cells: mean [95% interval]: across "
        "runs when n > 1, else the run's Wilson interval).\n",
        "## Runs\n",
        md(header, body),
    ]
    tex = [latex(header, body, f"{group}: runs")]
    if any(r.paper for r in rows_):
        tables = sorted({r.paper_table for r in rows_ if r.paper})
        parts.append(
            f"Paper columns: {', '.join(tables)} of the SSAH paper (percent, real 7B models), "
            "beside the run with the same model, task and setting; compare trends, not digits.\n"
        )
    pv = Column("pivot", str(cfg.pivot_metric), 100)
    if len(label_axes) >= 2 and any(pv.key in r.metrics for r in rows_):
        ph, pb = pivot(rows_, label_axes, pv)
        parts += [f"## {pv.key} % by {label_axes[0]} x {label_axes[1]}\n", md(ph, pb)]
        tex.append(latex(ph, pb, f"{pv.key} by {label_axes[0]} and {label_axes[1]}"))
    pngs = plots(rows_, root, cfg.asr_key, cfg.utility_key, cfg.frozen_key) if cfg.plots else []
    parts += ["## Plots\n"] + [f"![{p.stem}]({p.name})\n" for p in pngs]
    report = atomic_write_text(root / "report.md", "\n".join(parts))
    atomic_write_text(root / "report.csv", csv_text(rows_))
    atomic_write_text(root / "report.tex", "".join(tex))
    return {
        "report": report,
        "rows": rows_,
        "claims": results,
        "pngs": pngs,
        "runs": runs,
        "group": group,
        "header": header,
        "body": body,
    }


class ReportOnSweepEnd(Callback):
    """Hydra callback: when a multirun ends, report on its sweep dir with the same aggregation
    as `python -m ssah.report DIR` (enable with
    `+hydra.callbacks.report._target_=ssah.report.ReportOnSweepEnd`)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from ssah.config import compose

        root = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        try:
            result = build(root, compose("report", ["~logger"]))
        except SsahError as e:  # a sweep whose jobs all failed: say so, keep the sweep's exit
            print(f"[report] no report for {root}: {e}", file=sys.stderr)
            return
        print(f"[report] {len(result['runs'])} runs -> {result['report']}")


def _report_root(target: str, cfg: Any) -> Path:
    """The dir to report on: target itself, or a W&B group downloaded (named after its group)."""
    if not target.startswith("wandb:"):
        return Path(target)
    got = from_wandb_group(target, cfg.wandb_download_dir)
    if not cfg.get("sweep_name"):
        cfg.sweep_name = got.group
    skipped = [f"{got.unfinished} not finished"] + [f"{got.reports} report runs"] * (
        got.reports > 0
    )
    print(
        f"[report] {target}: {got.runs} finished runs -> {got.root} (skipped: {', '.join(skipped)})"
    )
    return got.root


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ssah.report DIR [key=value overrides of conf/report.yaml]`."""
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    target, overrides = args[0], args[1:]
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        from ssah.config import compose

        cfg = compose("report", overrides)
        result = build(_report_root(target, cfg), cfg)
        log_report(cfg, result)
    except SsahError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[report] {len(result['runs'])} runs -> {result['report']}")
    for r in result["claims"]:
        if r.verdict != claims_mod.NOT_RUN:
            print(f"[report] claim {r.claim.id}: {r.verdict}")
    for p in result["pngs"]:
        print(f"[report] plot {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
