"""Load any Hugging Face causal LM and its tokenizer; nothing else in ssah loads weights.

The toy model is an ordinary local checkpoint and goes through exactly this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ssah.errors import SsahError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class ModelConfig:
    """conf/model/*.yaml: which checkpoint, in which dtype, with which attention kernel."""

    name_or_path: str
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False
    revision: str | None = None
    family: str = "llama"  # free text, for reports
    gradient_checkpointing: bool = False  # training only: trade compute for activation memory
    # training only: run the LM head and the loss on labelled positions alone (not on the
    # prompt): same loss and gradients, less work (ssah/module.py `labelled_loss`)
    head_on_labels_only: bool = False
    standin: dict[str, Any] | None = None  # architecture of a tiny stand-in (ssah.standin)

    @classmethod
    def from_cfg(cls, node: Any) -> ModelConfig:
        """A `model` config group (DictConfig or mapping), resolved, as a ModelConfig."""
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        return cls(**dict(plain))  # type: ignore[arg-type]


def _check_source(name_or_path: str, weights: bool = False) -> None:
    """Fail early on a local path that does not exist, instead of a hub lookup traceback."""
    looks_local = name_or_path.startswith(("/", ".", "~")) or Path(name_or_path).exists()
    if not looks_local:
        return
    local = Path(name_or_path).expanduser()
    if not (local / "config.json").is_file():
        raise SsahError(
            f"model.name_or_path={name_or_path!r} is not a model directory (no config.json); "
            "give a local HF checkpoint dir or a hub id."
        )
    if weights and not any(local.glob("*.safetensors")):
        raise SsahError(
            f"model.name_or_path={name_or_path!r} has config.json but no *.safetensors weights; "
            "save the model with save_pretrained(safe_serialization=True) or point at a "
            "complete checkpoint dir."
        )


def torch_dtype(name: str) -> torch.dtype:
    """Map a dtype name from config to torch."""
    if name not in DTYPES:
        raise SsahError(f"model.dtype={name!r} is unknown; use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SsahError(f"device={name!r} but CUDA is not available; use device=cpu or auto.")
    return torch.device(name)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when the model has none)."""
    _check_source(cfg.name_or_path)
    local = Path(cfg.name_or_path).expanduser()
    if local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise SsahError(
            f"model.name_or_path={cfg.name_or_path!r} has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES)}); save the tokenizer beside the model "
            "(tokenizer.save_pretrained) or point at a complete checkpoint dir."
        )
    try:
        tok = AutoTokenizer.from_pretrained(
            cfg.name_or_path, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision
        )
    except (OSError, AttributeError, ValueError) as e:  # transformers' errors on broken dirs
        raise SsahError(f"cannot load tokenizer {cfg.name_or_path!r}: {_first_line(e)}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig) -> PreTrainedModel:
    """Causal LM from safetensors, in cfg.dtype, eval mode."""
    _check_source(cfg.name_or_path, weights=True)
    kwargs = {}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name_or_path,
            dtype=torch_dtype(cfg.dtype),
            trust_remote_code=cfg.trust_remote_code,
            revision=cfg.revision,
            use_safetensors=True,
            **kwargs,
        )
    except OSError as e:
        raise SsahError(f"cannot load model {cfg.name_or_path!r}: {_first_line(e)}") from None
    return model.eval()


def prepare_for_training(model: PreTrainedModel, cfg: ModelConfig) -> PreTrainedModel:
    """Memory settings that only matter while training (activation checkpointing)."""
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_for_stage(cfg: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelConfig]:
    """A stage's `model` group -> eval-mode model on `cfg.device` (default auto), its
    tokenizer, and the validated ModelConfig."""
    mcfg = ModelConfig.from_cfg(cfg.model)
    tok, model = load_tokenizer(mcfg), load_model(mcfg)
    return model.to(resolve_device(str(cfg.get("device", "auto")))), tok, mcfg


def random_init(config: PretrainedConfig, seed: int | None = 0) -> PreTrainedModel:
    """A causal LM of `config`'s architecture with random weights, built offline in seconds.

    The one random-init builder: the toy world, the stand-ins, the benchmarks and the tests'
    tiny models all come from here, so a change to how models are built happens once. `seed`
    seeds torch's RNG first; None means the caller seeded it already (the toy world seeds every
    RNG with Lightning before building), so the weights stay those it always built.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
