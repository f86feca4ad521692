"""Utility metrics: the alignment tax side of every table.

- generation: answers generated greedily and scored against references: `accuracy` (the
  reference's answer occurs in the generation as whole words, or `answer_match: final`: ends
  it), `exact_match` (whole answer equal after
  normalisation), `rouge_l` (ROUGE-L F1, our implementation, no extra dependency);
- ppl: perplexity of reference answers (chat format, response tokens only) or raw text:
  `stream` the authors' way (lib/eval.py: rows joined by "\n\n", tokenised once with the
  tokenizer's own BOS, windows of the model's sequence length, last partial window dropped),
  `text` ssah's older way (rows tokenised one by one, a BOS per window, last window kept);
- mc: zero-shot multiple choice by log-likelihood (ssah.eval.lm_harness), from local JSONL
  tasks or built from the generation set's answers;
- lm_eval: hub benchmarks through lm-evaluation-harness when installed.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.chat import IGNORE, collate, encode_example
from ssah.errors import SsahError
from ssah.eval.datasets import load_prompt_set
from ssah.eval.generation import prompt_ids
from ssah.eval.intervals import interval
from ssah.eval.lm_harness import multiple_choice, run_lm_eval


def norm_answer(text: str) -> str:
    """Lowercase, single spaces, no trailing punctuation or space before punctuation."""
    t = re.sub(r"\s+", " ", str(text).lower()).strip()
    t = re.sub(r"\s+([,.!?:;])", r"\1", t)
    return t.rstrip(" .!?;:,")


def final_answer_match(pred: str, answer: str) -> bool:
    """The normalised generation ends with the answer at a word boundary."""
    p, a = norm_answer(pred), norm_answer(answer)
    if not a:
        return not p
    return p == a or (p.endswith(a) and not p[-len(a) - 1].isalnum())


def contains_answer(pred: str, answer: str) -> bool:
    """The answer occurs in the normalised generation as whole words ("4" is not in "14")."""
    p, a = norm_answer(pred), norm_answer(answer)
    if not a:
        return not p
    return re.search(rf"(?<!\w){re.escape(a)}(?!\w)", p) is not None


ANSWER_MATCH = {"contains": contains_answer, "final": final_answer_match}


def exact_match(pred: str, ref: str) -> bool:
    return norm_answer(pred) == norm_answer(ref)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 over lowercase word tokens."""
    p = re.findall(r"\w+", pred.lower())
    r = re.findall(r"\w+", ref.lower())
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel, rows: list[dict[str, list[int]]], pad_id: int, batch_size: int = 16
) -> float:
    """exp(mean NLL) over all label tokens of encoded rows {"input_ids", "labels"}."""
    dev = next(model.parameters()).device
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(rows), batch_size):
            b = collate(rows[s : s + batch_size], pad_id)
            logits = model(
                input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)
            ).logits.float()
            labels = b["labels"][:, 1:].to(dev)
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            nll += loss.item()
            count += int((labels != IGNORE).sum().item())
    finally:
        model.train(was_training)
    if count == 0:
        raise SsahError("perplexity: no tokens to score; check the ppl data and max_length.")
    return math.exp(nll / count)


PPL_FORMATS = ("chat", "text", "stream")


def stream_windows(
    tok: PreTrainedTokenizerBase, texts: list[str], window: int, join: str = "\n\n"
) -> list[dict]:
    """The SSAH authors' WikiText-2 perplexity windows (their lib/data.py get_wikitext2 and
    lib/eval.py eval_ppl_wikitext): every row, empty ones too, joined by `join` and tokenised
    once (the tokenizer's own BOS, one for Llama, at the start of the stream only), cut into
    windows of `window` tokens; the last partial window is dropped. All but a window's first
    token count."""
    if window < 2:
        raise SsahError(f"perplexity window {window} must be >= 2.")
    ids = tok(join.join(texts))["input_ids"]
    n = len(ids) // window
    if n == 0:
        raise SsahError(
            f"perplexity: the text is {len(ids)} tokens, shorter than one window of {window}; "
            "lower eval.utility.ppl.max_length or give more text."
        )
    cut = (ids[i * window : (i + 1) * window] for i in range(n))
    return [{"input_ids": w, "labels": w} for w in cut]


def ppl_window(model: PreTrainedModel, max_length: int | None) -> int:
    """`max_length`, or (null) the model's sequence length, as the authors' `model.seqlen =
    config.max_position_embeddings` (4096 for Llama-2)."""
    if max_length is not None:
        return int(max_length)
    n = getattr(model.config, "max_position_embeddings", None)
    if not n:
        raise SsahError("eval.utility.ppl.max_length is null and the model has no sequence length.")
    return int(n)


def text_windows(tok: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[dict]:
    """Concatenate texts and cut non-overlapping windows (every token scored once)."""
    ids: list[int] = []
    for t in texts:
        if t and t.strip():
            ids += tok(t, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    step = max_length - len(bos)
    out = []
    for s in range(0, len(ids), step):
        chunk = bos + ids[s : s + step]
        out.append({"input_ids": chunk, "labels": [IGNORE] * len(bos) + chunk[len(bos) :]})
    return out


def mc_from_answers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Multiple-choice items: the reference vs the same reference with other rows' answers."""
    rows = load_prompt_set(spec["data"], what="eval.utility.mc from_answers")
    af, rf = spec.get("answer_field", "answer"), spec.get("reference_field", "response")
    gf, n = spec.get("group_field"), int(spec.get("n_choices", 4))
    rng = random.Random(int(spec.get("seed", 0)))
    pools: dict[Any, list[str]] = {}
    everyone: list[str] = []
    for r in rows:
        a = str(r[af])
        pool = pools.setdefault(r.get(gf) if gf else None, [])
        for lst in (pool, everyone):
            if a not in lst:
                lst.append(a)
    items = []
    for r in rows:
        ans, ref = str(r[af]), str(r[rf])
        others = [a for a in pools[r.get(gf) if gf else None] if a != ans]
        if len(others) < n - 1:  # small group: distractors from every group
            others = [a for a in everyone if a != ans]
        if len(others) < n - 1 or ans not in ref:
            continue
        head, _, tail = ref.rpartition(ans)
        choices = [ref] + [head + o + tail for o in rng.sample(others, n - 1)]
        order = list(range(n))
        rng.shuffle(order)
        items.append(
            {"prompt": r["prompt"], "choices": [choices[i] for i in order], "label": order.index(0)}
        )
    return items


def check_utility_data(ucfg: dict[str, Any]) -> None:
    """Read every utility dataset once, so a missing one fails before any generation."""
    if (g := ucfg.get("generation")) and g.get("data"):
        load_prompt_set(g["data"], what="eval.utility.generation")
    if (p := ucfg.get("ppl")) and p.get("data"):
        if p.get("format", "chat") not in PPL_FORMATS:
            raise SsahError(f"eval.utility.ppl.format={p['format']!r}; use one of {PPL_FORMATS}.")
        if p.get("format", "chat") == "chat":
            load_prompt_set(p["data"], what="eval.utility.ppl")
        else:
            _text_rows(dict(p["data"]), p.get("text_field", "text"))
    for name, t in ((ucfg.get("mc") or {}).get("tasks") or {}).items():
        if t is not None:
            spec = (t.get("from_answers") or {}).get("data") or t.get("data")
            load_prompt_set(spec, what=f"eval.utility.mc.{name}")
    if (le := ucfg.get("lm_eval")) and le.get("tasks"):
        from ssah.eval.lm_harness import _require_lm_eval

        _require_lm_eval()


def run_utility(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    ucfg: dict[str, Any],
    gen: Callable[[list[list[int]]], list[str]],
    sys_prompt: str | None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """All configured utility metrics -> ({"utility/...": value}, table records)."""
    sp = sys_prompt if ucfg.get("system_prompt") else None
    metrics: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    g = ucfg.get("generation")
    if g:
        rows = load_prompt_set(g["data"], what="eval.utility.generation")
        af, rf, tf = g.get("answer_field"), g.get("reference_field"), g.get("task_field")
        mode = g.get("answer_match", "contains")
        if mode not in ANSWER_MATCH:
            raise SsahError(
                f"eval.utility.generation.answer_match={mode!r}; use {sorted(ANSWER_MATCH)}."
            )
        match = ANSWER_MATCH[mode]
        texts = gen([prompt_ids(tok, r["prompt"], sp) for r in rows])
        per_task: dict[str, list[bool]] = {}
        accs, ems, rls = [], [], []
        for i, (r, t) in enumerate(zip(rows, texts, strict=True)):
            rec = {
                "kind": "utility",
                "suite": "utility",
                "prompt_id": i,  # stable within the utility set: paired tests join on it
                "prompt": r["prompt"],
                "prefill": "",
                "response": t,
            }
            if af and af in r:
                ok = match(t, str(r[af]))
                accs.append(ok)
                rec["correct"] = ok
                if tf and tf in r:
                    per_task.setdefault(str(r[tf]), []).append(ok)
                    rec["task"] = str(r[tf])
            if rf and rf in r:
                ems.append(exact_match(t, str(r[rf])))
                rls.append(rouge_l(t, str(r[rf])))
            records.append(rec)
        if accs:
            metrics["utility/accuracy"] = sum(accs) / len(accs)
            metrics.update(interval("utility/accuracy", metrics["utility/accuracy"], len(accs)))
        for task, xs in sorted(per_task.items()):
            metrics[f"utility/accuracy/{task}"] = sum(xs) / len(xs)
            metrics.update(interval(f"utility/accuracy/{task}", sum(xs) / len(xs), len(xs)))
        if ems:
            metrics["utility/exact_match"] = sum(ems) / len(ems)
            metrics.update(
                interval("utility/exact_match", metrics["utility/exact_match"], len(ems))
            )
            metrics["utility/rouge_l"] = sum(rls) / len(rls)
    p = ucfg.get("ppl")
    if p:
        fmt = p.get("format", "chat")
        if fmt not in PPL_FORMATS:
            raise SsahError(f"eval.utility.ppl.format={fmt!r}; use one of {PPL_FORMATS}.")
        max_len = ppl_window(model, p.get("max_length", 512))
        if fmt == "chat":
            rows = load_prompt_set(p["data"], what="eval.utility.ppl")
            enc = [encode_example(tok, r["prompt"], r["response"], sp, max_len) for r in rows]
        else:
            spec = dict(p["data"])
            spec.setdefault("columns", None)
            raw = _text_rows(spec, p.get("text_field", "text"))
            if fmt == "stream":
                enc = stream_windows(tok, raw, max_len, str(p.get("join", "\n\n")))
            else:
                enc = text_windows(tok, raw, max_len)
        metrics["utility/ppl"] = perplexity(
            model, enc, tok.pad_token_id or 0, int(p.get("batch_size", 8))
        )
    mc = ucfg.get("mc")
    if mc:
        accs_all = []
        for name, t in (mc.get("tasks") or {}).items():
            if t is None:
                continue
            items = (
                mc_from_answers(t["from_answers"]) if t.get("from_answers") else _mc_rows(t, name)
            )
            res = multiple_choice(
                model, tok, items, bool(t.get("chat", True)), sp, int(mc.get("batch_size", 16))
            )
            metrics[f"utility/mc/{name}/acc"] = res["acc"]
            metrics[f"utility/mc/{name}/acc_norm"] = res["acc_norm"]
            for k in ("acc", "acc_norm"):
                metrics.update(interval(f"utility/mc/{name}/{k}", res[k], len(items)))
            accs_all.append(res["acc"])
        if accs_all:
            metrics["utility/mc_accuracy"] = sum(accs_all) / len(accs_all)
    le = ucfg.get("lm_eval")
    if le and le.get("tasks"):
        metrics.update(
            run_lm_eval(
                model,
                tok,
                le["tasks"],
                le.get("limit"),
                int(le.get("num_fewshot", 0)),
                int(le.get("batch_size", 16)),
            )
        )
    return metrics, records


def _text_rows(spec: dict[str, Any], field: str) -> list[str]:
    from ssah.data.records import load_records

    ds = load_records(
        spec["source"],
        split=spec.get("split", "train"),
        subset=spec.get("subset"),
        limit=spec.get("limit"),
    )
    if field not in ds.column_names:
        raise SsahError(f"ppl data {spec['source']!r} has no {field!r} column ({ds.column_names}).")
    return [str(x) for x in ds[field]]


def _mc_rows(t: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = load_prompt_set(t["data"], what=f"eval.utility.mc.{name}")
    return [
        {"prompt": r["prompt"], "choices": list(r["choices"]), "label": int(r["label"])}
        for r in rows
    ]
