"""Per-layer plot of category shares (PNG), one panel per unit kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssah.io import atomic_path
from ssah.units import CATEGORY_NAMES

COLORS = {"ru": "#9e9e9e", "scu": "#d62728", "ucu": "#1f77b4", "cu": "#2ca02c"}


def plot_layers(summary: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Stacked bars: share of each category among a layer's MLP neurons / heads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = summary["per_layer"]
    x = list(range(len(layers)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, kind, label in zip(
        axes, ("mlp", "attn"), ("MLP neurons", "attention heads"), strict=True
    ):
        bottom = [0.0] * len(layers)
        for name in (n.lower() for n in CATEGORY_NAMES):
            vals = [row[kind][name] for row in layers]
            ax.bar(x, vals, bottom=bottom, color=COLORS[name], label=name.upper())
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_title(label)
        ax.set_xlabel("layer")
        ax.set_xticks(x)
    axes[0].set_ylabel("share of units")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)
