"""Streaming per-channel statistics of linear-layer inputs, collected with forward hooks.

One forward pass per batch; only response-token positions (labels != -100) are counted.
Each batch's mean and centred sum of squares are merged into float64 running values with
Chan et al.'s parallel update, so extra memory is O(channels), never O(tokens x channels).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ssah.data.chat import IGNORE
from ssah.units import UnitIndex


class StreamStats:
    """Count, mean and M2 (sum of squared deviations) per channel; optional sum of |x|."""

    def __init__(self, channels: int, device: torch.device, track_abs: bool = False) -> None:
        self.n = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)
        self.abs_sum = (
            torch.zeros(channels, dtype=torch.float64, device=device) if track_abs else None
        )

    def update(self, x: torch.Tensor) -> None:
        """Merge rows x [n, channels]: exact batch mean and M2 in float64, then Chan et al.'s
        pairwise update (few fused in-place ops: this runs inside every forward hook)."""
        nb = x.shape[0]
        if nb == 0:
            return
        xd = x.to(torch.float64)
        if self.abs_sum is not None:
            self.abs_sum += xd.abs().sum(dim=0)
        mean_b = xd.sum(dim=0).div_(nb)
        xd.sub_(mean_b)
        m2_b = torch.linalg.vecdot(xd, xd, dim=0)
        if self.n == 0:
            self.mean.copy_(mean_b)
            self.m2.copy_(m2_b)
            self.n = nb
            return
        tot = self.n + nb
        delta = mean_b.sub_(self.mean)
        self.mean.add_(delta, alpha=nb / tot)
        self.m2.add_(m2_b).addcmul_(delta, delta, value=self.n * nb / tot)
        self.n = tot

    def variance(self) -> torch.Tensor:
        """Unbiased sample variance (0 with fewer than two tokens)."""
        if self.n < 2:
            return torch.zeros_like(self.m2)
        return self.m2 / (self.n - 1)

    def sumsq(self) -> torch.Tensor:
        """Sum of x^2 over counted tokens."""
        return self.m2 + self.n * self.mean.square()

    def mean_abs(self) -> torch.Tensor:
        if self.abs_sum is None:
            raise ValueError("created without track_abs")
        return self.abs_sum / max(self.n, 1)


class InputStats:
    """Forward pre-hooks streaming the statistics of the inputs of chosen linears.

    stats[(layer, which)] is a StreamStats for the input of module `which` (e.g. "down_proj").
    """

    def __init__(
        self,
        model: nn.Module,
        index: UnitIndex,
        which: Sequence[str] = ("down_proj", "o_proj"),
        track_abs: bool = False,
    ) -> None:
        self.model = model
        self.index = index
        self.which = tuple(which)
        device = next(model.parameters()).device
        self.stats: dict[tuple[int, str], StreamStats] = {}
        self._mods: dict[tuple[int, str], nn.Module] = {}
        for layer in range(index.num_layers):
            for w in self.which:
                mod = index.module(model, layer, w)
                self._mods[(layer, w)] = mod
                self.stats[(layer, w)] = StreamStats(mod.in_features, device, track_abs)
        self._rows: torch.Tensor | None = None

    def set_labels(self, labels: torch.Tensor) -> None:
        """Rows (flattened batch x position) that count: response tokens."""
        self._rows = (labels.reshape(-1) != IGNORE).nonzero().squeeze(1)

    def _hook(self, key: tuple[int, str]):
        st = self.stats[key]

        def hook(_mod: nn.Module, args: tuple) -> None:
            x = args[0]
            st.update(x.reshape(-1, x.shape[-1]).index_select(0, self._rows))

        return hook

    @contextmanager
    def attached(self):
        """Hooks live only inside this block (removed even on error)."""
        handles = [m.register_forward_pre_hook(self._hook(k)) for k, m in self._mods.items()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


def decoder_of(model: nn.Module, index: UnitIndex) -> nn.Module:
    """The transformer body without the LM head: scoring needs no logits."""
    prefix = index.names.layers.rpartition(".")[0]
    return model.get_submodule(prefix) if prefix else model


@torch.no_grad()
def collect(
    model: nn.Module,
    index: UnitIndex,
    batches: Iterable[dict[str, torch.Tensor]],
    which: Sequence[str] = ("down_proj", "o_proj"),
    track_abs: bool = False,
) -> InputStats:
    """One forward pass of the decoder body per batch with stats hooks attached."""
    stats = InputStats(model, index, which, track_abs)
    body = decoder_of(model, index)
    device = next(model.parameters()).device
    with stats.attached():
        for b in batches:
            stats.set_labels(b["labels"].to(device))
            body(
                input_ids=b["input_ids"].to(device),
                attention_mask=b["attention_mask"].to(device),
                use_cache=False,
            )
    return stats


@torch.no_grad()
def sample_means(
    model: nn.Module,
    index: UnitIndex,
    batches: Iterable[dict[str, torch.Tensor]],
    which: Sequence[str] = ("down_proj", "o_proj"),
) -> dict[tuple[int, str], torch.Tensor]:
    """Mean over samples of each sample's mean input over its response tokens: FLAP's and the
    SSAH authors' `BiasGPT.baseline_inp` (one update per calibration sample), which bias
    compensation uses. Samples without response tokens are skipped."""
    body = decoder_of(model, index)
    device = next(model.parameters()).device
    mods = {(i, w): index.module(model, i, w) for i in range(index.num_layers) for w in which}
    sums = {
        k: torch.zeros(m.in_features, dtype=torch.float64, device=device) for k, m in mods.items()
    }
    state: dict[str, torch.Tensor] = {}

    def hook(key: tuple[int, str]):
        def fn(_m: nn.Module, args: tuple) -> None:
            x = args[0].to(torch.float64)
            w = state["weight"]  # [B, T]: 1 / (response tokens of the row) on response tokens
            sums[key] += torch.einsum("btc,bt->c", x, w)

        return fn

    count = 0
    handles = [m.register_forward_pre_hook(hook(k)) for k, m in mods.items()]
    try:
        for b in batches:
            keep = (b["labels"].to(device) != IGNORE).to(torch.float64)
            n = keep.sum(dim=1, keepdim=True)
            state["weight"] = torch.where(n > 0, keep / n.clamp_min(1), torch.zeros_like(keep))
            count += int((n > 0).sum())
            body(
                input_ids=b["input_ids"].to(device),
                attention_mask=b["attention_mask"].to(device),
                use_cache=False,
            )
    finally:
        for h in handles:
            h.remove()
    return {k: v / max(count, 1) for k, v in sums.items()}


class RunningFluc:
    """FLAP's running `fluc_inp` (the SSAH authors' lib/layerwrapper.py `BiasGPT.add_batch`),
    fed one calibration sample at a time in draw order. With m samples seen before this one:
      mean <- mean * m / (m + 1) + (this sample's token mean) / (m + 1)
      fluc <- 0 for the first sample; else fluc * (m - 1) / m
              + sum over its tokens of (x - new mean)^2 / (m + 1)
    (their `old_baseline_inp` aliases the updated mean, so both factors use the new one).
    Samples without counted tokens are skipped. The estimate is not the sample variance: the
    first sample adds nothing and later ones weigh by their token count and position."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.m = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.fluc = torch.zeros(channels, dtype=torch.float64, device=device)

    def add(self, n_tokens: int, token_mean: torch.Tensor, m2: torch.Tensor) -> None:
        """One sample: its count, mean and centred sum of squares (float64)."""
        m = self.m
        self.mean.mul_(m / (m + 1)).add_(token_mean / (m + 1))
        if m == 0:
            self.fluc.zero_()
        else:
            dev = token_mean - self.mean
            ss = m2 + n_tokens * dev.square()  # sum_t (x_t - new mean)^2
            self.fluc.mul_((m - 1) / m).add_(ss / (m + 1))
        self.m = m + 1


@torch.no_grad()
def running_fluc(
    model: nn.Module,
    index: UnitIndex,
    batches: Iterable[dict[str, torch.Tensor]],
    which: Sequence[str] = ("down_proj", "o_proj"),
) -> dict[tuple[int, str], torch.Tensor]:
    """`RunningFluc` of every input channel of `which`; rows are taken in batch order, so
    give batches unsorted (the draw order, as the authors fed their samples)."""
    body = decoder_of(model, index)
    device = next(model.parameters()).device
    mods = {(i, w): index.module(model, i, w) for i in range(index.num_layers) for w in which}
    est = {k: RunningFluc(m.in_features, device) for k, m in mods.items()}
    state: dict[str, torch.Tensor] = {}

    def hook(key: tuple[int, str]):
        def fn(_m: nn.Module, args: tuple) -> None:
            x = args[0].to(torch.float64)
            keep = state["keep"]  # [B, T] float64, 1 on counted tokens
            n = keep.sum(dim=1)
            mean = torch.einsum("btc,bt->bc", x, keep) / n.clamp_min(1)[:, None]
            d = (x - mean[:, None, :]) * keep[..., None]
            m2 = torch.einsum("btc,btc->bc", d, d)
            for b in range(x.shape[0]):
                if n[b] > 0:
                    est[key].add(int(n[b]), mean[b], m2[b])

        return fn

    handles = [m.register_forward_pre_hook(hook(k)) for k, m in mods.items()]
    try:
        for b in batches:
            state["keep"] = (b["labels"].to(device) != IGNORE).to(torch.float64)
            body(
                input_ids=b["input_ids"].to(device),
                attention_mask=b["attention_mask"].to(device),
                use_cache=False,
            )
    finally:
        for h in handles:
            h.remove()
    return {k: e.fluc for k, e in est.items()}
