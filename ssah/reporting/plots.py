"""PNG plots of a report: ASR vs frozen fraction, ASR per suite, the safety/utility Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssah.reporting.aggregate import Row


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
