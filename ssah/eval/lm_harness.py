"""Log-likelihood scoring of the in-memory model, and an lm-evaluation-harness adapter.

The core (`loglikelihood`, `rolling_loglikelihood`, `multiple_choice`) is ours and tested
without lm-eval: it scores local multiple-choice tasks (JSONL rows {"prompt", "choices",
"label"}) the way lm-eval scores zero-shot tasks (sum of continuation log-probs; acc_norm
divides by the continuation's length in characters). `run_lm_eval` wraps the same model into
an `lm_eval.api.model.LM` and runs hub tasks (WinoGrande, ARC, ...) when lm-eval is installed
(`pip install lm-eval`); without it, a clear SsahError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.data.chat import prompt_text
from ssah.errors import SsahError


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def _max_len(model: PreTrainedModel, cap: int | None) -> int:
    n = getattr(model.config, "max_position_embeddings", None) or 2048
    return min(n, cap) if cap else n


@torch.inference_mode()
def score_ids(
    model: PreTrainedModel,
    pairs: Sequence[tuple[list[int], list[int]]],
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[tuple[float, bool, int]]:
    """For (context ids, continuation ids): (sum log p(continuation), greedy?, n tokens).

    The context is cut from the left when the pair is longer than the model's window.
    """
    limit = _max_len(model, max_length)
    dev = _device(model)
    out: list[tuple[float, bool, int]] = [(0.0, True, 0)] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            seqs, spans = [], []
            for i in idx:
                ctx, cont = pairs[i]
                if not cont:
                    raise SsahError("loglikelihood: empty continuation.")
                full = (ctx + cont)[-(limit + 1) :]
                seqs.append(full[:-1])
                spans.append((len(full) - 1 - len(cont), len(cont), full[-len(cont) :]))
            width = max(len(x) for x in seqs)
            ids = torch.zeros((len(seqs), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, x in enumerate(seqs):
                ids[r, : len(x)] = torch.tensor(x)
                mask[r, : len(x)] = 1
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
            logp = F.log_softmax(logits, dim=-1)
            for r, (i, (start, n, target)) in enumerate(zip(idx, spans, strict=True)):
                lp = logp[r, start : start + n]
                tgt = torch.tensor(target, device=lp.device)
                total = lp.gather(-1, tgt[:, None]).sum().item()
                greedy = bool((lp.argmax(-1) == tgt).all().item())
                out[i] = (total, greedy, n)
    finally:
        model.train(was_training)
    return out


def loglikelihood(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, str]],
    batch_size: int = 16,
) -> list[tuple[float, bool]]:
    """lm-eval's `loglikelihood`: (context, continuation) strings -> (log p, is greedy)."""
    pairs = []
    for ctx, cont in requests:
        c = tok(ctx, add_special_tokens=False)["input_ids"] if ctx else []
        if not c and tok.bos_token_id is not None:
            c = [tok.bos_token_id]
        pairs.append((c, tok(cont, add_special_tokens=False)["input_ids"]))
    return [(lp, g) for lp, g, _ in score_ids(model, pairs, batch_size)]


def rolling_loglikelihood(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 8
) -> list[float]:
    """lm-eval's `loglikelihood_rolling`: total log p of each text, in non-overlapping windows."""
    limit = _max_len(model, None)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        pairs, prev = [], bos
        for s in range(0, len(ids), limit - 1):
            chunk = ids[s : s + limit - 1]
            pairs.append((prev[-1:] if prev else [], chunk))
            prev = chunk
        out.append(sum(lp for lp, _, _ in score_ids(model, pairs, batch_size)))
    return out


def multiple_choice(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    items: Sequence[dict[str, Any]],
    chat: bool = True,
    system_prompt: str | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """Zero-shot multiple choice: {"acc", "acc_norm"} over items {"prompt","choices","label"}."""
    if not items:
        raise SsahError("multiple-choice task has no items.")
    reqs, owners = [], []
    for n, it in enumerate(items):
        choices, label = it.get("choices"), it.get("label")
        if not choices or not isinstance(label, int) or not 0 <= label < len(choices):
            raise SsahError(
                f"multiple-choice item {n} needs `choices` (a list) and an int `label` in range."
            )
        ctx = prompt_text(tok, it["prompt"], system_prompt) if chat else it["prompt"]
        for c in choices:
            reqs.append((ctx, str(c) if chat else " " + str(c)))
            owners.append(n)
    scores = loglikelihood(model, tok, reqs, batch_size)
    acc = acc_norm = 0
    k = 0
    for it in items:
        m = len(it["choices"])
        lps = [scores[k + j][0] for j in range(m)]
        lens = [max(len(str(c)), 1) for c in it["choices"]]
        acc += int(max(range(m), key=lambda j: lps[j]) == it["label"])
        acc_norm += int(max(range(m), key=lambda j: lps[j] / lens[j]) == it["label"])
        k += m
    return {"acc": acc / len(items), "acc_norm": acc_norm / len(items)}


def _require_lm_eval() -> Any:
    try:
        import lm_eval  # noqa: F401
        from lm_eval.api.model import LM
    except ImportError:
        raise SsahError(
            "lm-evaluation-harness is not installed; `pip install lm-eval` (or set "
            "eval.utility.lm_eval=null to skip hub benchmarks)."
        ) from None
    return LM


def harness_lm(model: PreTrainedModel, tok: PreTrainedTokenizerBase, batch_size: int = 16) -> Any:
    """An `lm_eval.api.model.LM` backed by the in-memory model (imports lm-eval lazily)."""
    LM = _require_lm_eval()
    from ssah.eval.generation import generate_ids

    class SsahLM(LM):  # type: ignore[misc, valid-type]
        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list:
            return loglikelihood(model, tok, [tuple(r.args[:2]) for r in requests], batch_size)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list:
            return rolling_loglikelihood(model, tok, [r.args[0] for r in requests], batch_size)

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            outs = []
            for r in requests:
                ctx, kw = r.args[0], (r.args[1] if len(r.args) > 1 else {}) or {}
                ids = tok(ctx, add_special_tokens=False)["input_ids"]
                n = int(kw.get("max_gen_toks", 256))
                text = generate_ids(model, tok, [ids], max_new_tokens=n, batch_size=1)[0].text
                for stop in kw.get("until", []) or []:
                    text = text.split(stop)[0]
                outs.append(text)
            return outs

    return SsahLM()


def run_lm_eval(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    limit: int | None = None,
    num_fewshot: int = 0,
    batch_size: int = 16,
) -> dict[str, float]:
    """lm-eval tasks on the in-memory model -> {"utility/lm_eval/<task>/<metric>": value}."""
    lm = harness_lm(model, tok, batch_size)
    from lm_eval import simple_evaluate

    res = simple_evaluate(model=lm, tasks=list(tasks), limit=limit, num_fewshot=num_fewshot)
    out: dict[str, float] = {}
    for task, vals in (res or {}).get("results", {}).items():
        for k, v in vals.items():
            if isinstance(v, int | float) and not k.endswith("_stderr,none") and "stderr" not in k:
                out[f"utility/lm_eval/{task}/{k.split(',')[0]}"] = float(v)
    accs = [v for k, v in out.items() if k.endswith("/acc") and math.isfinite(v)]
    if accs:
        out["utility/lm_eval/avg_acc"] = sum(accs) / len(accs)
    return out
