"""Track the refuse-vs-fulfil direction while a model generates (beyond the paper).

The paper says safety is a binary reasoning direction chosen at the start of the answer and
asks for models that re-evaluate it at every step. This makes that measurable: per layer,
the direction is the difference of the mean hidden states of refused and of fulfilled
examples (labelled by the model's own greedy answers), taken at the last prompt token
(`estimate.position=prompt_end`) or averaged over the answer steps (`answer`, the default);
each generation step's state is projected onto it, scaled so the refused mean sits at +1,
the fulfilled mean at -1 and the midpoint at 0. The plots show where a prefill attack or a
jailbreak wrapper moves the model from the refusing side (> 0) to the fulfilling side (< 0),
and whether it comes back.

Why `answer` is the default: states inside an answer are far from prompt-end states; on the
toy world a prompt-end direction puts every answer step, refusals included, on the
fulfilling side, so it cannot show a flip. The state that only predicts EOS is not tracked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.chat import encode_prompt
from ssah.errors import SsahError
from ssah.metrics import atomic_write_text

ROLES = ("aligned", "reference")


# ---- the direction --------------------------------------------------------------------------
@dataclass
class Direction:
    """Per-layer refuse-minus-fulfil direction from mean states [layers, hidden]."""

    refuse_mean: torch.Tensor
    fulfil_mean: torch.Tensor

    def __post_init__(self) -> None:
        diff = (self.refuse_mean - self.fulfil_mean).float()
        self.half = (diff.norm(dim=-1) / 2).clamp_min(1e-12)  # [L]
        self.unit = diff / (2 * self.half[:, None])
        self.mid = ((self.refuse_mean + self.fulfil_mean) / 2).float()

    def to(self, device: torch.device | str) -> Direction:
        """A copy on `device` (project where the hidden states are)."""
        return Direction(self.refuse_mean.to(device), self.fulfil_mean.to(device))

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """States [..., layers, hidden] -> [..., layers]: +1 refused mean, -1 fulfilled mean."""
        s = states.float().to(self.unit.device)
        return ((s - self.mid) * self.unit).sum(-1) / self.half


def estimate(refused: torch.Tensor, fulfilled: torch.Tensor) -> Direction:
    """Direction from prompt-end states [n, layers, hidden] of refused and fulfilled examples."""
    if len(refused) == 0 or len(fulfilled) == 0:
        raise SsahError(
            f"direction needs refused and fulfilled examples; got {len(refused)} refused and "
            f"{len(fulfilled)} fulfilled. Use direction.estimate.labels=source or more data."
        )
    return Direction(refused.float().mean(0), fulfilled.float().mean(0))


def separability(d: Direction, refused: torch.Tensor, fulfilled: torch.Tensor) -> dict:
    """Per layer: d' = (mean_r - mean_f) / pooled std of the projections, and sign accuracy."""
    pr, pf = d.project(refused), d.project(fulfilled)  # [n, L]
    var = (pr.var(0, unbiased=False) * len(pr) + pf.var(0, unbiased=False) * len(pf)) / (
        len(pr) + len(pf)
    )
    dprime = (pr.mean(0) - pf.mean(0)) / var.sqrt().clamp_min(1e-8)
    acc = ((pr > 0).float().sum(0) + (pf < 0).float().sum(0)) / (len(pr) + len(pf))
    return {"dprime": dprime, "accuracy": acc}


def pick_layer(choice: int | str, dprime: torch.Tensor) -> int:
    """`auto`: the layer where refused and fulfilled separate best; else an index."""
    n = len(dprime)
    if choice == "auto":
        return int(torch.argmax(torch.nan_to_num(dprime, nan=-1.0)))
    i = int(choice)
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise SsahError(f"direction.layer={choice} does not exist; the model has {n} blocks.")
    return j


# ---- greedy generation with per-step states -------------------------------------------------
@dataclass
class Trace:
    """One answer: its tokens (forced ones first), per-step projections [steps, layers]."""

    prompt_state: torch.Tensor  # [layers, hidden] at the last prompt token
    answer_state: torch.Tensor | None = None  # [layers, hidden], mean over all answer steps
    tokens: list[int] = field(default_factory=list)
    proj: torch.Tensor | None = None
    n_forced: int = 0
    refused: bool | None = None  # keyword judge of the answer, set by track_model


@torch.no_grad()
def greedy(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    forced: Sequence[Sequence[int]] | None = None,
    max_new_tokens: int = 32,
    eos_id: int | None = None,
    pad_id: int = 0,
    direction: Direction | None = None,
    batch_size: int = 16,
) -> list[Trace]:
    """Greedy answers; step t's state is the one that predicts (or is forced to) token t.

    Forced tokens (a prefill attack) replace the argmax for the first steps; then up to
    `max_new_tokens` free tokens follow. Batches are left-padded with explicit position ids,
    so every row sees exactly its own prompt.
    """
    forced = forced or [[] for _ in prompt_ids]
    out: list[Trace] = []
    for s in range(0, len(prompt_ids), batch_size):
        out += _greedy_batch(
            model,
            prompt_ids[s : s + batch_size],
            forced[s : s + batch_size],
            max_new_tokens,
            eos_id,
            pad_id,
            direction,
        )
    return out


def _greedy_batch(model, prompts, forced, max_new_tokens, eos_id, pad_id, direction):  # noqa: ANN001, ANN202
    device = next(model.parameters()).device
    direction = direction.to(device) if direction is not None else None
    b, width = len(prompts), max(map(len, prompts))
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(list(p))
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    steps = max_new_tokens + max(map(len, forced))
    traces: list[Trace] = []
    done = torch.zeros(b, dtype=torch.bool)
    sums, counts = None, torch.zeros(b)
    projs: list[list[torch.Tensor]] = [[] for _ in range(b)]
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        output_hidden_states=True,
    )
    for t in range(steps):
        hs = torch.stack(out.hidden_states[1:])[:, :, -1].transpose(0, 1)  # [B, L, H]
        if t == 0:
            traces = [
                Trace(prompt_state=hs[i].float().cpu(), n_forced=len(forced[i])) for i in range(b)
            ]
        p = direction.project(hs).cpu() if direction is not None else None
        nxt = out.logits[:, -1].argmax(-1).cpu()
        record = torch.zeros(b)
        for i in range(b):
            if done[i]:
                continue
            tok = forced[i][t] if t < len(forced[i]) else int(nxt[i])
            nxt[i] = tok
            traces[i].tokens.append(tok)
            stop = eos_id is not None and tok == eos_id and t >= len(forced[i])
            if not stop or t == 0:  # the state that only predicts EOS is not tracked
                record[i] = 1.0
                if p is not None:
                    projs[i].append(p[i])
            if stop or t + 1 >= max_new_tokens + len(forced[i]):
                done[i] = True
        sums = (0 if sums is None else sums) + hs.float() * record.to(device)[:, None, None]
        counts += record
        if bool(done.all()):
            break
        nxt[done] = pad_id
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=nxt[:, None].to(device),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=out.past_key_values,
            use_cache=True,
            output_hidden_states=True,
        )
    for i, tr in enumerate(traces):
        tr.answer_state = (sums[i] / counts[i].clamp_min(1)).cpu()
        if projs[i]:
            tr.proj = torch.stack(projs[i])
    return traces


def is_refusal(text: str, markers: Sequence[str]) -> bool:
    """Keyword judge: any refusal marker in the answer (case-insensitive)."""
    low = text.lower()
    return any(m.lower() in low for m in markers)


# ---- flips ----------------------------------------------------------------------------------
def first_run(mask: torch.Tensor, length: int, start: int = 0) -> int | None:
    """Index where the first run of `length` consecutive True values at or after `start`
    begins, or None."""
    run = 0
    for i in range(start, len(mask)):
        run = run + 1 if bool(mask[i]) else 0
        if run >= length:
            return i - length + 1
    return None


def flip_stats(series: Sequence[torch.Tensor], min_steps: int = 2) -> dict[str, float]:
    """Per-answer projection series at one layer -> flip summary.

    start/end: mean projection at the prompt end and at the last tracked step. A flip is a
    series that starts on the refusing side (> 0) and later stays on the fulfilling side
    (< 0) for `min_steps` consecutive steps; flip_back_rate is the share of flipped series
    that afterwards stay > 0 for `min_steps` steps again (runs, so one noisy step is no flip).
    """
    n = len(series)
    if n == 0:
        return {}
    flipped = back = 0
    for s in series:
        if s[0] > 0:
            first = first_run(s < 0, min_steps, start=1)
            if first is not None:
                flipped += 1
                back += int(first_run(s > 0, min_steps, start=first + min_steps) is not None)
    return {
        "proj_start": float(torch.stack([s[0] for s in series]).mean()),
        "proj_end": float(torch.stack([s[-1] for s in series]).mean()),
        "proj_min": float(torch.stack([s.min() for s in series]).mean()),
        "refusing_at_start": sum(float(s[0] > 0) for s in series) / n,
        "refusing_at_end": sum(float(s[-1] > 0) for s in series) / n,
        "flip_rate": flipped / n,
        "flip_back_rate": back / flipped if flipped else float("nan"),
    }


# ---- stage part -----------------------------------------------------------------------------
def tracked_roles(cfg: DictConfig) -> list[str]:
    """Which of aligned/reference the direction tracking runs on."""
    roles = cfg.direction.get("models", ["aligned"])
    roles = [roles] if isinstance(roles, str) else list(roles)
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise SsahError(f"direction.models={roles} has {bad}; use a subset of {list(ROLES)}.")
    return roles


def _prompts(tok, rows, system_prompt):  # noqa: ANN001, ANN202
    return [encode_prompt(tok, r["prompt"], system_prompt) for r in rows]


def _answer(tok: PreTrainedTokenizerBase, tr: Trace) -> str:
    ids = [t for t in tr.tokens if t != tok.eos_token_id]
    return tok.decode(ids, skip_special_tokens=True)


def fit_direction(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: DictConfig
) -> tuple[Direction, dict[str, float], torch.Tensor, torch.Tensor]:
    """Estimate the direction from harmful + benign prompts (labels by behaviour or source)."""
    from ssah.analysis.probe import load_prompts

    e = cfg.direction.estimate
    harm = load_prompts(str(e.harmful), e.prompt_field, e.limit)
    benign = load_prompts(str(e.benign), e.prompt_field, e.limit)
    rows = harm + benign
    if e.labels not in ("behaviour", "source"):
        raise SsahError(f"direction.estimate.labels={e.labels!r}; use behaviour or source.")
    position = e.get("position", "answer")
    if position not in ("prompt_end", "answer"):
        raise SsahError(f"direction.estimate.position={position!r}; use prompt_end or answer.")
    answers_needed = e.labels == "behaviour" or position == "answer"
    traces = greedy(
        model,
        _prompts(tok, rows, cfg.system_prompt),
        None,
        int(e.max_new_tokens) if answers_needed else 1,
        tok.eos_token_id,
        tok.pad_token_id or 0,
        None,
        int(cfg.batch_size),
    )
    key = "prompt_state" if position == "prompt_end" else "answer_state"
    states = torch.stack([getattr(t, key) for t in traces])
    source = torch.tensor([True] * len(harm) + [False] * len(benign))
    refused, used_behaviour = source, 0.0
    if e.labels == "behaviour":
        judged = torch.tensor(
            [is_refusal(_answer(tok, t), cfg.direction.refusal_markers) for t in traces]
        )
        if min(int(judged.sum()), int((~judged).sum())) >= int(e.min_group):
            refused, used_behaviour = judged, 1.0
    info = {
        "behaviour_labels": used_behaviour,
        "n_refused": float(refused.sum()),
        "n_fulfilled": float((~refused).sum()),
    }
    return estimate(states[refused], states[~refused]), info, states[refused], states[~refused]


def scenarios(tok: PreTrainedTokenizerBase, cfg: DictConfig) -> dict[str, tuple[list, list]]:
    """name -> (prompt ids, forced ids): plain, prefill attack, each jailbreak wrapper."""
    from ssah.analysis.probe import fill, load_prompts

    d = cfg.direction
    harm = load_prompts(str(d.harmful_eval), "prompt", d.limit)
    plain = _prompts(tok, harm, cfg.system_prompt)
    n = None if d.prefill_tokens is None else int(d.prefill_tokens)
    pre = [
        tok(fill(d.prefill, r, "direction.prefill"), add_special_tokens=False)["input_ids"][:n]
        for r in harm
    ]
    if not all(pre):
        raise SsahError(f"direction.prefill={d.prefill!r} gives no tokens; give text to force.")
    out = {"plain": (plain, [[] for _ in plain]), "prefill": (plain, pre)}
    if d.jailbreak_eval:
        groups: dict[str, list] = defaultdict(list)
        for r in load_prompts(str(d.jailbreak_eval), "prompt", None):
            name = f"jailbreak_{r[d.wrapper_field]}" if d.wrapper_field else "jailbreak"
            if len(groups[name]) < int(d.limit):
                groups[name].append(r)
        for name in sorted(groups):
            ids = _prompts(tok, groups[name], cfg.system_prompt)
            out[name] = (ids, [[] for _ in ids])
    return out


def track_model(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    cfg: DictConfig,
    label: str,
    out_dir: Path,
) -> dict[str, float]:
    """Fit the direction, run every scenario, write plots/CSV/samples; metrics under
    probe/direction/<label>/."""
    d = cfg.direction
    direction, info, ref_states, ful_states = fit_direction(model, tok, cfg)
    sep = separability(direction, ref_states, ful_states)
    layer = pick_layer(d.layer, sep["dprime"])
    p = f"probe/direction/{label}"
    metrics = {f"{p}/{k}": v for k, v in info.items()}
    metrics[f"{p}/layer"] = float(layer)
    metrics[f"{p}/dprime"] = float(sep["dprime"][layer])
    metrics[f"{p}/accuracy"] = float(sep["accuracy"][layer])
    runs: dict[str, list[Trace]] = {}
    samples = []
    for name, (prompts, forced) in scenarios(tok, cfg).items():
        traces = greedy(
            model,
            prompts,
            forced,
            int(d.max_new_tokens),
            tok.eos_token_id,
            tok.pad_token_id or 0,
            direction,
            int(cfg.batch_size),
        )
        runs[name] = traces
        answers = [_answer(tok, t) for t in traces]
        refusals = [is_refusal(a, d.refusal_markers) for a in answers]
        for t, r in zip(traces, refusals, strict=True):
            t.refused = r
        stats = flip_stats([t.proj[:, layer] for t in traces], int(d.flip_min_steps))
        stats["refusal_rate"] = sum(refusals) / len(refusals)
        metrics.update({f"{p}/{name}/{k}": v for k, v in stats.items()})
        samples += [
            {
                "scenario": name,
                "answer": a,
                "refusal": r,
                "n_forced": t.n_forced,
                "proj": [round(float(x), 3) for x in t.proj[:, layer]],
            }
            for a, r, t in zip(answers, refusals, traces, strict=True)
        ]
    import json

    atomic_write_text(
        out_dir / f"direction_{label}_samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples)
    )
    write_tracks_csv(runs, label, out_dir / f"direction_{label}_tracks.csv")
    n_layers = direction.unit.shape[0]
    plot_tracks(
        runs,
        plot_layer_set(layer, n_layers, int(d.plot_layers)),
        label,
        out_dir / f"direction_{label}.png",
    )
    plot_rows(runs, layer, label, out_dir / f"direction_{label}_rows.png")
    return metrics


def mean_track(traces: Sequence[Trace], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean projection per step over the answers still running, and how many there are."""
    steps = max(len(t.proj) for t in traces)
    total, count = torch.zeros(steps), torch.zeros(steps)
    for t in traces:
        total[: len(t.proj)] += t.proj[:, layer]
        count[: len(t.proj)] += 1
    return total / count.clamp_min(1), count


def plot_layer_set(layer: int, n_layers: int, n: int) -> list[int]:
    """`n` evenly spaced layers, always including the summary layer."""
    grid = torch.linspace(0, n_layers - 1, max(1, min(n, n_layers))).round().long().tolist()
    if layer not in grid:
        grid[min(range(len(grid)), key=lambda i: abs(grid[i] - layer))] = layer
    return sorted(set(grid))


def write_tracks_csv(runs: dict[str, list[Trace]], label: str, path: Path) -> None:
    lines = ["model,scenario,layer,step,mean_projection,n"]
    n_layers = next(iter(runs.values()))[0].proj.shape[1]
    for name, traces in runs.items():
        for layer in range(n_layers):
            mean, count = mean_track(traces, layer)
            lines += [
                f"{label},{name},{layer},{s},{mean[s]:.5g},{int(count[s])}"
                for s in range(len(mean))
            ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _guides(ax, traces: Sequence[Trace]) -> None:  # noqa: ANN001
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="tab:green", lw=0.6, ls=":")
    ax.axhline(-1, color="tab:red", lw=0.6, ls=":")
    n_forced = max(t.n_forced for t in traces)
    if n_forced:
        ax.axvline(n_forced, color="gray", lw=0.8, ls="--")


def plot_tracks(runs: dict[str, list[Trace]], layers: list[int], label: str, path: Path) -> Path:
    """Mean projection per generation step, one panel per layer, one line per scenario
    (drawn while at least a quarter of the scenario's answers are still running)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.4), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for name, traces in runs.items():
            mean, count = mean_track(traces, layer)
            mean[count < max(2, len(traces) / 4)] = float("nan")  # too few answers still running
            ax.plot(range(len(mean)), mean, label=name, lw=1.4 if name != "plain" else 2.2)
        _guides(ax, runs.get("prefill") or next(iter(runs.values())))
        ax.set_title(f"{label}, layer {layer}", fontsize=9)
        ax.set_xlabel("generation step (0 = last prompt token)")
    axes[0, 0].set_ylabel("projection (+1 refused, -1 fulfilled)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(
        "Refuse-vs-fulfil direction during generation "
        "(dashed: first free step after the forced prefill)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rows(runs: dict[str, list[Trace]], layer: int, label: str, path: Path) -> Path:
    """Every answer's projection at the summary layer, one panel per scenario."""
    plt = _plt()
    names = list(runs)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True
    )
    for ax, name in zip(axes.flat, names, strict=False):
        for t in runs[name]:
            color = {True: "tab:green", False: "tab:red"}.get(t.refused, "tab:blue")
            ax.plot(range(len(t.proj)), t.proj[:, layer], lw=0.7, alpha=0.5, color=color)
        _guides(ax, runs[name])
        ax.set_title(f"{name}", fontsize=9)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"{label}, layer {layer}: every answer's projection per step "
        "(green: answer judged a refusal, red: not)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
