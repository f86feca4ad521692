"""Reasoning-direction probe (paper Figs. 2-4): does a model lean to refusing or fulfilling?

Not a trained probe. For a harmful query Q, compare the hidden state of Q with the hidden
state of Q followed by the first k tokens of a benign continuation ("Sorry, I can't ...")
and of a malicious one ("Here's how ..."), per layer, as a cosine distance. A model that
has already chosen to refuse moves less when the refusal is appended: its benign distance
is smaller than its malicious one (gap = malicious - benign > 0). Aligned vs reference
model; the generation-time direction tracking (ssah.analysis.direction) runs in the same stage.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.chat import encode_prompt
from ssah.data.records import load_records, to_dicts
from ssah.errors import SsahError
from ssah.metrics import atomic_write_text

ROLES = ("aligned", "reference")
POSITIONS = ("last", "mean")


# ---- config ---------------------------------------------------------------------------------
@dataclass
class DistanceSpec:
    """conf/probe.yaml `distance`: which continuations, lengths, token position and layers."""

    benign: str
    malicious: str
    ks: tuple[int, ...] = (2, 4, 6, 8, 10)
    position: str = "last"
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        if not self.ks or any(k < 1 for k in self.ks):
            raise SsahError(f"distance.ks={list(self.ks)} must be a non-empty list of ints >= 1.")
        if self.position not in POSITIONS:
            raise SsahError(
                f"distance.position={self.position!r} is unknown; use one of {POSITIONS}."
            )
        if self.layers is not None:
            self.layers = tuple(int(i) for i in self.layers)
        for name in ("benign", "malicious"):
            if not str(getattr(self, name)).strip():
                raise SsahError(f"distance.{name} is empty; give the continuation text.")


def resolve_layers(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    """Block indices (negatives count from the end); None means every block."""
    if layers is None:
        return list(range(num_layers))
    out = []
    for i in layers:
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise SsahError(f"layer {i} does not exist; the model has {num_layers} blocks.")
        out.append(j)
    return sorted(set(out))


def fill(template: str, record: Mapping[str, Any], what: str) -> str:
    """str.format over a record's fields ({verb}, {target}); a clear error if one is missing."""
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    missing = [f for f in fields if f not in record]
    if missing:
        raise SsahError(
            f"{what}={template!r} uses {missing}, which the records do not have "
            f"(they have {sorted(record)}); use fixed text or existing fields."
        )
    return template.format_map(dict(record)) if fields else template


def load_prompts(source: str, field: str, limit: int | None, split: str = "train") -> list[dict]:
    """Records with a `prompt` key (renamed from `field`)."""
    columns = {field: "prompt"} if field != "prompt" else None
    rows = to_dicts(load_records(source, split=split, columns=columns, limit=limit))
    if not rows:
        raise SsahError(f"no records in {source!r}; point the config at harmful queries.")
    return rows


# ---- hidden states --------------------------------------------------------------------------
def block_states(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outputs of every block, [layers, batch, seq, hidden] (right-padded input).

    HF returns the embeddings first and applies the final norm to the last entry; both are
    what `output_hidden_states` means for every HF causal LM, so layer L-1 is post-norm.
    """
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    return torch.stack(out.hidden_states[1:])


def pool(states: torch.Tensor, idx: torch.Tensor, position: str) -> torch.Tensor:
    """States [L, S, H] of one row at token indices idx [m] -> [L, m, H] (float32).

    last: the state at idx; mean: the mean of states 0..idx (the whole sequence so far).
    """
    if position == "last":
        return states[:, idx].float()
    csum = states.float().cumsum(dim=1)
    return csum[:, idx] / (idx.to(csum.dtype) + 1)[None, :, None]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) along the last dim."""
    return 1.0 - torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


@torch.no_grad()
def continuation_distances(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    cont_ids: Sequence[Sequence[int]],
    ks: Sequence[int],
    position: str = "last",
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    pad_id: int = 0,
) -> torch.Tensor:
    """Cosine distance between h(Q) and h(Q + first k continuation tokens): [n, layers, ks].

    One forward pass per row covers every k: causal attention makes the state at position
    len(Q)-1+k exactly the last state of the sequence Q + k tokens.
    """
    kmax = max(ks)
    num_layers = model.config.num_hidden_layers
    layer_idx = torch.tensor(resolve_layers(layers, num_layers))
    device = next(model.parameters()).device
    kk = torch.tensor(list(ks))
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = [
            list(p) + list(c[:kmax])
            for p, c in zip(
                prompt_ids[start : start + batch_size],
                cont_ids[start : start + batch_size],
                strict=True,
            )
        ]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        states = block_states(model, ids.to(device), mask.to(device))[layer_idx.to(device)]
        for i, p in enumerate(prompt_ids[start : start + batch_size]):
            idx = torch.cat([torch.tensor([len(p) - 1]), len(p) - 1 + kk]).to(device)
            pooled = pool(states[:, i], idx, position)  # [L, 1 + len(ks), H]
            out.append(cosine_distance(pooled[:, :1], pooled[:, 1:]).cpu())
    return torch.stack(out)


# ---- one model ------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """Distances [queries, layers, ks] to the benign and the malicious continuation."""

    benign: torch.Tensor
    malicious: torch.Tensor
    layers: list[int]
    ks: list[int]

    @property
    def gap(self) -> torch.Tensor:
        """malicious - benign: > 0 means the model sits closer to the benign continuation."""
        return self.malicious - self.benign


def continuation_ids(
    tok: PreTrainedTokenizerBase, records: list[dict], template: str, need: int, what: str
) -> list[list[int]]:
    """Token ids of each record's continuation; every one must have at least `need` tokens."""
    out = []
    for rec in records:
        text = fill(template, rec, what)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) < need:
            raise SsahError(
                f"{what}={text!r} has {len(ids)} tokens but distance.ks needs {need}; "
                "give a longer continuation or smaller ks."
            )
        out.append(ids)
    return out


def probe_model(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    records: list[dict],
    spec: DistanceSpec,
    system_prompt: str | None = None,
    batch_size: int = 16,
) -> ProbeResult:
    """Benign and malicious continuation distances of one model."""
    prompts = [encode_prompt(tok, r["prompt"], system_prompt) for r in records]
    need = max(spec.ks)
    kwargs = dict(
        ks=spec.ks,
        position=spec.position,
        layers=spec.layers,
        batch_size=batch_size,
        pad_id=tok.pad_token_id or 0,
    )
    ben = continuation_ids(tok, records, spec.benign, need, "distance.benign")
    mal = continuation_ids(tok, records, spec.malicious, need, "distance.malicious")
    return ProbeResult(
        benign=continuation_distances(model, prompts, ben, **kwargs),
        malicious=continuation_distances(model, prompts, mal, **kwargs),
        layers=resolve_layers(spec.layers, model.config.num_hidden_layers),
        ks=list(spec.ks),
    )


def summarize(res: ProbeResult, label: str) -> dict[str, float]:
    """probe/<label>/... metrics: means over queries, layers and k."""
    p = f"probe/{label}"
    gap = res.gap
    m = {
        f"{p}/gap_mean": gap.mean().item(),
        f"{p}/benign_distance_mean": res.benign.mean().item(),
        f"{p}/malicious_distance_mean": res.malicious.mean().item(),
        f"{p}/closer_to_benign": float(gap.mean().item() > 0),
        f"{p}/closer_to_benign_fraction": (gap > 0).float().mean().item(),
        f"{p}/last_layer_gap": gap[:, -1].mean().item(),
    }
    for j, k in enumerate(res.ks):
        m[f"{p}/k{k}/gap"] = gap[:, :, j].mean().item()
        m[f"{p}/k{k}/benign_distance"] = res.benign[:, :, j].mean().item()
        m[f"{p}/k{k}/malicious_distance"] = res.malicious[:, :, j].mean().item()
    return m


def compare(gaps: Mapping[str, float], labels: Mapping[str, str]) -> dict[str, float]:
    """Is the aligned model closer to the benign continuation than the reference?"""
    a, r = gaps[labels["aligned"]], gaps[labels["reference"]]
    return {"probe/aligned_closer_to_benign": float(a > r), "probe/gap_difference": a - r}


# ---- outputs --------------------------------------------------------------------------------
def write_csv(results: Mapping[str, ProbeResult], path: Path) -> None:
    """model,k,layer,benign,malicious,gap (means over queries)."""
    lines = ["model,k,layer,benign_distance,malicious_distance,gap"]
    for label, res in results.items():
        b, m = res.benign.mean(0), res.malicious.mean(0)
        for j, k in enumerate(res.ks):
            for i, layer in enumerate(res.layers):
                lines.append(
                    f"{label},{k},{layer},{b[i, j]:.6g},{m[i, j]:.6g},{m[i, j] - b[i, j]:.6g}"
                )
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot_distances(results: Mapping[str, ProbeResult], path: Path) -> Path:
    """Figs. 2-4 style: per model (rows) and k (columns), distance vs layer, benign vs malicious;
    a last column with the gap per layer for every k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    labels = list(results)
    ks = results[labels[0]].ks
    fig, axes = plt.subplots(
        len(labels),
        len(ks) + 1,
        squeeze=False,
        figsize=(2.6 * (len(ks) + 1), 2.4 * len(labels)),
        sharex=True,
    )
    cmap = plt.get_cmap("viridis")
    for r, label in enumerate(labels):
        res = results[label]
        b, m = res.benign.mean(0), res.malicious.mean(0)
        for j, k in enumerate(ks):
            ax = axes[r, j]
            ax.plot(res.layers, b[:, j], "o-", color="tab:green", ms=3, label="benign")
            ax.plot(res.layers, m[:, j], "s-", color="tab:red", ms=3, label="malicious")
            ax.set_title(f"{label}, k={k}", fontsize=9)
            if j == 0:
                ax.set_ylabel("cosine distance")
        ax = axes[r, -1]
        for j, k in enumerate(ks):
            ax.plot(res.layers, (m - b)[:, j], color=cmap(j / max(1, len(ks) - 1)), label=f"k={k}")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_title(f"{label}: malicious - benign", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=7)
    axes[0, -1].legend(fontsize=6)
    fig.suptitle("Distance of h(Q) to h(Q + k continuation tokens); gap > 0: closer to refusing")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
