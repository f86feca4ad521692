"""Attribute transfer (paper Figs. 5-6): how unit categories move between two units files.

`python -m ssah.transfer a=PATH b=PATH` reads two `units.safetensors` (contract 4: uint8
`layers.{i}.mlp.category` / `layers.{i}.attn.category`, 0 RU, 1 SCU, 2 UCU, 3 CU) of models
with the same shape (base -> aligned, aligned -> fine-tuned) and writes the 4x4 transition
matrix, globally and per layer, as markdown and CSV tables, a heatmap PNG and metrics.
Units are counted one each (a neuron and a head weigh the same), as the paper's shares do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ssah.errors import SsahError
from ssah.io import atomic_write_text
from ssah.scoring.unitsfile import read_safetensors
from ssah.tables import md
from ssah.units import CATEGORY_NAMES, KINDS

CATEGORIES = CATEGORY_NAMES  # contract 4 codes 0..3
_KEY = re.compile(r"^layers\.(\d+)\.(mlp|attn)\.category$")


def read_categories(path: str | Path) -> tuple[dict[tuple[int, str], torch.Tensor], dict]:
    """{(layer, kind): uint8 categories} and the header metadata of a units file."""
    p = Path(str(path)).expanduser()
    tensors, meta = read_safetensors(p)
    cats = {(int(m.group(1)), m.group(2)): t for k, t in tensors.items() if (m := _KEY.match(k))}
    if not cats:
        raise SsahError(
            f"{str(p)!r} has no layers.{{i}}.mlp.category tensors; is it a units file (contract 4)?"
        )
    layers = sorted({i for i, _ in cats})
    missing = [
        f"layers.{i}.{k}.category"
        for i in range(layers[-1] + 1)
        for k in KINDS
        if (i, k) not in cats
    ]
    if missing:
        raise SsahError(
            f"{str(p)!r} lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}; "
            "the units file is incomplete, re-run the score stage."
        )
    for key, t in cats.items():
        if t.dtype != torch.uint8 or t.dim() != 1:
            raise SsahError(
                f"{str(p)!r}: layers.{key[0]}.{key[1]}.category must be a 1-D uint8 "
                f"vector, got {t.dtype} of shape {tuple(t.shape)}."
            )
        if t.numel() and int(t.max()) > 3:
            raise SsahError(
                f"{str(p)!r}: layers.{key[0]}.{key[1]}.category has value "
                f"{int(t.max())}; categories are 0 RU, 1 SCU, 2 UCU, 3 CU."
            )
    return cats, meta


def shape_of(cats: dict[tuple[int, str], torch.Tensor]) -> dict[str, Any]:
    """Layers and units per kind, for the same-model-shape check."""
    n = max(i for i, _ in cats) + 1
    return {"layers": n, **{k: sorted({cats[(i, k)].numel() for i in range(n)}) for k in KINDS}}


def count(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """4x4 counts: entry [i, j] = units in category i in a and category j in b."""
    idx = a.long() * 4 + b.long()
    return torch.bincount(idx, minlength=16).view(4, 4)


def transition_matrix(a_path: str | Path, b_path: str | Path) -> dict[str, Any]:
    """Category transitions from units file a to b (same model shape).

    Returns {"categories": [RU, SCU, UCU, CU], "global": 4x4 counts (rows: a, columns: b),
    "by_kind": {"mlp": 4x4, "attn": 4x4}, "per_layer": [{"layer", "mlp", "attn", "all"}],
    "num_units", "a"/"b": {"path", "metadata"}}; every matrix is a nested list of ints.
    """
    a, meta_a = read_categories(a_path)
    b, meta_b = read_categories(b_path)
    sa, sb = shape_of(a), shape_of(b)
    if sa != sb or any(a[key].numel() != b[key].numel() for key in a):
        raise SsahError(
            f"units files come from models of different shapes: a={str(a_path)!r} has {sa}, "
            f"b={str(b_path)!r} has {sb}; compare units files of the same architecture."
        )
    per_layer, by_kind = [], {k: torch.zeros(4, 4, dtype=torch.long) for k in KINDS}
    for i in range(sa["layers"]):
        row: dict[str, Any] = {"layer": i}
        for k in KINDS:
            c = count(a[(i, k)], b[(i, k)])
            by_kind[k] += c
            row[k] = c.tolist()
        row["all"] = (torch.tensor(row["mlp"]) + torch.tensor(row["attn"])).tolist()
        per_layer.append(row)
    total = by_kind["mlp"] + by_kind["attn"]
    return {
        "categories": list(CATEGORIES),
        "global": total.tolist(),
        "by_kind": {k: v.tolist() for k, v in by_kind.items()},
        "per_layer": per_layer,
        "num_units": int(total.sum()),
        "a": {"path": str(a_path), "metadata": meta_a},
        "b": {"path": str(b_path), "metadata": meta_b},
    }


def transfer_metrics(result: dict[str, Any], name: str | None = None) -> dict[str, float]:
    """transfer[/<name>]/<from>_to_<to>: share of all units; .../cond/<from>_to_<to>:
    share of the `from` category's units; stay_fraction; category shares in a and b."""
    p = f"transfer/{name}" if name else "transfer"
    m = torch.tensor(result["global"], dtype=torch.float64)
    n = m.sum().clamp_min(1)
    rows = m.sum(1)
    out: dict[str, float] = {
        f"{p}/num_units": float(m.sum()),
        f"{p}/stay_fraction": float(m.trace() / n),
    }
    for i, ci in enumerate(CATEGORIES):
        out[f"{p}/a/{ci}_fraction"] = float(rows[i] / n)
        out[f"{p}/b/{ci}_fraction"] = float(m[:, i].sum() / n)
        for j, cj in enumerate(CATEGORIES):
            out[f"{p}/{ci}_to_{cj}"] = float(m[i, j] / n)
            out[f"{p}/cond/{ci}_to_{cj}"] = float(m[i, j] / rows[i]) if rows[i] else float("nan")
    return out


# ---- tables and plot ------------------------------------------------------------------------
def markdown(result: dict[str, Any], labels: tuple[str, str] = ("a", "b")) -> str:
    """Global matrix (count and % of the row) and per-layer counts as markdown."""
    la, lb = labels
    m = torch.tensor(result["global"])
    body = []
    for i, c in enumerate(CATEGORIES):
        row_n = int(m[i].sum())
        cells = [f"{int(v)} ({100 * int(v) / row_n:.1f}%)" if row_n else "0" for v in m[i]]
        body.append([c, *cells, str(row_n)])
    body.append(["total", *(str(int(v)) for v in m.sum(0)), str(int(m.sum()))])
    pairs = [f"{ci}->{cj}" for ci in CATEGORIES for cj in CATEGORIES]
    per_layer = [
        [str(r["layer"]), *(str(v) for x in r["all"] for v in x)] for r in result["per_layer"]
    ]
    return (
        f"### Category transitions {la} -> {lb} ({result['num_units']} units)\n\n"
        + md([f"{la} \\ {lb}", *CATEGORIES, "total"], body)
        + f"\n### Per layer (all units; counts {la} -> {lb})\n\n"
        + md(["layer", *pairs], per_layer)
    )


def csv(result: dict[str, Any]) -> str:
    """Long format: scope,layer,kind,from,to,count (scope global or layer)."""
    lines = ["scope,layer,kind,from,to,count"]
    blocks = [("global", "", "all", result["global"])]
    blocks += [("global", "", k, result["by_kind"][k]) for k in KINDS]
    for row in result["per_layer"]:
        blocks += [("layer", row["layer"], k, row[k]) for k in (*KINDS, "all")]
    for scope, layer, kind, mat in blocks:
        for i, ci in enumerate(CATEGORIES):
            for j, cj in enumerate(CATEGORIES):
                lines.append(f"{scope},{layer},{kind},{ci},{cj},{mat[i][j]}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path, labels: tuple[str, str] = ("a", "b")) -> Path:
    """Left: global matrix (colour: share of the row; text: count). Right: per layer, the
    share of the layer's units of each `from` category that went to each `to` category
    (grey: the layer has no unit of that category in a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    la, lb = labels
    m = torch.tensor(result["global"], dtype=torch.float64)
    cond = m / m.sum(1, keepdim=True).clamp_min(1)
    layers = torch.tensor([r["all"] for r in result["per_layer"]], dtype=torch.float64)
    rows = layers.sum(2, keepdim=True)  # [layers, 4, 1] units per `from` category
    per = torch.where(rows > 0, layers / rows.clamp_min(1), float("nan")).view(len(layers), 16)
    fig, (ax0, ax1) = plt.subplots(
        1, 2, figsize=(13, 0.9 + max(3.6, 0.22 * len(per))), gridspec_kw={"width_ratios": [1, 2.2]}
    )
    im = ax0.imshow(cond.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(4):
        for j in range(4):
            ax0.text(
                j,
                i,
                f"{int(m[i, j])}\n{100 * cond[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if cond[i, j] > 0.6 else "black",
            )
    ax0.set_xticks(range(4), CATEGORIES)
    ax0.set_yticks(range(4), CATEGORIES)
    ax0.set_xlabel(f"category in {lb}")
    ax0.set_ylabel(f"category in {la}")
    ax0.set_title(f"{la} -> {lb}: all {result['num_units']} units (% of row)", fontsize=10)
    fig.colorbar(im, ax=ax0, fraction=0.046)
    im1 = ax1.imshow(per.numpy(), cmap="magma_r", aspect="auto", vmin=0, vmax=1)
    ax1.set_facecolor("lightgray")
    for x in (3.5, 7.5, 11.5):
        ax1.axvline(x, color="white", lw=2)
    ax1.set_xticks(
        range(16), [f"{a}>{b}" for a in CATEGORIES for b in CATEGORIES], rotation=60, fontsize=7
    )
    ax1.set_ylabel("layer")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title(
        "per layer: share of the layer's units of each category in a (% of row)", fontsize=10
    )
    fig.colorbar(im1, ax=ax1, fraction=0.03)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    result: dict[str, Any],
    out_dir: Path,
    name: str | None = None,
    labels: tuple[str, str] = ("a", "b"),
) -> dict[str, Path]:
    """transfer[_<name>].md/.csv/.png into out_dir."""
    stem = f"transfer_{name}" if name else "transfer"
    out_dir = Path(out_dir)
    return {
        "md": atomic_write_text(out_dir / f"{stem}.md", markdown(result, labels)),
        "csv": atomic_write_text(out_dir / f"{stem}.csv", csv(result)),
        "png": plot(result, out_dir / f"{stem}.png", labels),
    }
