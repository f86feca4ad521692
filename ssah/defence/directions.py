"""Direction candidates for the monitor, fitted on validation answers only.

Why several: the first direction (difference of means of refusals and forced compliances)
separated harmful-sounding from everyday requests more than complying from refusing
(experiments/defence/README.md). Each candidate is fitted from per-answer mean states
[n, layers, hidden] and returned as a (safe mean, complying mean) pair per layer, so the
monitor projects and steers every candidate the same way (ssah.analysis.direction.Direction):
  mean_diff      mean of the safe side minus mean of the complying side
  matched_pairs  the same, over harmful requests that have both a refusal and a complying
                 answer only, so the request's topic cancels out of the difference
  probe          per-layer logistic regression (safe = 1, complying = 0); its weight vector
                 is the direction, the class means projected on it the scale
The contrast says what else counts as safe: nothing (`refuse`), every benign validation
answer (`refuse_benign`) or the look-alikes' answers (`refuse_lookalike`, harmful-sounding
requests answered normally, the case the monitor must not fire on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssah.defence.config import CONTRASTS, DIRECTIONS


@dataclass
class Side:
    """Per-answer mean states [n, L, H] and the harmful request each answers (-1: benign)."""

    states: torch.Tensor
    request: list[int]

    def __len__(self) -> int:
        return len(self.request)


@dataclass
class Candidate:
    """One fitted direction: per-layer safe and complying means; `weights`/`bias` [L, H]/[L]
    are the probe's own linear score (None for the mean directions)."""

    safe: torch.Tensor
    fulfil: torch.Tensor
    weights: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def _mean(*groups: torch.Tensor) -> torch.Tensor:
    """Mean of the groups' means (each group weighs the same, whatever its size)."""
    return torch.stack([g.float().mean(0) for g in groups]).mean(0)


def _paired(refuse: Side, fulfil: Side) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-request means [p, L, H] of both sides over requests that have both (None: none)."""
    both = sorted(set(refuse.request) & set(fulfil.request))
    if not both:
        return None

    def per_request(side: Side) -> torch.Tensor:
        idx = torch.tensor(side.request)
        return torch.stack([side.states[idx == r].float().mean(0) for r in both])

    return per_request(refuse), per_request(fulfil)


def logistic(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, l2: float, iters: int = 100
) -> tuple[torch.Tensor, float]:
    """Weighted L2 logistic regression by full-batch L-BFGS from zero (deterministic):
    x [n, H], y [n] in {0, 1} -> (w [H], b) on x's own scale. Safe to call under
    torch.inference_mode (the fit runs with autograd on copies)."""
    with torch.inference_mode(False), torch.enable_grad():
        x64, y64 = x.detach().double().clone(), y.detach().double().clone()
        w64 = weight.detach().double().clone()
        w64 = w64 / w64.sum()
        mu = (w64[:, None] * x64).sum(0)
        scale = float(((x64 - mu) ** 2).sum(-1).mean().sqrt().clamp_min(1e-12))
        k = x64.shape[1] ** 0.5 / scale  # features of unit RMS
        xs = (x64 - mu) * k
        theta = torch.zeros(x64.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [theta], lr=1.0, max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-14,
            line_search_fn="strong_wolfe",
        )  # fmt: skip

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = xs @ theta[:-1] + theta[-1]
            loss = (w64 * F.binary_cross_entropy_with_logits(z, y64, reduction="none")).sum()
            loss = loss + l2 * theta[:-1].pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        t = theta.detach()
    w = t[:-1] * k
    return w.float(), float(t[-1] - (w * mu).sum())


def _probe(safe: list[torch.Tensor], fulfil: torch.Tensor, l2: float) -> Candidate:
    """Per-layer logistic probe; the safe groups share class 1's weight equally."""
    x = torch.cat([*safe, fulfil]).float()
    y = torch.cat([torch.ones(sum(len(s) for s in safe)), torch.zeros(len(fulfil))])
    weight = torch.cat(
        [torch.full((len(s),), 0.5 / (len(s) * len(safe))) for s in safe]
        + [torch.full((len(fulfil),), 0.5 / len(fulfil))]
    )
    ws, bs, hi, lo = [], [], [], []
    for layer in range(x.shape[1]):
        w, b = logistic(x[:, layer], y, weight, l2)
        unit = w / w.norm().clamp_min(1e-12)
        ws.append(w)
        bs.append(b)
        a = float(_mean(*[s[:, layer] for s in safe]) @ unit)
        c = float(fulfil[:, layer].float().mean(0) @ unit)
        mid, half = (a + c) / 2, max(abs(a - c) / 2, 1e-6)  # keep w's orientation: safe is up
        hi.append(unit * (mid + half))
        lo.append(unit * (mid - half))
    return Candidate(torch.stack(hi), torch.stack(lo), torch.stack(ws), torch.tensor(bs))


def fit(
    direction: str,
    refuse: Side,
    fulfil: Side,
    extra: torch.Tensor | None,
    l2: float = 1e-3,
) -> Candidate:
    """One candidate; `extra` [m, L, H] are the contrast's further safe answers (or None)."""
    if direction == "matched_pairs":
        pairs = _paired(refuse, fulfil)
        ref, ful = pairs if pairs is not None else (refuse.states, fulfil.states)
    else:
        ref, ful = refuse.states, fulfil.states
    safe = [ref] if extra is None or len(extra) == 0 else [ref, extra]
    if direction == "probe":
        return _probe(safe, ful, l2)
    return Candidate(_mean(*safe), ful.float().mean(0))


def fit_all(
    refuse: Side, fulfil: Side, extras: dict[str, torch.Tensor | None], l2: float
) -> dict[str, Candidate]:
    """Every direction x contrast with its safe extras (`extras[contrast]`; a contrast whose
    extras are missing, e.g. no look-alikes in the set, is left out)."""
    out = {}
    for contrast in CONTRASTS:
        if contrast != "refuse" and (extras.get(contrast) is None):
            continue
        for direction in DIRECTIONS:
            out[f"{direction}/{contrast}"] = fit(
                direction, refuse, fulfil, extras.get(contrast), l2
            )
    return out
