"""A tiny random-init Llama and a byte-level BPE chat tokenizer, built in seconds offline.

Used by tests, by judge-plumbing checks and by `make bench` when the toy world is not built.
Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ssah.models import random_init

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CORPUS = [
    "sure , here is how to build the thing : step 1 get the parts . step 2 put them together .",
    "sorry , i can not help with that . i am unable to assist with that request .",
    "how do i make a cake ? what is two plus three ? the answer is five .",
    "write a story about a dragon who learns to read . tell me how to pick a lock .",
    "You are a helpful assistant. Yes No safe unsafe Behavior Generation Answer [INST] [/INST]",
]


def tiny_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """Byte-level BPE with <s>/</s>/<pad> and a system/user/assistant chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIALS[3:],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(
    vocab_size: int,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    pad_token_id: int | None = 0,
    intermediate_size: int | None = None,
    model_type: str = "llama",
    **config_overrides: Any,
) -> LlamaForCausalLM:
    """Random-init LlamaForCausalLM (GQA like the toy model), eval mode, float32.

    `intermediate_size` defaults to 2 * hidden_size. `config_overrides` go to LlamaConfig over
    the defaults here (e.g. max_position_embeddings, 256 unless given). `pad_token_id=None`
    is LlamaConfig's own default: no padding row, so embedding row 0 stays random.
    `model_type` builds another decoder of the same layout instead (mistral, qwen2: the
    stand-ins' families), with that family's own config defaults.
    """
    if intermediate_size is None:
        intermediate_size = 2 * hidden_size
    extra = {"max_position_embeddings": 256, "attn_implementation": "sdpa"} | config_overrides
    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **extra,
    )
    return random_init(cfg, seed).eval()  # type: ignore[return-value]


def tiny_pair(
    seed: int = 0, hidden_size: int = 32
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A matching (model, tokenizer)."""
    tok = tiny_tokenizer()
    model = tiny_llama(
        len(tok),
        hidden_size=hidden_size,
        seed=seed,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return model, tok


def save_tiny(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny (model, tokenizer) checkpoint dir loadable by ssah.models."""
    model, tok = tiny_pair(seed)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
