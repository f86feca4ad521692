"""GGUF -> an ordinary safetensors HF checkpoint, with the chat model's stop token fixed.

Why the fix: transformers' GGUF tokenizer reader takes eos from the GGUF metadata, which for
SmolLM2-Instruct names `<|im_start|>`; generation would then never stop at the end of a turn
and training would teach the wrong stop token. The chat template ends every turn with
`<|im_end|>`, so that is eos (and pad) in the tokenizer, the model config and the generation
config.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

from ssah.errors import SsahError

END_OF_TURN = "<|im_end|>"


def fix_stop_tokens(model: Any, tok: Any, eos: str = END_OF_TURN) -> int:
    """Make `eos` the eos and pad token everywhere; returns its id."""
    eos_id = tok.convert_tokens_to_ids(eos)
    if eos_id is None or eos_id == tok.unk_token_id:
        raise SsahError(f"the tokenizer has no token {eos!r}; is this a ChatML chat model?")
    tok.eos_token = eos
    tok.pad_token = eos
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = eos_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = eos_id
        gen.pad_token_id = eos_id
    return int(eos_id)


def convert_gguf(gguf: Path, out: Path, eos: str = END_OF_TURN) -> dict[str, Any]:
    """Dequantise `gguf` to float32 and save it (model + tokenizer) into `out`."""
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise SsahError(
            "the `gguf` package is not installed; `make real-install` installs it "
            "(pip install gguf)."
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    t0 = time.perf_counter()
    # transformers' per-tensor tqdm bar is noise here (the world prints its own lines)
    with patch.object(gguf_utils, "tqdm", lambda it, **_: it):
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    eos_id = fix_stop_tokens(model, tok, eos)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {
        "gguf": gguf.name,
        "eos_token": eos,
        "eos_token_id": eos_id,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "seconds": round(time.perf_counter() - t0, 1),
    }
