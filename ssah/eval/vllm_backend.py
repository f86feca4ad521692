"""Optional vLLM generation backend (GPU machines with `pip install vllm`).

vLLM loads weights itself, so it serves a saved checkpoint (`model.name_or_path` or a stage's
saved `model/`), not an in-memory model that was pruned or fine-tuned in this process. Prompts
arrive already chat-formatted as token ids, so both backends see identical inputs.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from ssah.errors import SsahError


def available(model_path: str | None) -> tuple[bool, str]:
    """(usable, why not) for this process."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False, "vllm is not installed (pip install vllm, on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return False, "vllm needs a CUDA GPU and none is visible"
    if not model_path:
        return False, "vllm needs a saved checkpoint path and the model is only in memory"
    return True, ""


class VllmGenerator:
    """Callable like the HF generator: list of prompt-id rows -> generated texts."""

    def __init__(
        self,
        model_path: str,
        tok: PreTrainedTokenizerBase,
        gcfg: dict[str, Any],
        max_new_tokens: int,
        do_sample: bool,
        seed: int,
        temperature: float,
        top_p: float,
    ) -> None:
        from vllm import LLM, SamplingParams

        try:
            self.llm = LLM(
                model=model_path,
                dtype=gcfg.get("dtype", "auto"),
                seed=seed,
                gpu_memory_utilization=float(gcfg.get("gpu_memory_utilization", 0.85)),
                trust_remote_code=False,
            )
        except Exception as e:
            raise SsahError(f"vllm cannot load {model_path!r}: {str(e).splitlines()[0]}") from None
        self.params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=temperature if do_sample else 0.0,
            top_p=top_p if do_sample else 1.0,
            seed=seed,
            skip_special_tokens=True,
        )
        self.tok = tok

    def __call__(self, rows: list[list[int]]) -> list[str]:
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], self.params)
        return [o.outputs[0].text for o in outs]
