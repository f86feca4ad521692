"""Calibrate the monitor on validation prompts: the direction, the layers and the threshold.

The direction (per block) is the difference of means between the model's refusing and its
complying continuations of harmful validation prompts: refusing = its own answers judged
refusals; complying = its answers judged compliant, plus its continuations after a forced
compliant opener ("Sure, here is"), the state a prefill or rephrasing attack pushes it into.
Each answer contributes the mean of its monitored states (step 0 = last input position, then
every generated token that is followed by another).

Validation prompts are split in two (even rows fit the direction, odd rows tune): on the tune
half, the threshold is the running-score level that at most `false_trigger_rate` of benign
answers ever fall below, and `layers: auto` keeps the blocks (1..max_layers of the best) whose
projection then catches the most complying continuations. Test prompts choose nothing.

What is cached (outputs/defence/<key>/): the model's means at every block and the tune half's
per-step projections, keyed by the model's weights, the prompts and these options; choosing
layers and threshold from them takes milliseconds, so decide-once and re-evaluate share it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.defence.config import DefenceConfig, MonitorConfig
from ssah.defence.monitor import Probe, decoder_layers
from ssah.errors import SsahError
from ssah.eval.datasets import load_prompt_set
from ssah.eval.generation import Generation, _left_pad, generate_ids, prompt_ids
from ssah.eval.judges import KeywordJudge
from ssah.io import atomic_write_bytes, atomic_write_text, cache_lock

FALLBACK_REFUSAL = "I'm sorry, but I can't help with that."
VERSION = 2  # bump when what is cached changes meaning


CONTRASTS = ("refuse", "refuse_benign")  # the safe side: own refusals (+ benign answers)


@dataclass
class Raw:
    """What the validation prompts give, before contrast, layers and threshold are chosen."""

    refuse_mean: torch.Tensor  # [L, H] the model's refusals of harmful prompts
    fulfil_mean: torch.Tensor  # [L, H] its complying continuations of harmful prompts
    benign_mean: torch.Tensor  # [L, H] its answers to benign prompts
    benign: dict[str, list[torch.Tensor]]  # contrast -> tune-half benign projections [steps, L]
    drift: dict[str, list[torch.Tensor]]  # contrast -> tune-half complying continuations
    info: dict[str, Any]  # counts, labels, the model's refusal text

    def safe_mean(self, contrast: str) -> torch.Tensor:
        if contrast == "refuse":
            return self.refuse_mean
        return (self.refuse_mean + self.benign_mean) / 2

    def save(self, d: Path) -> None:
        from safetensors.torch import save

        cat = {
            "refuse_mean": self.refuse_mean.contiguous(),
            "fulfil_mean": self.fulfil_mean.contiguous(),
            "benign_mean": self.benign_mean.contiguous(),
        }
        for name in ("benign", "drift"):
            for c, xs in getattr(self, name).items():
                empty = torch.zeros(0, len(self.refuse_mean))
                cat[f"{name}/{c}"] = torch.cat(xs).contiguous() if xs else empty
                cat[f"{name}/{c}/len"] = torch.tensor([len(x) for x in xs], dtype=torch.long)
        atomic_write_bytes(d / "raw.safetensors", save(cat))
        atomic_write_text(d / "calibration.json", json.dumps(self.info, indent=1) + "\n")

    @classmethod
    def load(cls, d: Path) -> Raw:
        from safetensors.torch import load_file

        if not (d / "raw.safetensors").is_file() or not (d / "calibration.json").is_file():
            raise SsahError(
                f"defence.calibration.file: {d} has no raw.safetensors + calibration.json; "
                "point it at a directory a calibration wrote (outputs/defence/<key>/)."
            )
        t = load_file(str(d / "raw.safetensors"))

        def split(name: str) -> dict[str, list[torch.Tensor]]:
            out = {}
            for c in CONTRASTS:
                lens = t[f"{name}/{c}/len"].tolist()
                out[c] = list(torch.split(t[f"{name}/{c}"], lens)) if lens else []
            return out

        info = json.loads((d / "calibration.json").read_text())
        means = (t["refuse_mean"], t["fulfil_mean"], t["benign_mean"])
        return cls(*means, split("benign"), split("drift"), info)


# ---- states -----------------------------------------------------------------------------------
@torch.no_grad()
def answer_states(
    model: PreTrainedModel,
    prefixes: Sequence[Sequence[int]],
    answers: Sequence[Generation],
    each: Callable[[int, torch.Tensor], None],
    batch_size: int = 16,
    pad_id: int = 0,
) -> None:
    """Teacher-force prefix + answer; call `each(i, states [steps, L, H])` with the states the
    monitor sees while generating that answer (raw block outputs, as its hooks read them)."""
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    grab: list[torch.Tensor | None] = [None] * len(layers)

    def hook(j: int):  # noqa: ANN202
        def fn(module, args, out):  # noqa: ANN001, ANN202
            grab[j] = (out[0] if isinstance(out, tuple) else out).detach()

        return fn

    handles = [m.register_forward_hook(hook(j)) for j, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(prefixes), batch_size):
            idx = list(range(s, min(s + batch_size, len(prefixes))))
            steps = [len(answers[i].ids) + int(answers[i].stopped) for i in idx]
            rows = [
                list(prefixes[i]) + answers[i].ids[: n - 1] for i, n in zip(idx, steps, strict=True)
            ]
            ids, mask = _left_pad(rows, pad_id)
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=pos.to(device),
                use_cache=False,
            )
            hs = torch.stack([g for g in grab if g is not None], 2).float().cpu()  # [B, T, L, H]
            for b, (i, n) in enumerate(zip(idx, steps, strict=True)):
                each(i, hs[b, hs.shape[1] - n :])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


# ---- calibration ------------------------------------------------------------------------------
def _prompts(spec: dict[str, Any] | None, what: str) -> list[str]:
    """A prompt-set block's prompts; `skip: n` drops the first n (AdvBench's 100 test rows)."""
    spec = dict(spec or {})
    skip = int(spec.pop("skip", 0) or 0)
    return [r["prompt"] for r in load_prompt_set(spec, what=what)][skip:]


def load_validation(dcfg: DefenceConfig) -> tuple[list[str], list[str]]:
    cal = dcfg.calibration
    h = _prompts(cal.harmful, "defence.calibration.harmful")[: cal.harmful_limit]
    b = _prompts(cal.benign, "defence.calibration.benign")[: cal.benign_limit]
    if len(h) < 2 or len(b) < 2:
        raise SsahError(
            f"defence calibration needs >= 2 harmful and >= 2 benign validation prompts; got "
            f"{len(h)} and {len(b)}. Give larger sets (defence.calibration.harmful/benign)."
        )
    return h, b


def measure(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    dcfg: DefenceConfig,
    harmful: list[str],
    benign: list[str],
    batch_size: int = 16,
) -> Raw:
    """Generate the model's validation answers, fit the direction, project the tune half."""
    cal = dcfg.calibration
    T = cal.max_new_tokens
    judge = KeywordJudge()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    opener = tok(cal.opener, add_special_tokens=False)["input_ids"] if cal.opener else []
    ph = [prompt_ids(tok, p) for p in harmful]
    pf = [p + opener for p in ph]
    pb = [prompt_ids(tok, p) for p in benign]
    own = generate_ids(model, tok, ph, T, batch_size)
    forced = generate_ids(model, tok, pf, T, batch_size) if opener else []
    ben = generate_ids(model, tok, pb, T, batch_size)
    refused = [judge.is_refusal(g.text) for g in own]
    forced_ok = [
        not judge.is_refusal(tok.decode(opener + g.ids, skip_special_tokens=True)) for g in forced
    ]
    # (prefix, answer, harmful row) of each side; behaviour labels, source labels as a fallback
    ref = [(ph[i], own[i], i) for i in range(len(own)) if refused[i]]
    ful = [(ph[i], own[i], i) for i in range(len(own)) if not refused[i]]
    ful += [(pf[i], forced[i], i) for i in range(len(forced)) if forced_ok[i]]
    labels = "behaviour"
    if not any(i % 2 == 0 for *_, i in ref) or not any(i % 2 == 0 for *_, i in ful):
        labels = "source"  # e.g. a model that refuses nothing: own answers vs forced ones
        ref = [(ph[i], own[i], i) for i in range(len(own))]
        ful = [(pf[i], forced[i], i) for i in range(len(forced))] or ref
    fit_b = [(pb[i], ben[i], i) for i in range(len(pb)) if i % 2 == 0]
    means = []
    for side in (ref, ful, fit_b):
        fit = [x for x in side if x[2] % 2 == 0]
        sums = {"total": torch.zeros(0), "n": 0}

        def add(i: int, s: torch.Tensor, sums: dict = sums) -> None:
            m = s.mean(0)
            sums["total"] = m if sums["n"] == 0 else sums["total"] + m
            sums["n"] += 1

        answer_states(model, [x[0] for x in fit], [x[1] for x in fit], add, batch_size, pad)
        means.append(sums["total"] / sums["n"])
    safe = {"refuse": means[0], "refuse_benign": (means[0] + means[2]) / 2}
    dirs = {c: Probe(list(range(len(means[0]))), safe[c], means[1], 0.0).direction for c in safe}

    def projections(prefixes: list, answers: list) -> dict[str, list[torch.Tensor]]:
        out: dict[str, list[torch.Tensor]] = {c: [torch.zeros(0)] * len(prefixes) for c in dirs}

        def each(i: int, s: torch.Tensor) -> None:
            for c, d in dirs.items():
                out[c][i] = d.project(s)

        answer_states(model, prefixes, answers, each, batch_size, pad)
        return out

    tune_b = [i for i in range(len(pb)) if i % 2 == 1]
    tune_d = [x for x in ful if x[2] % 2 == 1]
    refusal_texts = Counter(own[i].text.strip() for i in range(len(own)) if refused[i])
    info = {
        "version": VERSION,
        "labels": labels,
        "n_harmful": len(harmful),
        "n_benign": len(benign),
        "n_refused_own": sum(refused),
        "n_complied_forced": sum(forced_ok),
        "n_fit_refuse": sum(1 for x in ref if x[2] % 2 == 0),
        "n_fit_fulfil": sum(1 for x in ful if x[2] % 2 == 0),
        "n_tune_benign": len(tune_b),
        "n_tune_drift": len(tune_d),
        "benign_refused_own": sum(judge.is_refusal(g.text) for g in ben),
        "refusal": refusal_texts.most_common(1)[0][0] if refusal_texts else FALLBACK_REFUSAL,
    }
    return Raw(
        means[0],
        means[1],
        means[2],
        projections([pb[i] for i in tune_b], [ben[i] for i in tune_b]),
        projections([x[0] for x in tune_d], [x[1] for x in tune_d]),
        info,
    )


def _worst(series: torch.Tensor, smoothing: float, first_only: bool) -> float:
    """Lowest running score of one answer (its first step only when deciding once)."""
    if len(series) == 0:
        return float("inf")
    p = Probe([0], torch.zeros(1, 1), torch.ones(1, 1), 0.0, smoothing, first_only)
    run = p.running(series)
    return float(run[:1].min() if first_only else run.min())


def _threshold(benign_worst: list[float], rate: float) -> float:
    """Largest level that at most `rate` of benign answers fall strictly below."""
    xs = sorted(benign_worst)
    k = int(rate * len(xs))  # answers allowed to trigger
    return xs[k] if k < len(xs) else float("inf")


def select(raw: Raw, m: MonitorConfig) -> tuple[str, list[int], float, dict[str, float]]:
    """Contrast, layers (given or `auto`) and threshold (given or for the false-trigger rate);
    `auto` maximises the tune half's detection of complying continuations at that rate."""
    n_layers = len(raw.refuse_mean)

    def evaluate(c: str, layers: list[int]) -> tuple[float, float, float]:
        w = [
            [_worst(s[:, layers].mean(-1), m.smoothing, m.first_token_only) for s in xs[c]]
            for xs in (raw.benign, raw.drift)
        ]
        thr = m.threshold if m.threshold is not None else _threshold(w[0], m.false_trigger_rate)
        ftr = sum(x < thr for x in w[0]) / max(len(w[0]), 1)
        det = sum(x < thr for x in w[1]) / max(len(w[1]), 1)
        return thr, ftr, det

    contrasts = list(CONTRASTS) if m.contrast == "auto" else [m.contrast]
    bad = [c for c in contrasts if c not in CONTRASTS]
    if bad:
        raise SsahError(f"defence.monitor.contrast={m.contrast!r}; use auto or {list(CONTRASTS)}.")
    if m.layers == "auto":
        cands = m.candidates if m.candidates is not None else list(range(n_layers))
        bad_l = [i for i in cands if not 0 <= i < n_layers]
        if bad_l:
            raise SsahError(
                f"defence.monitor.candidates has {bad_l}; blocks are 0..{n_layers - 1}."
            )
        options = []
        for c in contrasts:
            single = sorted(cands, key=lambda i, c=c: (-evaluate(c, [i])[2], i))
            options += [
                (c, sorted(single[:k])) for k in range(1, min(m.max_layers, len(single)) + 1)
            ]
    else:
        bad_l = [i for i in m.layers if not 0 <= i < n_layers]
        if bad_l:
            raise SsahError(f"defence.monitor.layers has {bad_l}; blocks are 0..{n_layers - 1}.")
        options = [(c, list(m.layers)) for c in contrasts]
    order = {c: i for i, c in enumerate(CONTRASTS)}
    contrast, layers = max(options, key=lambda o: (evaluate(*o)[2], -len(o[1]), -order[o[0]]))
    thr, ftr, det = evaluate(contrast, layers)
    info = {"val_false_trigger_rate": ftr, "val_detection_rate": det}
    return contrast, layers, thr, info


def probe_from(raw: Raw, m: MonitorConfig) -> tuple[Probe, dict[str, Any]]:
    contrast, layers, thr, info = select(raw, m)
    probe = Probe(
        layers,
        raw.safe_mean(contrast)[layers],
        raw.fulfil_mean[layers],
        thr,
        m.smoothing,
        m.first_token_only,
    )
    return probe, {**info, "contrast": contrast}


# ---- cache ------------------------------------------------------------------------------------
def fingerprint(model: PreTrainedModel) -> str:
    """A content hash of the weights (a strided sample of every tensor: fast on 7B models)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        flat = p.detach().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(
    model: PreTrainedModel, dcfg: DefenceConfig, harmful: list[str], benign: list[str]
) -> str:
    cal = dcfg.calibration
    blob = {
        "v": VERSION,
        "model": fingerprint(model),
        "max_new_tokens": cal.max_new_tokens,
        "opener": cal.opener,
        "harmful": hashlib.sha256("\n".join(harmful).encode()).hexdigest(),
        "benign": hashlib.sha256("\n".join(benign).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def calibrate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    dcfg: DefenceConfig,
    batch_size: int = 16,
    log: Callable[[str], None] = print,
) -> tuple[Raw, Path]:
    """The validation measurement for this model (cached), and where it lives."""
    cal = dcfg.calibration
    if cal.file:
        d = Path(cal.file)
        d = d.parent if d.is_file() else d
        return Raw.load(d), d
    harmful, benign = load_validation(dcfg)
    d = Path(cal.cache_dir) / cache_key(model, dcfg, harmful, benign)
    with cache_lock(d):
        if (d / "calibration.json").is_file():
            return Raw.load(d), d
        log(
            f"[defence] calibrating on {len(harmful)} harmful + {len(benign)} benign validation "
            f"prompts -> {d}"
        )
        raw = measure(model, tok, dcfg, harmful, benign, batch_size)
        d.mkdir(parents=True, exist_ok=True)
        raw.save(d)
    return raw, d
