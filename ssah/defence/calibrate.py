"""Calibrate the monitor on validation prompts: the direction, the layers and the threshold.

Labels: a judge (`defence.calibration.judge`; conf: `compliance`, the best-measured one; null:
keyword) reads the model's own
answers to the harmful validation prompts (refusing or complying) and its continuations after
a forced compliant opener ("Sure, here is"), the state a prefill or rephrasing attack pushes it
into. Each answer contributes the mean of its monitored states (step 0 = last input position,
then every generated token that is followed by another). Answers are as long as the
evaluation's (`max_new_tokens` defaults to eval.generation.max_new_tokens): the running score's
minimum falls lower over more steps, so a threshold set at another length does not hold.

Splits (test prompts choose nothing):
- harmful validation prompts: even rows fit the direction candidates (directions.py), odd rows
  tune (the share of their complying continuations each candidate and block set catches);
- benign validation prompts, within each group of `group_field` (the smollm2 world's
  `own_lookalike` and `own_everyday`): alternate rows go to the setting half, which fits the
  benign side of a contrast and sets the threshold, and the report half, which only reports
  (`group_field` defaults to `category`, the field the eval's loader fills and reports
  over-refusal by).
  The threshold is the lowest of the groups' thresholds, so every group's setting half has at
  most `false_trigger_rate` false triggers; the report half's false-trigger rate (overall and
  per group, with n and Wilson interval) is the out-of-sample number.

What is cached (outputs/defence/<key>/): every candidate's means and the per-step projections
of the tune and benign answers, keyed by the model's weights, the prompts and these options;
choosing candidate, layers and threshold from them takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.defence.config import CONTRASTS, DIRECTIONS, DefenceConfig, MonitorConfig
from ssah.defence.directions import Candidate, Side, fit_all
from ssah.defence.monitor import Probe, decoder_layers
from ssah.errors import SsahError
from ssah.eval.datasets import load_prompt_set
from ssah.eval.generation import Generation, _left_pad, generate_ids, prompt_ids
from ssah.eval.intervals import interval
from ssah.eval.judges import Judge, KeywordJudge
from ssah.io import atomic_write_bytes, atomic_write_text, cache_lock

FALLBACK_REFUSAL = "I'm sorry, but I can't help with that."
VERSION = 4  # bump when what is cached changes meaning
SET, REPORT = 0, 1  # the benign halves: sets the threshold / only reports


@dataclass
class Raw:
    """What the validation prompts give, before candidate, layers and threshold are chosen."""

    candidates: dict[str, Candidate]  # "<direction>/<contrast>" -> means at every block
    benign: dict[str, list[torch.Tensor]]  # candidate -> every benign answer's [steps, L]
    drift: dict[str, list[torch.Tensor]]  # candidate -> tune-half complying continuations
    info: dict[str, Any]  # counts, the model's refusal text, benign_group / benign_half
    groups: list[str] = field(default_factory=list)  # benign row -> its group
    halves: list[int] = field(default_factory=list)  # benign row -> SET or REPORT

    def save(self, d: Path) -> None:
        from safetensors.torch import save

        cat: dict[str, torch.Tensor] = {}
        for name, c in self.candidates.items():
            cat[f"cand/{name}/safe"] = c.safe.contiguous()
            cat[f"cand/{name}/fulfil"] = c.fulfil.contiguous()
            if c.weights is not None and c.bias is not None:
                cat[f"cand/{name}/weights"] = c.weights.contiguous()
                cat[f"cand/{name}/bias"] = c.bias.contiguous()
            for kind in ("benign", "drift"):
                xs = getattr(self, kind)[name]
                width = len(c.safe)
                cat[f"{kind}/{name}"] = torch.cat(xs).contiguous() if xs else torch.zeros(0, width)
                cat[f"{kind}/{name}/len"] = torch.tensor([len(x) for x in xs], dtype=torch.long)
        info = {**self.info, "candidates": list(self.candidates)}
        info |= {"benign_group": self.groups, "benign_half": self.halves}
        atomic_write_bytes(d / "raw.safetensors", save(cat))
        atomic_write_text(d / "calibration.json", json.dumps(info, indent=1) + "\n")

    @classmethod
    def load(cls, d: Path) -> Raw:
        from safetensors.torch import load_file

        if not (d / "raw.safetensors").is_file() or not (d / "calibration.json").is_file():
            raise SsahError(
                f"defence.calibration.file: {d} has no raw.safetensors + calibration.json; "
                "point it at a directory a calibration wrote (outputs/defence/<key>/)."
            )
        info = json.loads((d / "calibration.json").read_text())
        if info.get("version") != VERSION:
            raise SsahError(
                f"defence.calibration.file: {d} was written by calibration version "
                f"{info.get('version')}, this code reads {VERSION}; calibrate again "
                "(defence.calibration.file=null)."
            )
        t = load_file(str(d / "raw.safetensors"))

        def split(key: str) -> list[torch.Tensor]:
            lens = t[f"{key}/len"].tolist()
            return list(torch.split(t[key], lens)) if lens else []

        names = list(info.pop("candidates"))
        cands = {
            n: Candidate(
                t[f"cand/{n}/safe"], t[f"cand/{n}/fulfil"],
                t.get(f"cand/{n}/weights"), t.get(f"cand/{n}/bias"),
            )
            for n in names
        }  # fmt: skip
        groups, halves = info.pop("benign_group"), info.pop("benign_half")
        benign = {n: split(f"benign/{n}") for n in names}
        drift = {n: split(f"drift/{n}") for n in names}
        return cls(cands, benign, drift, info, groups, halves)


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
def _rows(spec: dict[str, Any] | None, what: str) -> list[dict[str, Any]]:
    """A prompt-set block's rows; `skip: n` drops the first n (AdvBench's 100 test rows)."""
    spec = dict(spec or {})
    skip = int(spec.pop("skip", 0) or 0)
    return load_prompt_set(spec, what=what)[skip:]


def load_validation(dcfg: DefenceConfig) -> tuple[list[str], list[dict[str, Any]]]:
    """Harmful validation prompts and benign validation rows (with their group fields)."""
    cal = dcfg.calibration
    h = [r["prompt"] for r in _rows(cal.harmful, "defence.calibration.harmful")]
    h = h[: cal.harmful_limit]
    b = _rows(cal.benign, "defence.calibration.benign")[: cal.benign_limit]
    if len(h) < 2 or len(b) < 2:
        raise SsahError(
            f"defence calibration needs >= 2 harmful and >= 2 benign validation prompts; got "
            f"{len(h)} and {len(b)}. Give larger sets (defence.calibration.harmful/benign)."
        )
    return h, b


def groups_and_halves(rows: Sequence[dict[str, Any]], group_field: str | None) -> tuple:
    """(group per row, half per row): within each group, rows alternate SET, REPORT, SET, ..."""
    groups = [str(r.get(group_field) or "benign") if group_field else "benign" for r in rows]
    seen: Counter[str] = Counter()
    halves = []
    for g in groups:
        halves.append(SET if seen[g] % 2 == 0 else REPORT)
        seen[g] += 1
    return groups, halves


def group_summary(rows: Sequence[dict[str, Any]], cal: Any) -> str:
    """The benign groups as calibration will see them, e.g. `own_lookalike 31, own_everyday 96`;
    SsahError when a look-alike group is named but the rows' groups do not include it (the
    field was renamed by the prompt set's `columns:`, or the set has none), since the per-group
    thresholds and the look-alike contrast would silently not exist."""
    groups, _ = groups_and_halves(rows, cal.group_field)
    counts = Counter(groups)
    if cal.lookalike and len(counts) > 1 and cal.lookalike not in counts:
        raise SsahError(
            f"defence.calibration.lookalike={cal.lookalike}: no benign validation row has "
            f"{cal.group_field}={cal.lookalike} (groups: {dict(counts)}); name one of them, or "
            "set defence.calibration.lookalike=null."
        )
    fields = sorted({k for r in rows for k in r if k != "prompt"})
    if cal.group_field and len(counts) == 1 and cal.group_field not in fields:
        return f"one group: no row has `{cal.group_field}`; fields: {fields or 'none'}"
    return ", ".join(f"{g} {n}" for g, n in counts.items())


def labeller(spec: dict[str, Any] | None) -> Judge:
    """The judge that labels validation answers (a judges block entry; null: keyword, the
    dataclass default; conf/defence/_monitor.yaml names `compliance`)."""
    if not spec:
        return KeywordJudge()
    from ssah.eval.judges import build_judges

    return build_judges({"labeller": spec})["labeller"]


def _mean_states(model: PreTrainedModel, items: list, batch_size: int, pad: int) -> torch.Tensor:
    """Per-answer mean states [n, L, H] of (prefix, answer, ...) items."""
    out: list[torch.Tensor | None] = [None] * len(items)

    def each(i: int, s: torch.Tensor) -> None:
        out[i] = s.mean(0)

    answer_states(model, [x[0] for x in items], [x[1] for x in items], each, batch_size, pad)
    return torch.stack(out) if items else torch.zeros(0)  # type: ignore[arg-type]


def _projections(
    model: PreTrainedModel, items: list, cands: dict[str, Candidate], batch_size: int, pad: int
) -> dict[str, list[torch.Tensor]]:
    """Every candidate's per-step projections [steps, L] of each (prefix, answer) item."""
    dirs = {n: Probe(list(range(len(c.safe))), c.safe, c.fulfil, 0.0).direction
            for n, c in cands.items()}  # fmt: skip
    out: dict[str, list[torch.Tensor]] = {n: [torch.zeros(0)] * len(items) for n in dirs}

    def each(i: int, s: torch.Tensor) -> None:
        for n, d in dirs.items():
            out[n][i] = d.project(s)

    answer_states(model, [x[0] for x in items], [x[1] for x in items], each, batch_size, pad)
    return out


@dataclass
class Labelled:
    """The harmful validation answers as (prefix ids, answer, harmful row) per side."""

    refuse: list[tuple]
    fulfil: list[tuple]
    labels: str  # behaviour: by the judge; source: own answers vs forced ones (fallback)
    refusal: str  # the model's most common own refusal (what `stop` emits)
    n_refused_own: int
    n_complied_forced: int
    labeller: str  # the judge's class, recorded in the calibration's info


def label_harmful(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    dcfg: DefenceConfig,
    harmful: list[str],
    batch_size: int,
) -> Labelled:
    """The model's own answers and its continuations after the forced opener, labelled by the
    calibration's judge (it reads the opener with the continuation)."""
    cal = dcfg.calibration
    judge, T = labeller(cal.judge), cal.max_new_tokens
    opener = tok(cal.opener, add_special_tokens=False)["input_ids"] if cal.opener else []
    ph = [prompt_ids(tok, p) for p in harmful]
    pf = [p + opener for p in ph]
    own = generate_ids(model, tok, ph, T, batch_size)
    forced = generate_ids(model, tok, pf, T, batch_size) if opener else []
    own_ok = judge.judge(harmful, [g.text for g in own]).flags
    # the forced words apart, as the evaluation judges prefilled answers: a judge that must
    # not credit them (compliance) reads only what the model added
    said = tok.decode(opener, skip_special_tokens=True)
    cont = [tok.decode(g.ids, skip_special_tokens=True) for g in forced]
    forced_ok = judge.judge_prefilled(harmful, cont, [said] * len(cont)).flags if forced else []
    ref = [(ph[i], own[i], i) for i in range(len(own)) if not own_ok[i]]
    ful = [(ph[i], own[i], i) for i in range(len(own)) if own_ok[i]]
    ful += [(pf[i], forced[i], i) for i in range(len(forced)) if forced_ok[i]]
    labels = "behaviour"
    if not any(i % 2 == 0 for *_, i in ref) or not any(i % 2 == 0 for *_, i in ful):
        labels = "source"  # e.g. a model that refuses nothing: own answers vs forced ones
        ref = [(ph[i], own[i], i) for i in range(len(own))]
        ful = [(pf[i], forced[i], i) for i in range(len(forced))] or ref
    texts = Counter(own[i].text.strip() for i in range(len(own)) if not own_ok[i])
    refusal = texts.most_common(1)[0][0] if texts else FALLBACK_REFUSAL
    n_refused = len(own) - sum(own_ok)
    return Labelled(ref, ful, labels, refusal, n_refused, sum(forced_ok), type(judge).__name__)


def measure(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    dcfg: DefenceConfig,
    harmful: list[str],
    benign: list[dict[str, Any]],
    batch_size: int = 16,
) -> Raw:
    """Generate and label the validation answers, fit every candidate on the fitting rows
    and the benign setting half, project the tune rows and every benign answer."""
    cal = dcfg.calibration
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    h = label_harmful(model, tok, dcfg, harmful, batch_size)
    pb = [prompt_ids(tok, r["prompt"]) for r in benign]
    ben = generate_ids(model, tok, pb, cal.max_new_tokens, batch_size)
    groups, halves = groups_and_halves(benign, cal.group_field)
    sides = []
    for side in (h.refuse, h.fulfil):
        fit = [x for x in side if x[2] % 2 == 0]
        sides.append(Side(_mean_states(model, fit, batch_size, pad), [x[2] for x in fit]))
    set_b = [(pb[i], ben[i], i) for i in range(len(pb)) if halves[i] == SET]
    set_states = _mean_states(model, set_b, batch_size, pad)
    look = [k for k, (*_, i) in enumerate(set_b) if groups[i] == cal.lookalike]
    extras = {"refuse": None, "refuse_benign": set_states,
              "refuse_lookalike": set_states[look] if look else None}  # fmt: skip
    cands = fit_all(sides[0], sides[1], extras, dcfg.monitor.probe_l2)
    tune_d = [x for x in h.fulfil if x[2] % 2 == 1]
    info = {
        "version": VERSION,
        "labels": h.labels,
        "labeller": h.labeller,
        "max_new_tokens": cal.max_new_tokens,
        "n_harmful": len(harmful),
        "n_benign": len(benign),
        "n_refused_own": h.n_refused_own,
        "n_complied_forced": h.n_complied_forced,
        "n_fit_refuse": len(sides[0]),
        "n_fit_fulfil": len(sides[1]),
        "n_fit_pairs": len(set(sides[0].request) & set(sides[1].request)),
        "n_set_benign": len(set_b),
        "n_set_lookalike": len(look),
        "n_report_benign": len(pb) - len(set_b),
        "n_tune_drift": len(tune_d),
        "benign_refused_own": sum(KeywordJudge().is_refusal(g.text) for g in ben),
        "refusal": h.refusal,
    }
    benign_items = [(pb[i], ben[i], i) for i in range(len(pb))]
    return Raw(
        cands,
        _projections(model, benign_items, cands, batch_size, pad),
        _projections(model, [(x[0], x[1]) for x in tune_d], cands, batch_size, pad),
        info,
        groups,
        halves,
    )


# ---- choosing candidate, layers and threshold -------------------------------------------------
def _padded(xs: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-answer projections [steps, L] -> [N, T, L] (zero-padded) and a step mask [N, T]."""
    T = max((len(x) for x in xs), default=0)
    out, mask = torch.zeros(len(xs), T, width), torch.zeros(len(xs), T, dtype=torch.bool)
    for i, x in enumerate(xs):
        out[i, : len(x)], mask[i, : len(x)] = x, True
    return out, mask


def worst_scores(
    padded: tuple[torch.Tensor, torch.Tensor], layers: list[int], smoothing: float, first: bool
) -> list[float]:
    """Each answer's lowest running score over `layers` (its first step only when deciding
    once; inf for an empty answer), all answers at once: Probe.running's recursion."""
    x, mask = padded
    if x.shape[1] == 0:
        return [float("inf")] * len(x)
    s = x[:, :, layers].mean(-1)  # [N, T]
    run = s[:, 0]
    low = run.clone()
    for t in range(1, 1 if first else s.shape[1]):
        nxt = smoothing * run + (1 - smoothing) * s[:, t]
        run = torch.where(mask[:, t], nxt, run)
        low = torch.where(mask[:, t], torch.minimum(low, run), low)
    return torch.where(mask[:, 0], low, torch.full_like(low, float("inf"))).tolist()


def _threshold(benign_worst: list[float], rate: float) -> float:
    """Largest level that at most `rate` of benign answers fall strictly below."""
    xs = sorted(benign_worst)
    k = int(rate * len(xs))  # answers allowed to trigger
    return xs[k] if k < len(xs) else float("inf")


def group_threshold(
    worst: Sequence[float], groups: Sequence[str], halves: Sequence[int], rate: float
) -> float:
    """The lowest of the groups' thresholds on the setting half: each group meets `rate`."""
    per = [
        _threshold([w for w, g, h in zip(worst, groups, halves, strict=True)
                    if g == grp and h == SET], rate)
        for grp in sorted(set(groups))
    ]  # fmt: skip
    return min(per, default=float("inf"))


def _slug(group: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", group.lower()).strip("_") or "benign"


def false_triggers(
    worst: Sequence[float], groups: Sequence[str], halves: Sequence[int], thr: float, half: int
) -> dict[str, tuple[int, int]]:
    """{"": (triggered, n) over the half, <group>: the same per group}."""
    out: dict[str, tuple[int, int]] = {"": (0, 0)}  # the overall rate even for an empty half
    for w, g, h in zip(worst, groups, halves, strict=True):
        if h != half:
            continue
        for key in ("", g):
            k, n = out.get(key, (0, 0))
            out[key] = (k + int(w < thr), n + 1)
    return out


def _report(counts: dict[str, tuple[int, int]], name: str) -> dict[str, float]:
    """`name`[_<group>] rates, each with its n and Wilson interval keys."""
    out: dict[str, float] = {}
    for g, (k, n) in sorted(counts.items()):
        key = name if not g else f"{name}_{_slug(g)}"
        out[key] = k / n if n else float("nan")
        out.update(interval(key, out[key], n))
    return out


def _options(raw: Raw, m: MonitorConfig) -> list[str]:
    """The candidates `m` allows, in DIRECTIONS x CONTRASTS order."""
    dirs = list(DIRECTIONS) if m.direction == "auto" else [m.direction]
    cons = list(CONTRASTS) if m.contrast == "auto" else [m.contrast]
    names = [f"{d}/{c}" for c in cons for d in dirs if f"{d}/{c}" in raw.candidates]
    if not names:
        raise SsahError(
            f"defence.monitor.direction={m.direction!r} contrast={m.contrast!r}: no such "
            f"candidate in this calibration (it has {sorted(raw.candidates)}; refuse_lookalike "
            "needs benign rows whose defence.calibration.group_field is "
            "defence.calibration.lookalike)."
        )
    return names


@dataclass
class Choice:
    """The chosen candidate, blocks and threshold, and what validation says of them."""

    candidate: str
    layers: list[int]
    threshold: float
    info: dict[str, float]

    @property
    def direction(self) -> str:
        return self.candidate.split("/")[0]

    @property
    def contrast(self) -> str:
        return self.candidate.split("/")[1]


def select(raw: Raw, m: MonitorConfig) -> Choice:
    """Candidate, layers (given or `auto`) and threshold (given or for the false-trigger rate,
    set per group on the setting half); `auto` maximises the tune half's detection of
    complying continuations. The report half is read only for the held-out rates."""
    n_layers = len(next(iter(raw.candidates.values())).safe)
    pads = {kind: {n: _padded(xs[n], n_layers) for n in xs} for kind, xs in
            (("benign", raw.benign), ("drift", raw.drift))}  # fmt: skip

    def worst(name: str, layers: list[int], kind: str) -> list[float]:
        return worst_scores(pads[kind][name], layers, m.smoothing, m.first_token_only)

    def evaluate(name: str, layers: list[int]) -> tuple[float, float]:
        wb = worst(name, layers, "benign")
        thr = m.threshold
        if thr is None:
            thr = group_threshold(wb, raw.groups, raw.halves, m.false_trigger_rate)
        wd = worst(name, layers, "drift")
        return thr, sum(x < thr for x in wd) / max(len(wd), 1)

    names = _options(raw, m)
    cands = m.candidates if m.candidates is not None else list(range(n_layers))
    bad = [i for i in (cands if m.layers == "auto" else m.layers) if not 0 <= i < n_layers]
    if bad:
        key = "candidates" if m.layers == "auto" else "layers"
        raise SsahError(f"defence.monitor.{key} has {bad}; blocks are 0..{n_layers - 1}.")
    options = []
    for name in names:
        if m.layers == "auto":
            single = sorted(cands, key=lambda i, n=name: (-evaluate(n, [i])[1], i))
            top = min(m.max_layers, len(single))
            options += [(name, sorted(single[:k])) for k in range(1, top + 1)]
        else:
            options.append((name, list(m.layers)))
    order = {n: i for i, n in enumerate(names)}
    name, layers = max(options, key=lambda o: (evaluate(*o)[1], -len(o[1]), -order[o[0]]))
    thr, det = evaluate(name, layers)
    wb = worst(name, layers, "benign")
    info = {
        "val_detection_rate": det,
        **interval("val_detection_rate", det, len(raw.drift[name])),
        **_report(false_triggers(wb, raw.groups, raw.halves, thr, SET), "val_false_trigger_rate"),
        **_report(false_triggers(wb, raw.groups, raw.halves, thr, REPORT),
                  "heldout_false_trigger_rate"),
    }  # fmt: skip
    return Choice(name, layers, thr, info)


def probe_from(raw: Raw, m: MonitorConfig) -> tuple[Probe, Choice]:
    """The monitor's probe for the chosen candidate, blocks and threshold."""
    choice = select(raw, m)
    c, layers = raw.candidates[choice.candidate], choice.layers
    probe = Probe(
        layers, c.safe[layers], c.fulfil[layers], choice.threshold, m.smoothing,
        m.first_token_only,
    )  # fmt: skip
    return probe, choice


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
    model: PreTrainedModel, dcfg: DefenceConfig, harmful: list[str], benign: list[dict[str, Any]]
) -> str:
    """Weights, prompts (with their groups) and every option that changes what is measured."""
    cal = dcfg.calibration
    groups, _ = groups_and_halves(benign, cal.group_field)
    blob = {
        "v": VERSION,
        "model": fingerprint(model),
        "max_new_tokens": cal.max_new_tokens,
        "opener": cal.opener,
        "judge": cal.judge,
        "lookalike": cal.lookalike,
        "probe_l2": dcfg.monitor.probe_l2,
        "harmful": hashlib.sha256("\n".join(harmful).encode()).hexdigest(),
        "benign": hashlib.sha256(
            "\n".join(f"{g}\t{r['prompt']}" for g, r in zip(groups, benign, strict=True)).encode()
        ).hexdigest(),
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
            f"prompts ({group_summary(benign, dcfg.calibration)}) -> {d}"
        )
        raw = measure(model, tok, dcfg, harmful, benign, batch_size)
        d.mkdir(parents=True, exist_ok=True)
        raw.save(d)
    return raw, d
