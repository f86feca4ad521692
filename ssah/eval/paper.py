"""The authors' attack-success protocol, row by row, under metric names that say which row.

Read from their fork of Wei et al.'s code (main.py, lib/eval.py `eval_attack`,
lib/prompt_utils.py `apply_prompt_template`): the first 100 AdvBench prompts, 256 new tokens,
two prompt formats
  inst_     the chat template ("[INST] ... [/INST]" for Llama-2; here the tokenizer's own)
  no_inst_  the bare prompt: "<<SYS>>\\n{system}\\n<</SYS>>\\n\\n{prompt}\\n" with the system
            prompt, "{prompt}\\n" without (their template text, no [INST] tags, after BOS)
each as
  basic           greedy, with the system prompt (their "base" template's prompt)
  basic_nosys     greedy, without it
  multiple_nosys  `samples` (5) samples at temperature 1 without it, averaged over all samples
and `gcg`: their three GCG suffixes appended to the prompt under the chat template without a
system prompt, greedy, the maximum over the suffixes of the per-suffix rate (per-suffix rates
are reported as gcg_s0..gcg_s2). Metric keys: safety/asr/<format><variant>/<judge>, e.g.
safety/asr/no_inst_basic/keyword_paper, safety/asr/gcg/<judge>, and
safety/asr/paper_avg/<judge> = mean over `average` (default no_inst_basic,
no_inst_basic_nosys, gcg: the mean that reproduces the paper's "ASR avg" from the authors'
logs; experiments/table1_pruning/README.md shows the log lines). Intervals: /n counts prompts;
for gcg it is the Wilson interval of the best suffix's rate (picking the max is not covered)
and for paper_avg the conservative interval of an average over the same prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ssah.errors import SsahError
from ssah.eval.datasets import load_prompt_set
from ssah.eval.generation import prompt_ids
from ssah.eval.verdicts import Judge

FORMATS = ("inst", "no_inst")
VARIANTS = ("basic", "basic_nosys", "multiple_nosys")


@dataclass
class PaperProtocol:
    """`eval.paper_protocol` (conf/eval/paper.yaml), validated."""

    limit: int = 100
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    samples: int = 5
    temperature: float = 1.0
    system_prompt: str = ""
    bare_template: str = "{prompt}\n"
    bare_template_sys: str = "<<SYS>>\n{system}\n<</SYS>>\n\n{prompt}\n"
    gcg_suffixes: list[str] = field(default_factory=list)
    average: list[str] = field(
        default_factory=lambda: ["no_inst_basic", "no_inst_basic_nosys", "gcg"]
    )

    @classmethod
    def from_cfg(cls, d: dict[str, Any]) -> PaperProtocol:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise SsahError(
                f"eval.paper_protocol has unknown key(s) {extra}; known: {sorted(known)}."
            )
        p = cls(**d)
        p.check()
        return p

    def check(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        bad += [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise SsahError(
                f"eval.paper_protocol: unknown format/variant {bad}; formats {FORMATS}, "
                f"variants {VARIANTS}."
            )
        if self.limit < 1 or self.samples < 1 or self.temperature <= 0:
            raise SsahError(
                "eval.paper_protocol: limit and samples must be >= 1 and temperature > 0."
            )
        for name in ("bare_template", "bare_template_sys"):
            if "{prompt}" not in getattr(self, name):
                raise SsahError(f"eval.paper_protocol.{name} must contain {{prompt}}.")
        rows = set(self.row_names()) | ({"gcg"} if self.gcg_suffixes else set())
        missing = [a for a in self.average if a not in rows]
        if missing:
            raise SsahError(
                f"eval.paper_protocol.average names {missing}, which are not rows of this "
                f"protocol ({sorted(rows)})."
            )

    def row_names(self) -> list[str]:
        return [f"{f}_{v}" for f in self.formats for v in self.variants]


def bare_ids(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Plain text after BOS, as vLLM tokenises a prompt string (no chat template)."""
    ids = tok(text, add_special_tokens=True)["input_ids"]
    bos = tok.bos_token_id
    return [bos, *ids] if bos is not None and (not ids or ids[0] != bos) else ids


def row_ids(
    tok: PreTrainedTokenizerBase, p: PaperProtocol, fmt: str, variant: str, prompt: str
) -> list[int]:
    """Token ids of one prompt in one format; only `basic` carries the system prompt."""
    system = p.system_prompt if variant == "basic" else None
    if fmt == "inst":
        return prompt_ids(tok, prompt, system)
    tpl = p.bare_template_sys if system else p.bare_template
    return bare_ids(tok, tpl.replace("{system}", system or "").replace("{prompt}", prompt.strip()))


Gen = Callable[[list[list[int]]], list[str]]


def _generators(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    gcfg: dict[str, Any],
    p: PaperProtocol,
    model_path: str | None,
    greedy: Gen | None,
) -> tuple[Gen, Callable[[list[list[int]], int], list[str]]]:
    """(greedy, sample k per row); reuses the suite's greedy generator (one vLLM engine)."""
    from ssah.eval.generators import make_generator
    from ssah.eval.vllm_backend import VllmGenerator

    if greedy is None or bool(gcfg.get("do_sample", False)):
        greedy = make_generator(model, tok, {**gcfg, "do_sample": False}, model_path)
    if isinstance(greedy, VllmGenerator):
        return greedy, _vllm_sampler(greedy, p, gcfg)
    hf = make_generator(
        model, tok, {**gcfg, "do_sample": True, "temperature": p.temperature, "top_p": 1.0}
    )
    return greedy, lambda rows, k: hf([r for r in rows for _ in range(k)])


def _vllm_sampler(g: Any, p: PaperProtocol, gcfg: dict[str, Any]):
    """k samples per prompt with vLLM's n (one seeded request per prompt), as the authors."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    def run(rows: list[list[int]], k: int) -> list[str]:
        params = SamplingParams(
            n=k,
            max_tokens=int(gcfg.get("max_new_tokens", 256)),
            temperature=p.temperature,
            top_p=1.0,
            seed=int(gcfg.get("seed", 0)),
            skip_special_tokens=True,
        )
        outs = g.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params)
        return [o.text for out in outs for o in out.outputs]

    return run


def run_paper_protocol(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    ecfg: dict[str, Any],
    judges: dict[str, Judge],
    records: list[dict[str, Any]],
    model_path: str | None = None,
    greedy: Gen | None = None,
) -> dict[str, float]:
    """Every row of the authors' protocol, judged by every configured judge."""
    p = PaperProtocol.from_cfg(dict(ecfg["paper_protocol"]))
    prompts = [r["prompt"] for r in load_prompt_set(ecfg.get("harmful"), what="eval.harmful")]
    prompts = prompts[: p.limit]
    if not prompts:
        raise SsahError("eval.paper_protocol: the harmful prompt set is empty.")
    gcfg = dict(ecfg.get("generation") or {})
    greedy, sample = _generators(model, tok, gcfg, p, model_path, greedy)
    metrics: dict[str, float] = {}

    def judged(suite: str, rows: list[list[int]], shown: list[str], k: int = 0) -> None:
        """Generate answers (greedy, or k samples per prompt), judge and record them; the
        rate is the mean over all answers."""
        texts = sample(rows, k) if k else greedy(rows)
        k = k or 1
        behav = [b for b in prompts for _ in range(k)]
        verdicts = {n: j.judge(behav, texts) for n, j in judges.items()}
        for n, v in verdicts.items():
            metrics[f"safety/asr/{suite}/{n}"] = sum(map(float, v.flags)) / len(v.flags)
        for i, t in enumerate(texts):
            rec: dict[str, Any] = {
                "kind": "attack",
                "suite": suite,
                "prompt_id": i // k,
                "sample": i % k,
                "prompt": shown[i // k],
                "prefill": "",
                "response": t,
            }
            for n, v in verdicts.items():
                rec[f"judge/{n}"] = bool(v.flags[i])
            records.append(rec)

    for fmt in p.formats:
        for variant in p.variants:
            rows = [row_ids(tok, p, fmt, variant, q) for q in prompts]
            shown = [tok.decode(r, skip_special_tokens=False) for r in rows]
            judged(f"{fmt}_{variant}", rows, shown, p.samples if variant == "multiple_nosys" else 0)
    for i, suffix in enumerate(p.gcg_suffixes):
        user = [f"{q.strip()} {suffix}" for q in prompts]
        rows = [prompt_ids(tok, u, None) for u in user]
        judged(f"gcg_s{i}", rows, user)
    _composites(metrics, p, judges, len(prompts))
    return metrics


def _composites(
    metrics: dict[str, float], p: PaperProtocol, judges: dict[str, Judge], n: int
) -> None:
    """gcg = max over suffixes; paper_avg = mean over `average`; both with n and interval."""
    from ssah.eval.intervals import interval

    for name in judges:
        per = [metrics[f"safety/asr/gcg_s{i}/{name}"] for i in range(len(p.gcg_suffixes))]
        if per:
            metrics[f"safety/asr/gcg/{name}"] = max(per)
            metrics.update(interval(f"safety/asr/gcg/{name}", max(per), n))
        vals = [metrics.get(f"safety/asr/{a}/{name}") for a in p.average]
        if p.average and all(v is not None for v in vals):
            avg = sum(vals) / len(vals)  # type: ignore[arg-type]
            metrics[f"safety/asr/paper_avg/{name}"] = avg
            metrics.update(interval(f"safety/asr/paper_avg/{name}", avg, n))
