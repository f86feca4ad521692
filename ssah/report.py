"""Tables and plots from metrics: shared by the demo and `python -m ssah.report DIR`.

`python -m ssah.report DIR [overrides of conf/report.yaml]` finds every metrics.json under DIR
(a sweep or run dir), labels each run by the overrides that vary across runs (from its
.hydra/overrides.yaml), averages over `group_over` (seeds), and writes DIR/report.md,
report.csv, report.tex and PNG plots, with the paper's numbers beside ours where a run matches a
paper setting (conf/report.yaml `paper`). `python -m ssah.report wandb:ENTITY/PROJECT/GROUP`
downloads the finished runs of an online W&B group into a sweep-like dir (conf/report.yaml
`wandb_download_dir`/GROUP, one <run>/metrics.json + .hydra/ per run) and reports on that.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssah.errors import SsahError


@dataclass(frozen=True)
class Column:
    """A table column: header, metrics key, scale (100 turns a fraction into a percentage)."""

    header: str
    key: str
    scale: float = 1.0

    def cell(self, metrics: Mapping[str, Any]) -> str:
        v = metrics.get(self.key)
        if not isinstance(v, int | float):
            return "-"
        v = v * self.scale
        return f"{v:.1f}" if self.scale == 100 else f"{v:.3g}"


def markdown_table(rows: Sequence[tuple[str, Mapping[str, Any]]], cols: Sequence[Column]) -> str:
    """One row per (label, metrics); a column every row lacks is dropped."""
    cols = [c for c in cols if any(c.key in m for _, m in rows)]
    lines = ["| run | " + " | ".join(c.header for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {label} | " + " | ".join(c.cell(m) for c in cols) + " |" for label, m in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- collecting runs


@dataclass
class Run:
    """One finished job: where, its settings (Hydra choices + overrides) and metrics."""

    path: Path
    overrides: dict[str, str]
    settings: dict[str, str]
    metrics: dict[str, Any]


@dataclass
class Row:
    """Runs that differ only in `group_over` keys (seeds), averaged."""

    label: str
    axes: dict[str, str]
    settings: dict[str, str]
    metrics: dict[str, Any]
    n: int
    std: dict[str, float] = field(default_factory=dict)
    paper: dict[str, float] = field(default_factory=dict)
    paper_table: str = ""


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """["+a.b=1", "freeze=none"] -> {"a.b": "1", "freeze": "none"} (deletions dropped)."""
    out: dict[str, str] = {}
    for s in lines:
        s = str(s)
        if s.startswith("~") or "=" not in s:
            continue
        k, v = s.split("=", 1)
        out[k.lstrip("+")] = v
    return out


def load_run(metrics_file: Path) -> Run:
    import json

    from omegaconf import OmegaConf

    job = metrics_file.parent
    try:
        metrics = json.loads(metrics_file.read_text())
    except ValueError as e:
        raise SsahError(
            f"{metrics_file} is not valid JSON ({e}); delete it and re-run that job."
        ) from None
    overrides: dict[str, str] = {}
    settings: dict[str, str] = {}
    if (job / ".hydra" / "overrides.yaml").is_file():
        overrides = parse_overrides(OmegaConf.load(job / ".hydra" / "overrides.yaml"))  # type: ignore[arg-type]
    if (job / ".hydra" / "hydra.yaml").is_file():
        hy = OmegaConf.load(job / ".hydra" / "hydra.yaml")
        choices = OmegaConf.select(hy, "hydra.runtime.choices") or {}
        settings = {str(k): str(v) for k, v in choices.items() if not str(k).startswith("hydra/")}
    settings.update(overrides)
    return Run(job, overrides, settings, {k: v for k, v in metrics.items()})


def collect(root: str | Path) -> list[Run]:
    """Every metrics.json under root (one per job), in job order."""
    root = Path(root)
    if not root.is_dir():
        raise SsahError(
            f"{root} is not a directory; give a sweep dir (hydra.sweep.dir) or run dir."
        )
    files = [  # parts below root only: root itself may lie under a dir named wandb
        p
        for p in root.rglob("metrics.json")
        if not any(part in ("wandb", ".submitit") for part in p.relative_to(root).parts)
    ]
    if not files:
        raise SsahError(
            f"no metrics.json under {root}; run a sweep into it first (hydra.sweep.dir={root})."
        )
    return [load_run(p) for p in sorted(files, key=_job_order)]


def _job_order(p: Path) -> tuple[Any, ...]:
    return tuple(
        (0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.relative_to(p.anchor).parts
    )


def varying(runs: Sequence[Run], ignore: Sequence[str]) -> list[str]:
    """Override keys whose value differs across runs (the sweep's axes), in first-seen order."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys and k not in ignore]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def rows(runs: Sequence[Run], axes: Sequence[str], group_over: Sequence[str]) -> list[Row]:
    """Group runs by their axis values (minus group_over) and average numeric metrics."""
    label_axes = [a for a in axes if a not in group_over]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(a, "-") for a in label_axes), []).append(r)
    out = []
    for key, members in groups.items():
        ax = dict(zip(label_axes, key, strict=True))
        label = ", ".join(f"{a}={v}" for a, v in ax.items()) or members[0].path.name
        nums: dict[str, list[float]] = {}
        for m in members:
            for k, v in m.metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    nums.setdefault(k, []).append(float(v))
        mean = {k: statistics.fmean(v) for k, v in nums.items()}
        std = {k: statistics.stdev(v) for k, v in nums.items() if len(v) > 1}
        common = {
            k: v
            for k, v in members[0].settings.items()
            if all(m.settings.get(k) == v for m in members)
        }
        out.append(Row(label, ax, common, mean, len(members), std))
    return out


def attach_paper(rows_: Sequence[Row], paper: Sequence[Mapping[str, Any]]) -> None:
    """Paper numbers (percent) beside a row whose settings match every `match` entry."""
    for row in rows_:
        for entry in paper:
            if all(row.settings.get(str(k)) == str(v) for k, v in entry["match"].items()):
                row.paper = {str(k): float(v) for k, v in entry["metrics"].items()}
                row.paper_table = str(entry.get("table", ""))


# ---------------------------------------------------------------- tables


def _cols(spec: Sequence[Mapping[str, Any]]) -> list[Column]:
    return [Column(str(c["header"]), str(c["key"]), float(c.get("scale", 1.0))) for c in spec]


def table_cells(rows_: Sequence[Row], cols: Sequence[Column]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table: our columns, then the paper's beside where known."""
    cols = [c for c in cols if any(c.key in r.metrics for r in rows_)]
    paper_keys = [c for c in cols if any(c.key in r.paper for r in rows_)]
    header = ["run", "n"] + [c.header for c in cols] + [f"paper {c.header}" for c in paper_keys]
    body = []
    for r in rows_:
        cells = [r.label, str(r.n)] + [c.cell(r.metrics) for c in cols]
        cells += [f"{r.paper[c.key]:g}" if c.key in r.paper else "-" for c in paper_keys]
        body.append(cells)
    return header, body


def pivot(
    rows_: Sequence[Row], axes: Sequence[str], metric: Column
) -> tuple[list[str], list[list[str]]]:
    """Two-axis table like the paper's Table 2: rows = first axis, columns = second axis."""
    a, b = axes[0], axes[1]
    avals = list(dict.fromkeys(r.axes[a] for r in rows_))
    bvals = list(dict.fromkeys(r.axes[b] for r in rows_))
    header = [f"{a} \\ {b}"] + [f"{b}={v}" for v in bvals]
    body = []
    for av in avals:
        cells = [av]
        for bv in bvals:
            hit = [r for r in rows_ if r.axes[a] == av and r.axes[b] == bv]
            cells.append(metric.cell(hit[0].metrics) if hit else "-")
        body.append(cells)
    return header, body


def md(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def latex(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> str:
    def esc(s: str) -> str:
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("_", r"\_"),
            ("%", r"\%"),
            ("&", r"\&"),
            ("#", r"\#"),
        ):
            s = s.replace(a, b)
        return s

    spec = "l" + "r" * (len(header) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{esc(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(esc(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv_text(rows_: Sequence[Row]) -> str:
    """One line per row: axes, n, every numeric metric (mean), paper numbers as paper:<key>."""
    keys = sorted({k for r in rows_ for k in r.metrics})
    pkeys = sorted({k for r in rows_ for k in r.paper})
    axes = list(dict.fromkeys(a for r in rows_ for a in r.axes))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", *axes, "n", *keys, *(f"paper:{k}" for k in pkeys)])
    for r in rows_:
        w.writerow(
            [
                r.label,
                *(r.axes.get(a, "") for a in axes),
                r.n,
                *(r.metrics.get(k, "") for k in keys),
                *(r.paper.get(k, "") for k in pkeys),
            ]
        )
    return buf.getvalue()


# ---------------------------------------------------------------- plots


def plots(
    rows_: Sequence[Row], out: Path, asr_key: str, util_key: str, frozen_key: str
) -> list[Path]:
    """asr_vs_frozen.png, suites.png, pareto.png (each only when its metrics exist)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[Path] = []
    pts = [r for r in rows_ if asr_key in r.metrics]
    if pts:  # attack success vs frozen fraction, utility on a second axis
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [100 * r.metrics.get(frozen_key, 0.0) for r in pts]
        ax.scatter(xs, [100 * r.metrics[asr_key] for r in pts], color="tab:red", label="ASR")
        for x, r in zip(xs, pts, strict=True):
            ax.annotate(r.label, (x, 100 * r.metrics[asr_key]), fontsize=6)
        ax.set_xlabel("frozen params %")
        ax.set_ylabel(f"ASR % ({asr_key})", color="tab:red")
        if any(util_key in r.metrics for r in pts):
            ax2 = ax.twinx()
            ax2.scatter(
                xs,
                [100 * r.metrics.get(util_key, float("nan")) for r in pts],
                color="tab:blue",
                marker="s",
            )
            ax2.set_ylabel(f"utility % ({util_key})", color="tab:blue")
        fig.tight_layout()
        made.append(_save(fig, out / "asr_vs_frozen.png"))
    suites = sorted(
        {
            k.split("/")[2]
            for r in rows_
            for k in r.metrics
            if k.startswith("safety/asr/") and k.endswith("/keyword") and k.split("/")[2] != "avg"
        }
    )
    if suites:  # per-suite bars
        fig, ax = plt.subplots(figsize=(max(6, len(suites) * 0.6), 4))
        width = 0.8 / len(rows_)
        for i, r in enumerate(rows_):
            vals = [100 * r.metrics.get(f"safety/asr/{s}/keyword", float("nan")) for s in suites]
            ax.bar([j + i * width for j in range(len(suites))], vals, width, label=r.label)
        ax.set_xticks(
            [j + 0.4 - width / 2 for j in range(len(suites))],
            suites,
            rotation=45,
            ha="right",
            fontsize=7,
        )
        ax.set_ylabel("ASR % (keyword)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        made.append(_save(fig, out / "suites.png"))
    both = [r for r in rows_ if asr_key in r.metrics and util_key in r.metrics]
    if both:  # safety vs utility, Pareto front (low ASR, high utility)
        fig, ax = plt.subplots(figsize=(5, 4))
        u = [100 * r.metrics[util_key] for r in both]
        s = [100 * (1 - r.metrics[asr_key]) for r in both]
        ax.scatter(u, s)
        for x, y, r in zip(u, s, both, strict=True):
            ax.annotate(r.label, (x, y), fontsize=6)
        front = sorted(
            p
            for p in zip(u, s, strict=True)
            if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in zip(u, s, strict=True))
        )
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        ax.set_xlabel(f"utility % ({util_key})")
        ax.set_ylabel("safety % (100 - ASR)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(_save(fig, out / "pareto.png"))
    return made


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- the report


def build(root: str | Path, cfg: Any) -> dict[str, Any]:
    """Write report.md/.csv/.tex and PNGs into root; return paths and the rows."""
    from ssah.metrics import atomic_write_text

    root = Path(root)
    runs = collect(root)
    axes = varying(runs, list(cfg.ignore_overrides))
    rows_ = rows(runs, axes, list(cfg.group_over))
    attach_paper(rows_, list(cfg.paper))
    cols = _cols(cfg.columns)
    header, body = table_cells(rows_, cols)
    label_axes = [a for a in axes if a not in cfg.group_over]
    group = sweep_name_of(runs, root, cfg.get("sweep_name"))
    parts = [
        f"# Report: {group}\n",
        f"{len(runs)} runs under `{root}`; axes: "
        + (", ".join(f"`{a}`" for a in axes) or "none")
        + f"; averaged over: {list(cfg.group_over)}.\n",
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
        "pngs": pngs,
        "runs": runs,
        "group": group,
        "header": header,
        "body": body,
    }


def sweep_name_of(runs: Sequence[Run], root: Path, given: str | None) -> str:
    """The report's group: given, else the runs' common sweep_name override, else DIR's name."""
    if given:
        return str(given)
    names = {r.overrides.get("sweep_name") or r.settings.get("sweep") for r in runs} - {None}
    return names.pop() if len(names) == 1 else root.resolve().name


def log_to_wandb(cfg: Any, result: Mapping[str, Any]) -> None:
    """The tables and PNGs into a W&B run (offline by default) of the sweep's group."""
    from omegaconf import open_dict

    from ssah.tracking import finish, log_image, log_table, make_logger

    if cfg.get("logger") is None:
        return
    with open_dict(cfg):
        cfg.logger.group = result["group"]
        cfg.logger.job_type = "report"
    out = Path(cfg.wandb_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = make_logger(cfg, out)
    log_table(logger, "report", result["header"], result["body"])
    for p in result["pngs"]:
        log_image(logger, p.stem, p)
    finish(logger, {"report/runs": len(result["runs"])})


# ---------------------------------------------------------------- online W&B groups

# Top-level W&B config keys that never name a sweep axis: W&B's own, the choices (read
# separately), where files go and how the run was logged.
WANDB_CONFIG_SKIP = ("_wandb", "hydra_choices", "hydra_overrides", "paths", "logger")


@dataclass(frozen=True)
class WandbGroup:
    """`wandb:ENTITY/PROJECT/GROUP` split into its parts."""

    entity: str
    project: str
    group: str

    @classmethod
    def parse(cls, spec: str) -> WandbGroup:
        parts = spec.removeprefix("wandb:").split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise SsahError(
                f"{spec!r} is not a W&B group; write wandb:ENTITY/PROJECT/GROUP "
                "(GROUP: the sweep_name the runs were logged with)."
            )
        return cls(*parts)

    @property
    def project_path(self) -> str:
        return f"{self.entity}/{self.project}"


@dataclass(frozen=True)
class WandbRun:
    """What the report needs of one finished W&B run, read once so nothing is fetched later."""

    dirname: str
    run_id: str
    metrics: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class GroupDownload:
    """A downloaded group: the sweep-like dir, runs written, runs left out (and why)."""

    group: str
    root: Path
    runs: int
    unfinished: int
    reports: int


def _api() -> Any:
    """The public W&B API client; its own function so tests can put a fake in its place."""
    import wandb

    return wandb.Api()


def _has_api_key() -> bool:
    """A key in the environment or from `wandb login` (netrc), checked without the network."""
    import netrc
    import os
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _require_online(spec: str) -> None:
    """Fail before any network call when W&B is offline or has no key to log in with."""
    import os

    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled") or not _has_api_key():
        raise SsahError(
            f"reading W&B group {spec!r} needs online W&B (WANDB_API_KEY set or `wandb login`, "
            "WANDB_MODE not offline); offline, give the sweep dir instead: python -m ssah.report DIR"
        )


def _safe_name(name: str) -> str:
    """A W&B name as one path component (no separators, no leading dot)."""
    import re

    return re.sub(r"[^\w.,=+-]", "_", name).lstrip(".") or "_"


def _summary_metrics(summary: Any) -> dict[str, Any]:
    """A run summary as metrics.json keys: W&B's `_` keys and media (tables, images) dropped."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        key = str(k)
        if key.startswith("_"):
            continue
        if hasattr(v, "items"):
            sub = dict(v.items())
            if "_type" not in sub:  # nested keys: flatten them back into a/b
                out.update({f"{key}/{kk}": vv for kk, vv in _summary_metrics(sub).items()})
        elif v is None or isinstance(v, int | float | str):
            out[key] = v
    return out


def _fetch_group(g: WandbGroup) -> tuple[list[WandbRun], int, int]:
    """Finished runs of the group (no report runs), plus counts of unfinished and report runs.

    Every network read happens here, so a network or auth error stops before a file is written.
    """
    import requests
    import wandb

    runs: list[WandbRun] = []
    unfinished = reports = 0
    try:
        for run in _api().runs(path=g.project_path, filters={"group": g.group}):
            if getattr(run, "job_type", None) == "report":
                reports += 1
            elif run.state != "finished":
                unfinished += 1
            else:
                name = _safe_name(str(run.name or run.id))
                metrics, config = _summary_metrics(run.summary), dict(run.config)
                runs.append(WandbRun(name, str(run.id), metrics, config))
    except (wandb.errors.Error, requests.RequestException, ValueError) as e:
        cause = " ".join(str(e).split())[:300] or type(e).__name__
        raise SsahError(
            f"could not read W&B group {g.project_path}/{g.group} ({cause}); check the network, "
            "WANDB_API_KEY and that the entity and project exist."
        ) from None
    return _unique_dirnames(runs), unfinished, reports


def _unique_dirnames(runs: Sequence[WandbRun]) -> list[WandbRun]:
    """Run names are not unique in W&B: a repeated name gets its run id appended."""
    from dataclasses import replace

    seen = [r.dirname for r in runs]
    return [
        replace(r, dirname=f"{r.dirname}-{_safe_name(r.run_id)}")
        if seen.count(r.dirname) > 1
        else r
        for r in runs
    ]


def _choices(config: Mapping[str, Any]) -> dict[str, str]:
    """Hydra's chosen config options, as ssah.tracking logs them (`hydra_choices`)."""
    raw = config.get("hydra_choices") or {}
    return {str(k): _value(v) for k, v in raw.items() if not str(k).startswith("hydra/")}


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'freeze': {'extra_ratio': 0.06}} -> {'freeze.extra_ratio': '0.06'} (Hydra key paths)."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_leaves(v, key + "."))
        else:
            out[key] = _value(v)
    return out


def _value(v: Any) -> str:
    """A config value as a Hydra override writes it (true, null, [1, 2])."""
    import json

    return json.dumps(v) if v is None or isinstance(v, bool | list | dict) else str(v)


def _varying_keys(dicts: Sequence[Mapping[str, str]]) -> list[str]:
    """Keys (first-seen order) whose value, or presence, differs across dicts."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return [k for k in keys if len({d.get(k) for d in dicts}) > 1]


def group_overrides(configs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Each run's sweep overrides: as logged (`hydra_overrides`), else rebuilt from the configs.

    A choice that differs across runs is an override (freeze=none); so is a config value that
    differs (seed=1, freeze.extra_ratio=0.06), unless it lies under a differing choice, where
    it only follows from that choice.
    """
    choices = [_choices(c) for c in configs]
    leaves = [
        _leaves(
            {k: v for k, v in c.items() if k not in WANDB_CONFIG_SKIP and not k.startswith("_")}
        )
        for c in configs
    ]
    groups = _varying_keys(choices)
    values = [k for k in _varying_keys(leaves) if not any(k.startswith(f"{g}.") for g in groups)]
    rebuilt = [
        [f"{k}={ch[k]}" for k in groups if k in ch] + [f"{k}={lv[k]}" for k in values if k in lv]
        for ch, lv in zip(choices, leaves, strict=True)
    ]
    # Runs that logged their command-line overrides (ssah.tracking) need no rebuilding.
    return [
        [str(o) for o in c["hydra_overrides"]] if c.get("hydra_overrides") else r
        for c, r in zip(configs, rebuilt, strict=True)
    ]


def _write_job(job: Path, run: WandbRun, overrides: Sequence[str]) -> None:
    """One job dir as a Hydra sweep leaves it: metrics.json and .hydra/ (what load_run reads)."""
    from omegaconf import OmegaConf

    from ssah.metrics import write_metrics

    (job / ".hydra").mkdir(parents=True)
    write_metrics(job, run.metrics)
    OmegaConf.save(OmegaConf.create(list(overrides)), job / ".hydra" / "overrides.yaml")
    hydra = {"hydra": {"runtime": {"choices": _choices(run.config)}}}
    OmegaConf.save(OmegaConf.create(hydra), job / ".hydra" / "hydra.yaml")


def _write_group(dest: Path, runs: Sequence[WandbRun]) -> None:
    """Write every job into a temp dir beside dest, then swap it in: never a half-written dest."""
    import os
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        for run, ov in zip(runs, group_overrides([r.config for r in runs]), strict=True):
            _write_job(tmp / run.dirname, run, ov)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        if old.exists() and not dest.exists():
            old.rename(dest)  # the previous download stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def from_wandb_group(spec: str, download_dir: str | Path) -> GroupDownload:
    """`wandb:ENTITY/PROJECT/GROUP` -> download_dir/GROUP, a dir `build` reads like a sweep."""
    g = WandbGroup.parse(spec)
    _require_online(spec)
    runs, unfinished, reports = _fetch_group(g)
    if not runs:
        raise SsahError(
            f"W&B group {g.project_path}/{g.group} has no finished runs ({unfinished} unfinished); "
            "check the group name (the runs' sweep_name) or wait for the runs to finish."
        )
    dest = Path(download_dir) / _safe_name(g.group)
    _write_group(dest, runs)
    return GroupDownload(g.group, dest, len(runs), unfinished, reports)


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
        log_to_wandb(cfg, result)
    except SsahError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[report] {len(result['runs'])} runs -> {result['report']}")
    for p in result["pngs"]:
        print(f"[report] plot {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
