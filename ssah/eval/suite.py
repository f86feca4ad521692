"""The one evaluation every stage runs: attack suites x judges, over-refusal, utility.

`run_suite(model, tokenizer, cfg.eval)` returns flat metrics (all rates are fractions in [0,1]):
  safety/asr/<suite>/<judge>        attack success without a system prompt
  safety/asr/<suite>_sys/<judge>    the same with `eval.system_prompt` (paper reports both)
  safety/asr/prefill_k<k>[_sys]/<judge>  first k tokens of a compliant answer forced
  safety/asr/avg/<judge>            mean over `eval.avg_over` (the paper's "ASR avg")
  safety/asr/{inst,no_inst}_{basic,basic_nosys,multiple_nosys}/<judge>, .../gcg[_s<i>]/<judge>,
  safety/asr/paper_avg/<judge>      `eval.paper_protocol`: the authors' rows (ssah/eval/paper.py)
  safety/harmfulness/<judge>        graded judges only (the rubric judge): mean 1-5 score on
                                    `eval.harmfulness_suite` (first system-prompt mode)
  safety/over_refusal[_sys]         share of benign-but-edgy prompts refused
  safety/over_refusal[_sys]/<cat>   the same per `category` of the benign set, when every row has one
  paired/<suite>_vs_<ref>/<judge>/. suites with `paired_with` (poem, purpose: ssah/eval/attacks.py):
                                    exact McNemar against the reference on the same prompts
  utility/<metric>                  accuracy, exact_match, rouge_l, ppl, mc_accuracy, lm_eval/...
  time/eval_s
It reads only its config argument (no Hydra globals), so train/prune/demo call it in-process.
With `out_dir` it also writes records.jsonl (one row per generation: prompt, response,
verdicts, with the text: the run dir is local and gitignored; `eval.records.redact` hides it from
W&B) and prefill_depth.png.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.errors import SsahError
from ssah.eval.attacks import KINDS as REWRITES
from ssah.eval.attacks import paired_metrics, rewrite_suites
from ssah.eval.datasets import load_prompt_set
from ssah.eval.generation import labelled, prompt_ids
from ssah.eval.generators import Generator, make_generator
from ssah.eval.judges import Judge, KeywordJudge, Verdicts, build_judges
from ssah.eval.verdicts import asr_averages, asr_rates
from ssah.metrics import atomic_write_text
from ssah.results import RECORDS, read_jsonl
from ssah.tables import md

MODE_SUFFIX = {"none": "", "sys": "_sys"}
# A generator maps (prompt ids rows) -> generated texts; backends differ, the suite does not.


@dataclass
class EvalResult:
    """Everything one evaluation produced."""

    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    prefill_curve: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> {k: asr}


@dataclass
class _Suite:
    name: str  # metric name without the system-prompt suffix
    prompts: list[str]  # what the model sees (wrapped)
    behaviors: list[str]  # the underlying harmful request (what judges are told)
    prefill_ids: list[list[int]] | None = None
    modes: Sequence[str] = ("none", "sys")
    depth: int | None = None  # prefill depth k
    tags: list[dict[str, str]] | None = None  # per-prompt record fields (e.g. a poem's form)
    paired_with: str | None = None  # reference suite on the same prompt ids (paired test)


def _cfg(c: Any) -> dict[str, Any]:
    if c is None:
        return {}
    if isinstance(c, DictConfig):
        return OmegaConf.to_container(c, resolve=True)  # type: ignore[return-value]
    return dict(c)


def _build_suites(
    ecfg: dict[str, Any], tok: PreTrainedTokenizerBase, harmful: Callable[[], list[dict]]
) -> list[_Suite]:
    default_modes = ecfg.get("system_prompt_modes") or ["none"]
    suites: list[_Suite] = []
    for name, spec in (ecfg.get("suites") or {}).items():
        if spec is None:
            continue  # `eval.suites.story=null` switches a suite off
        kind = spec.get("kind", "direct")
        modes = spec.get("system_prompt_modes") or default_modes
        for m in modes:
            if m not in MODE_SUFFIX:
                raise SsahError(f"eval suite {name!r}: mode {m!r}; use {sorted(MODE_SUFFIX)}.")
        limit = spec.get("limit")
        if kind in ("direct", "template", "prefill", *REWRITES):
            rows = harmful()[: limit if limit is not None else None]
            base = [r["prompt"] for r in rows]
        if kind == "direct":
            suites.append(_Suite(name, base, base, modes=modes))
        elif kind == "template":
            tpl = spec.get("template") or ""
            if "{prompt}" not in tpl:
                raise SsahError(f"eval suite {name!r}: template must contain {{prompt}}.")
            suites.append(
                _Suite(name, [tpl.replace("{prompt}", p) for p in base], base, modes=modes)
            )
        elif kind == "prefill":
            fld = spec.get("field", "compliance")
            if fld not in rows[0]:
                raise SsahError(
                    f"eval suite {name!r}: the harmful set has no {fld!r} column for prefills "
                    f"(it has {sorted(rows[0])}); set eval.suites.{name}.field or map a column."
                )
            answers = [tok(str(r[fld]), add_special_tokens=False)["input_ids"] for r in rows]
            for k in spec.get("depths", [1, 2, 4, 8]):
                k = int(k)
                if k < 0:
                    raise SsahError(f"eval suite {name!r}: prefill depth {k} must be >= 0.")
                pre = [a[:k] for a in answers]
                suites.append(_Suite(f"{name}_k{k}", base, base, pre, modes, depth=k))
        elif kind in REWRITES:  # poem / purpose: ssah/eval/attacks.py
            for r in rewrite_suites(name, spec, base):
                suites.append(_Suite(r.name, r.prompts, r.behaviors, modes=modes, tags=r.tags,
                                     paired_with=r.paired_with))  # fmt: skip
        elif kind == "dataset":
            rows = load_prompt_set(spec.get("data"), what=f"eval suite {name!r}")
            bfield = spec.get("behavior_field", "prompt")
            group = spec.get("group_by")
            groups: dict[str, list[dict]] = {}
            for r in rows:
                key = f"{spec.get('prefix', '')}{r[group]}" if group else name
                groups.setdefault(key, []).append(r)
            for key, rs in groups.items():
                rs = rs[: limit if limit is not None else None]
                prompts = [r["prompt"] for r in rs]
                suites.append(
                    _Suite(key, prompts, [r.get(bfield) or r["prompt"] for r in rs], modes=modes)
                )
        else:
            raise SsahError(
                f"eval suite {name!r}: kind={kind!r}; use direct, template, prefill, dataset, "
                "poem or purpose."
            )
    return suites


@dataclass
class EvalPlan:
    """What an evaluation will run, built (data read, judges loaded) before the model loads."""

    suites: list[_Suite]
    judges: dict[str, Judge]
    benign: list[dict[str, Any]] | None


def prepare(tokenizer: PreTrainedTokenizerBase, eval_cfg: DictConfig | dict[str, Any]) -> EvalPlan:
    """Read every dataset and build every judge; bad input fails here, before generation."""
    ecfg = _cfg(eval_cfg)
    cache: dict[str, list[dict]] = {}

    def harmful() -> list[dict]:
        if "rows" not in cache:
            cache["rows"] = load_prompt_set(ecfg.get("harmful"), what="eval.harmful")
        return cache["rows"]

    suites = _build_suites(ecfg, tokenizer, harmful)
    benign = load_prompt_set(ecfg["benign"], what="eval.benign") if ecfg.get("benign") else None
    if ecfg.get("utility"):
        from ssah.eval.utility import check_utility_data

        check_utility_data(ecfg["utility"])
    paper = bool(ecfg.get("paper_protocol"))
    if paper:  # the authors' ASR rows (ssah/eval/paper.py): options checked before loading
        from ssah.eval.paper import PaperProtocol

        PaperProtocol.from_cfg(dict(ecfg["paper_protocol"]))
    judges = build_judges(ecfg.get("judges")) if suites or paper else {}
    return EvalPlan(suites, judges, benign)


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_cfg: DictConfig | dict[str, Any],
    *,
    model_path: str | None = None,
    plan: EvalPlan | None = None,
) -> EvalResult:
    """Run every configured suite, judge, over-refusal and utility metric."""
    t0 = time.perf_counter()
    ecfg = _cfg(eval_cfg)
    plan = plan or prepare(tokenizer, ecfg)
    sys_prompt = ecfg.get("system_prompt") or None
    gen = make_generator(model, tokenizer, ecfg.get("generation") or {}, model_path)
    suites, judges = plan.suites, plan.judges
    metrics: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    curve: dict[str, dict[int, float]] = {}
    graded: dict[str, list[float]] = {}
    flags: dict[str, dict[str, list[bool]]] = {}  # suite -> judge -> one flag per answer
    hsuite = ecfg.get("harmfulness_suite", "direct")

    for s in suites:
        for mode in s.modes:
            sp = sys_prompt if mode == "sys" else None
            rows = [prompt_ids(tokenizer, p, sp) for p in s.prompts]
            if s.prefill_ids is not None:
                rows = [r + pre for r, pre in zip(rows, s.prefill_ids, strict=True)]
            key = s.name + MODE_SUFFIX[mode]
            with labelled(key):
                texts = gen(rows)
            pre_txt = (
                [tokenizer.decode(p, skip_special_tokens=True) for p in s.prefill_ids]
                if s.prefill_ids is not None
                else [""] * len(texts)
            )
            verdicts: dict[str, Verdicts] = {
                n: j.judge_prefilled(s.behaviors, texts, pre_txt) for n, j in judges.items()
            }
            for n, v in verdicts.items():
                flags.setdefault(key, {})[n] = [bool(f) for f in v.flags]
                if s.depth is not None:
                    curve.setdefault(f"{n}{MODE_SUFFIX[mode]}", {})[s.depth] = _mean(v.flags)
                if v.scores is not None and s.name == hsuite and mode == s.modes[0]:
                    graded[n] = v.scores
            for i in range(len(texts)):
                rec = {
                    "kind": "attack",
                    "suite": key,
                    "prompt_id": i,  # stable within the prompt set: paired tests join on it
                    "prompt": s.prompts[i],
                    "prefill": pre_txt[i],
                    "response": texts[i],
                }
                if s.behaviors[i] != s.prompts[i]:
                    rec["behavior"] = s.behaviors[i]  # what the judges were told was asked
                rec.update(s.tags[i] if s.tags else {})
                for n, v in verdicts.items():
                    rec[f"judge/{n}"] = bool(v.flags[i])
                    if v.scores is not None:
                        rec[f"score/{n}"] = float(v.scores[i])
                records.append(rec)
    metrics.update(asr_rates(flags))
    pairs = {s.name + MODE_SUFFIX[m]: s.paired_with + MODE_SUFFIX[m]
             for s in suites if s.paired_with for m in s.modes}  # fmt: skip
    metrics.update(paired_metrics(records, pairs))  # paired/<suite>_vs_<ref>/<judge>/...
    if ecfg.get("paper_protocol"):
        from ssah.eval.paper import run_paper_protocol

        metrics.update(run_paper_protocol(model, tokenizer, ecfg, judges, records, model_path, gen))
    for n, scores in graded.items():
        ok = [x for x in scores if math.isfinite(x)]  # unparsable judge replies are NaN
        metrics[f"safety/harmfulness/{n}"] = sum(ok) / len(ok) if ok else float("nan")

    metrics.update(asr_averages(metrics, list(judges), ecfg.get("avg_over") or []))
    if plan.benign is not None:
        metrics.update(_over_refusal(ecfg, plan.benign, tokenizer, gen, sys_prompt, records))
    if ecfg.get("utility"):
        from ssah.eval.utility import run_utility

        with labelled("utility"):
            um, urecs = run_utility(model, tokenizer, ecfg["utility"], gen, sys_prompt)
        metrics.update(um)
        records.extend(urecs)
    from ssah.eval.intervals import add_intervals  # n and Wilson 95% beside every rate

    add_intervals(metrics, records, ecfg.get("avg_over") or [])
    metrics["time/eval_s"] = time.perf_counter() - t0
    return EvalResult(metrics, records, curve)


def _over_refusal(
    ecfg: dict[str, Any],
    rows: list[dict[str, Any]],
    tok: PreTrainedTokenizerBase,
    gen: Generator,
    sys_prompt: str | None,
    records: list[dict[str, Any]],
) -> dict[str, float]:
    ocfg = ecfg.get("over_refusal") or {}
    judge = KeywordJudge(**(ocfg.get("judge") or {}))
    modes = ocfg.get("system_prompt_modes") or ecfg.get("system_prompt_modes") or ["none"]
    out = {}
    for mode in modes:
        sp = sys_prompt if mode == "sys" else None
        with labelled(f"benign{MODE_SUFFIX[mode]}"):
            texts = gen([prompt_ids(tok, r["prompt"], sp) for r in rows])
        refused = [judge.is_refusal(t) for t in texts]
        key = f"safety/over_refusal{MODE_SUFFIX[mode]}"
        out[key] = _mean(refused)
        # per `category` of the prompt set (e.g. look-alikes vs everyday requests): a model can
        # refuse every look-alike and still score low over a set that is mostly everyday
        cats = [str(r["category"]) for r in rows if r.get("category")]
        for c in sorted(set(cats)) if len(cats) == len(rows) else ():
            out[f"{key}/{c}"] = _mean(
                [x for r, x in zip(rows, refused, strict=True) if r["category"] == c]
            )
        for i, (r, t, x) in enumerate(zip(rows, texts, refused, strict=True)):
            records.append(
                {
                    "kind": "over_refusal",
                    "suite": f"benign{MODE_SUFFIX[mode]}",
                    "prompt_id": i,
                    "prompt": r["prompt"],
                    "prefill": "",
                    "response": t,
                    "refused": x,
                    **({"category": str(r["category"])} if r.get("category") else {}),
                }
            )
    return out


def _mean(xs: Sequence[bool | float]) -> float:
    return float(sum(float(x) for x in xs) / len(xs)) if xs else float("nan")


def write_records(records: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """records.jsonl (atomic): the rows of the W&B eval table."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return atomic_write_text(Path(out_dir) / RECORDS, text)


def read_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """The table rows a previous evaluation wrote into `out_dir`."""
    return read_jsonl(Path(out_dir) / RECORDS)


def plot_prefill_curve(curve: dict[str, dict[int, float]], path: str | Path) -> Path | None:
    """ASR against prefill depth k, one line per judge (and system-prompt mode)."""
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, pts in sorted(curve.items()):
        ks = sorted(pts)
        ax.plot(ks, [pts[k] for k in ks], marker="o", label=name)
    ax.set_xlabel("forced compliant tokens k")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Prefill attack: how deep does the refusal go?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def asr_matrix(
    metrics: dict[str, float],
) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """(suites, judges, {(suite, judge): asr}) from flat `safety/asr/<suite>/<judge>` keys."""
    suites: list[str] = []
    judges: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for k, v in metrics.items():
        parts = k.split("/")
        if len(parts) == 4 and parts[:2] == ["safety", "asr"]:
            suite, judge = parts[2], parts[3]
            suites += [suite] if suite not in suites else []
            judges += [judge] if judge not in judges else []
            cells[(suite, judge)] = v
    return suites, judges, cells


def markdown_summary(metrics: dict[str, float]) -> str:
    """Attack success per suite and judge, harmfulness, over-refusal and utility, as Markdown."""
    suites, judges, cells = asr_matrix(metrics)
    lines = []
    if suites:
        body = [
            [s_, *("" if (v := cells.get((s_, j))) is None else f"{100 * v:.1f}%" for j in judges)]
            for s_ in suites
        ]
        lines += [md(["suite", *judges], body).rstrip("\n"), ""]
    for k in sorted(metrics):
        if k.startswith(("safety/harmfulness/", "safety/over_refusal", "utility/")):
            if k.endswith(("/n", "/ci_low", "/ci_high")):
                continue
            v = metrics[k]
            pct = not k.startswith(("utility/ppl", "safety/harmfulness/"))
            lines.append(f"- `{k}`: {100 * v:.1f}%" if pct else f"- `{k}`: {v:.3g}")
    return "\n".join(lines) + "\n"


def run_suite(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_cfg: DictConfig | dict[str, Any],
    *,
    out_dir: str | Path | None = None,
    model_path: str | None = None,
) -> dict[str, float]:
    """Flat metrics; with `out_dir`, also records.jsonl and prefill_depth.png there."""
    res = evaluate_model(model, tokenizer, eval_cfg, model_path=model_path)
    if out_dir is not None:
        write_records(res.records, out_dir)
        plot_prefill_curve(res.prefill_curve, Path(out_dir) / "prefill_depth.png")
    return res.metrics
