"""Defended generation: HF `generate` (KV cache, left-padded batches) with the monitor's hooks
and the action it triggers. Same signature and output as ssah.eval.generation.generate_ids.

Actions (conf/defence/*.yaml `action`):
  stop       the row ends at the trigger; its answer becomes the model's own refusal
  backtrack  the row ends at the trigger, is cut back to the last token before the drift (the
             start of the run of below-threshold scores, minus the token that led into it) and
             resumed with the direction added; a drift after `max_backtracks` ends in `stop`
  steer      from the step after the trigger, the direction is added for the rest of the answer
  steer_stop steer at the first drift; a second drift (the running score, restarted `grace` steps
             after the first, falls below the threshold again) ends in `stop`
  always     the direction is added from the first token, no monitor (activation addition)
  observe    scores only (what the monitor costs)
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ssah.defence.monitor import Monitor, Probe
from ssah.eval.generation import (
    _NO_MODEL_DEFAULTS,
    Generation,
    _finish,
    _left_pad,
    batches,
    current_label,
    generation_config,
    stop_ids,
)


class _MonitorStop(StoppingCriteria):
    """Rows whose monitor fired are done (HF pads them while the rest of the batch runs)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.monitor.stopped().to(input_ids.device)


@dataclass
class RowInfo:
    """What the defence did to one answer (kept for tests and the defence's metrics)."""

    triggered_at: int | None = None  # step of the first trigger (None: never)
    action: str = "none"  # none | stop | backtrack | backtrack+stop | steer | steer+stop
    kept: int | None = None  # backtrack: tokens kept before resuming
    tokens: int = 0  # tokens generated, discarded ones included
    scores: torch.Tensor | None = None  # [steps, k] first pass, valid steps only
    second_at: int | None = None  # steer_stop: step of the second drift


STOPPED = ("stop", "backtrack+stop", "steer+stop")  # RowInfo.action of an answer that was stopped


@dataclass
class Stats:
    answers: int = 0
    triggered: int = 0
    stopped: int = 0
    backtracked: int = 0
    steered: int = 0
    tokens: int = 0
    seconds: float = 0.0
    rows: list[RowInfo] = field(default_factory=list)
    # label of what was generated (eval.generation.labelled: a suite, benign, utility) ->
    # (triggered, stopped) of each answer in prompt order: what the monitor fires on, per prompt
    by_label: dict[str, list[tuple[bool, bool]]] = field(default_factory=dict)


class DefendedGenerator:
    """Routes `generate_ids(model, ...)` through the monitor and its action."""

    def __init__(
        self,
        model: PreTrainedModel,
        tok: PreTrainedTokenizerBase,
        probe: Probe,
        action: str,
        alpha: float,
        refusal: str,
        max_backtracks: int = 1,
        keep_rows: bool = False,
        grace: int = 2,
    ) -> None:
        self.model, self.tok, self.probe, self.action = model, tok, probe, action
        self.monitor = Monitor(model, probe, alpha, grace)
        self.refusal_ids = tok(refusal, add_special_tokens=False)["input_ids"]
        self.refusal = Generation(self.refusal_ids, refusal, True)
        self.max_backtracks = max_backtracks
        self.keep_rows = keep_rows
        self.stats = Stats()

    # same keywords as generate_ids
    def __call__(
        self,
        rows: list[list[int]],
        max_new_tokens: int = 64,
        batch_size: int = 32,
        do_sample: bool = False,
        seed: int = 0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
    ) -> list[Generation]:
        t0 = time.perf_counter()
        model, tok = self.model, self.tok
        gen_cfg = generation_config(
            model, tok, max_new_tokens, min_new_tokens, do_sample, temperature, top_p
        )
        self._stops = stop_ids(model, tok)
        self._pad = int(gen_cfg.pad_token_id)
        out: list[Generation | None] = [None] * len(rows)
        infos: list[RowInfo | None] = [None] * len(rows)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                with self.monitor.attached():
                    for b, idx in enumerate(batches([len(r) for r in rows], batch_size)):
                        if do_sample:
                            torch.manual_seed(seed + b)
                        gens, inf = self._batch([rows[i] for i in idx], gen_cfg, max_new_tokens)
                        for i, g, f in zip(idx, gens, inf, strict=True):
                            out[i], infos[i] = g, f
        finally:
            model.train(was_training)
        self._account(infos, time.perf_counter() - t0)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def _generate(
        self, rows: list[list[int]], gen_cfg: Any, steer_all: bool, armed: bool
    ) -> tuple[list[list[int]], list[int], list[torch.Tensor], list[int]]:
        """One HF `generate` call: new tokens, trigger steps (-1: none), per-row scores and
        second-drift steps (steer_stop; -1: none)."""
        mon = self.monitor
        mon.start(len(rows), steer_all=steer_all, armed=armed)
        mon.steer_on_trigger = self.action in ("steer", "steer_stop")
        mon.stop_on_second = self.action == "steer_stop"
        ids, mask = _left_pad(rows, self._pad)
        device = next(self.model.parameters()).device
        crit = (
            StoppingCriteriaList([_MonitorStop(mon)])
            if self.action in ("stop", "backtrack", "steer_stop")
            else None
        )
        seqs = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=gen_cfg,
            stopping_criteria=crit,
            **_NO_MODEL_DEFAULTS,
        )
        new = seqs[:, ids.shape[1] :].tolist()
        steps = mon.scores
        toks, trig, scores, second = [], [], [], []
        for i, row in enumerate(new):
            n = self._length(row)
            t = int(mon.triggered_at[i])
            t = t if 0 <= t < n else -1
            t2 = int(mon.second_at[i])
            t2 = t2 if 0 <= t2 < n else -1
            end = t2 if mon.stop_on_second else t
            if crit is not None and end >= 0:
                n = end + 1  # the row ended at its (second) trigger; HF padded it after that
            toks.append(row[:n])
            trig.append(t)
            scores.append(steps[i][:n])
            second.append(t2)
        return toks, trig, scores, second

    def _length(self, row: list[int]) -> int:
        """Tokens the row really generated: up to and including its first stop token."""
        cut = next((k for k, t in enumerate(row) if t in self._stops), None)
        return len(row) if cut is None else cut + 1

    def _batch(
        self, rows: list[list[int]], gen_cfg: Any, max_new: int
    ) -> tuple[list[Generation], list[RowInfo]]:
        act = self.action
        toks, trig, scores, second = self._generate(
            rows, gen_cfg, steer_all=act == "always", armed=act not in ("always", "observe")
        )
        gens = [_finish(self.tok, t, self._stops) for t in toks]
        infos = [
            RowInfo(None if t < 0 else t, "none", None, len(x), s)
            for t, x, s in zip(trig, toks, scores, strict=True)
        ]
        hit = [i for i, t in enumerate(trig) if t >= 0]
        if act in ("steer", "steer_stop"):
            for i in hit:
                infos[i].action = "steer"
            for i in (i for i in hit if second[i] >= 0):
                gens[i], infos[i].action, infos[i].second_at = self.refusal, "steer+stop", second[i]
        elif act == "stop" or (act == "backtrack" and self.max_backtracks == 0):
            for i in hit:
                gens[i], infos[i].action = self.refusal, "stop"
        elif act == "backtrack" and hit:
            self._backtrack(rows, toks, trig, scores, hit, gens, infos, gen_cfg, max_new)
        return gens, infos

    def _drift_start(self, scores: torch.Tensor, trigger: int) -> int:
        """Tokens to keep: those before the token that led into the below-threshold run."""
        s = scores.mean(-1)
        d = trigger
        while d > 0 and float(s[d - 1]) < self.probe.threshold:
            d -= 1
        return max(d - 1, 0)

    def _backtrack(self, rows, toks, trig, scores, hit, gens, infos, gen_cfg, max_new) -> None:  # noqa: ANN001, PLR0913
        keep = {i: self._drift_start(scores[i], trig[i]) for i in hit}
        for i in hit:
            infos[i].action, infos[i].kept = "backtrack", keep[i]
        todo = list(hit)
        for rnd in range(self.max_backtracks):
            if not todo:
                return
            last = rnd == self.max_backtracks - 1
            cfg2 = copy.deepcopy(gen_cfg)
            cfg2.max_new_tokens = max_new - min(keep[i] for i in todo)
            cfg2.min_new_tokens = None
            prefixes = [rows[i] + toks[i][: keep[i]] for i in todo]
            new, trig2, sc2, _ = self._generate(prefixes, cfg2, steer_all=True, armed=True)
            nxt = []
            for i, n_toks, t2, s2 in zip(todo, new, trig2, sc2, strict=True):
                n_toks = n_toks[: max_new - keep[i]]
                infos[i].tokens += len(n_toks)
                toks[i] = toks[i][: keep[i]] + n_toks
                gens[i] = _finish(self.tok, toks[i], self._stops)
                if 0 <= t2 < len(n_toks):  # drifted again, even with the direction added
                    if last:
                        gens[i], infos[i].action = self.refusal, "backtrack+stop"
                    else:
                        keep[i] += self._drift_start(s2, t2)
                        nxt.append(i)
            todo = nxt

    def _account(self, infos: list[RowInfo], seconds: float) -> None:
        st = self.stats
        st.answers += len(infos)
        st.seconds += seconds
        name = current_label()
        label = st.by_label.setdefault(name, []) if name else None
        for f in infos:
            fired, stopped = f.triggered_at is not None, f.action in STOPPED
            st.triggered += fired
            st.stopped += stopped
            if label is not None:
                label.append((fired, stopped))
            st.backtracked += f.action.startswith("backtrack")
            st.steered += f.action.startswith("steer")
            st.tokens += f.tokens
        if self.keep_rows:
            st.rows.extend(infos)

    def metrics(self, prefix: str = "defence") -> dict[str, float]:
        """defence/<...>: trigger and action rates over every answer it generated."""
        st = self.stats
        n = max(st.answers, 1)
        return {
            f"{prefix}/answers": float(st.answers),
            f"{prefix}/trigger_rate": st.triggered / n,
            f"{prefix}/stop_rate": st.stopped / n,
            f"{prefix}/backtrack_rate": st.backtracked / n,
            f"{prefix}/steer_rate": st.steered / n,
            f"{prefix}/tokens_per_answer": st.tokens / n,
            f"{prefix}/generate_s": st.seconds,
            **{
                f"{prefix}/{what}/{label}": v
                for label, rows in sorted(st.by_label.items())
                for what, v in (
                    ("answers", float(len(rows))),
                    ("trigger_rate", sum(f for f, _ in rows) / max(len(rows), 1)),
                    ("stop_rate", sum(s for _, s in rows) / max(len(rows), 1)),
                )
            },
        }
