"""The monitor: at every forward of a generation, project the residual stream of the chosen
blocks onto the refuse-minus-fulfil direction and keep a running score per row.

Why forward hooks: they see exactly the states HF `generate` computes under its KV cache
(the prompt pass, then one token per step), so the monitor costs one dot product per chosen
layer per token and needs no second forward. Step t's state is the one whose logits give
generated token t (t = 0: the last input position). The same hooks add the direction for
rows being steered, at the last position only (the token being generated). A block's score is
read before its own addition: while steered, the monitor still sees whether the model itself
keeps drifting (so a backtracked answer that drifts again ends in a refusal). For `steer_stop`
the hooks also keep a second running score, restarted `grace` steps after the first trigger (the
steered tokens need a step to reach the monitored states), whose fall below the threshold is
the second drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ssah.analysis.direction import Direction
from ssah.errors import SsahError
from ssah.units import ModuleNames


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks (Llama, Mistral, Qwen2, ... names in ssah.units)."""
    layers = model.get_submodule(ModuleNames.for_model(model).layers)
    assert isinstance(layers, nn.ModuleList)
    return layers


@dataclass
class Probe:
    """The direction at the monitored blocks and the trigger rule calibrated for it.

    Scores are Direction.project's scale: +1 at the refusing mean, -1 at the fulfilling mean,
    averaged over the monitored blocks; a row triggers when its running score falls below
    `threshold`."""

    layers: list[int]
    refuse_mean: torch.Tensor  # [k, hidden]
    fulfil_mean: torch.Tensor  # [k, hidden]
    threshold: float
    smoothing: float = 0.5
    first_token_only: bool = False

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.refuse_mean) or len(self.layers) != len(self.fulfil_mean):
            raise SsahError("defence probe: one mean per monitored layer is needed.")
        self.direction = Direction(self.refuse_mean.float(), self.fulfil_mean.float())

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """States [..., k, hidden] -> per-layer scores [..., k]."""
        return self.direction.project(states)

    def running(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-step scores [steps] (already averaged over layers) -> running score [steps]."""
        out = torch.empty_like(scores)
        r = scores[0]
        for t in range(len(scores)):
            r = scores[t] if t == 0 else self.smoothing * r + (1 - self.smoothing) * scores[t]
            out[t] = r
        return out

    def trigger_step(self, scores: torch.Tensor) -> int | None:
        """First step whose running score is below the threshold (None: no drift)."""
        if len(scores) == 0:
            return None
        run = self.running(scores)
        if self.first_token_only:
            run = run[:1]
        below = (run < self.threshold).nonzero()
        return int(below[0]) if len(below) else None


class Monitor:
    """Forward hooks on the probe's blocks: per-row scores, triggers and steering.

    `start(batch)` before each `generate` call; after it, `scores[i]` holds row i's per-step,
    per-layer projections and `triggered_at[i]` the step its running score first fell below
    the threshold (-1: never)."""

    def __init__(self, model: nn.Module, probe: Probe, alpha: float = 0.0, grace: int = 2) -> None:
        n = len(decoder_layers(model))
        bad = [i for i in probe.layers if not 0 <= i < n]
        if bad:
            raise SsahError(f"defence.monitor.layers has {bad}; the model has blocks 0..{n - 1}.")
        self.model, self.probe = model, probe
        device = next(model.parameters()).device
        self.dir = probe.direction.to(device)
        self.vec = alpha * (probe.refuse_mean - probe.fulfil_mean).float().to(device)  # [k, H]
        self.order = sorted(range(len(probe.layers)), key=lambda j: probe.layers[j])
        self.grace = grace
        self.start(0)

    def start(self, batch: int, steer_all: bool = False, armed: bool = True) -> None:
        """Reset for a new `generate` call of `batch` rows (steer_all: steer from step 0)."""
        self.step = 0
        self.armed = armed  # False: score only, never trigger
        self.steps: list[torch.Tensor] = []  # per step: [batch, k]
        self._cur: list[torch.Tensor | None] = [None] * len(self.probe.layers)
        self.run = torch.zeros(batch)
        self.triggered_at = torch.full((batch,), -1, dtype=torch.long)
        self.steering = torch.full((batch,), bool(steer_all))
        self.steer_on_trigger = False
        self.stop_on_second = False  # steer_stop: a second drift ends the row
        self.run2 = torch.zeros(batch)
        self.second_at = torch.full((batch,), -1, dtype=torch.long)

    @property
    def scores(self) -> list[torch.Tensor]:
        """Row i's per-step, per-layer projections [steps, k] (all steps run, padded ones too)."""
        if not self.steps:
            return [torch.zeros(0, len(self.probe.layers)) for _ in range(len(self.run))]
        return list(torch.stack(self.steps, 1))

    def stopped(self) -> torch.Tensor:
        """Rows whose monitor has fired (HF StoppingCriteria: True = this row is done)."""
        return (self.second_at if self.stop_on_second else self.triggered_at) >= 0

    @contextmanager
    def attached(self) -> Iterator[Monitor]:
        layers = decoder_layers(self.model)
        handles = [
            layers[layer].register_forward_hook(self._hook(j))
            for j, layer in enumerate(self.probe.layers)
        ]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, j: int):  # noqa: ANN202
        last_j = self.order[-1]

        def fn(module: nn.Module, args: tuple, out: torch.Tensor | tuple) -> torch.Tensor | tuple:
            h = out[0] if isinstance(out, tuple) else out
            d = self.dir
            last = h[:, -1, :].float()  # read before this block's own addition
            self._cur[j] = (((last - d.mid[j]) * d.unit[j]).sum(-1) / d.half[j]).cpu()
            if bool(self.steering.any()):
                mask = self.steering.to(h.device, h.dtype)[:, None]
                h = h.clone()
                h[:, -1, :] = h[:, -1, :] + mask * self.vec[j].to(h.dtype)
                out = (h, *out[1:]) if isinstance(out, tuple) else h
            if j == last_j:
                self._end_step()
            return out

        return fn

    def _end_step(self) -> None:
        per_layer = torch.stack([c for c in self._cur if c is not None], -1)  # [B, k]
        self.steps.append(per_layer)
        s = per_layer.mean(-1)
        b = self.probe.smoothing
        self.run = s if self.step == 0 else b * self.run + (1 - b) * s
        can = self.armed and (self.step == 0 or not self.probe.first_token_only)
        if can:
            new = (self.run < self.probe.threshold) & (self.triggered_at < 0)
            self.triggered_at[new] = self.step
            if self.steer_on_trigger:
                self.steering |= new
        if self.stop_on_second:
            self._second(s)
        self.step += 1

    def _second(self, s: torch.Tensor) -> None:
        """The running score restarted `grace` steps after the first trigger; its fall below
        the threshold is the second drift."""
        start = self.triggered_at + self.grace
        live = (self.triggered_at >= 0) & (self.step >= start) & (self.second_at < 0)
        b = self.probe.smoothing
        self.run2 = torch.where(self.step == start, s, b * self.run2 + (1 - b) * s)
        self.second_at[live & (self.run2 < self.probe.threshold)] = self.step
