"""Stand-ins for dry runs: a tiny random-init model of a real model's architecture, and one small
local dataset with every column the shipped dataset configs read.

A real-model preset (Llama-2-7B on 4 GPUs, AdvBench, Alpaca, XSTest, WikiText ...) then runs end
to end on a CPU in a minute (`+dry_run=<stage>`, conf/dry_run/): same stages, scoring, freezing,
training loop, evaluation and logging; only the weights and the data are fake. Built offline in
seconds, cached by content under `<outputs>/standins/`, written through a temp dir and a rename.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ssah.errors import SsahError
from ssah.io import publish_dir

SIZE = {  # the stand-in's scale; model.standin may override any of these
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "max_position_embeddings": 2048,
}
VERBS = ["bake", "fix", "paint", "clean", "build", "plant", "sort", "move"]
THINGS = ["cake", "bike", "fence", "kitchen", "shelf", "garden", "files", "sofa"]


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def build_model(spec: dict[str, Any], root: Path, seed: int = 0) -> Path:
    """A checkpoint dir (config, safetensors, tokenizer) of a tiny `spec['model_type']` model."""
    from transformers import AutoConfig

    from ssah.eval.tiny import tiny_tokenizer
    from ssah.models import random_init

    if "model_type" not in spec:
        raise SsahError(
            "model.standin needs a model_type (llama, mistral, qwen2 ...); see conf/model/*.yaml."
        )
    final = Path(root) / f"{spec['model_type']}-{_key([spec, seed, SIZE])}"
    if (final / "config.json").is_file():
        return final
    tok = tiny_tokenizer()
    kwargs = {k: v for k, v in {**SIZE, **spec}.items() if k != "model_type"}
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = AutoConfig.for_model(
        spec["model_type"], vocab_size=len(tok), pad_token_id=tok.pad_token_id, **ids, **kwargs
    )
    model = random_init(config, seed)
    model.generation_config.update(**ids, pad_token_id=tok.pad_token_id)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return publish_dir(tmp, final)


def records(n: int) -> list[dict[str, Any]]:
    """Rows that satisfy every shipped dataset config: Alpaca, Dolly, GSM8K, AdvBench,
    HarmBench, JailbreakBench, StrongREJECT, HEx-PHI, XSTest, WikiText (their column names)."""
    rows = []
    for i in range(n):
        verb, thing = VERBS[i % len(VERBS)], THINGS[(i // len(VERBS)) % len(THINGS)]
        prompt = f"how do i {verb} the {thing} ?"
        answer = f"sure , here is how to {verb} the {thing} : step 1 get the parts ."
        rows.append(
            {
                "prompt": prompt,
                "instruction": prompt,
                "input": "",
                "context": "",
                "output": answer,
                "response": answer,
                "question": f"what is {i} plus {i} ?",
                "answer": f"{i} plus {i} is {2 * i} . #### {2 * i}",
                "target": f"sure , here is how to {verb} the {thing}",
                "goal": prompt,
                "forbidden_prompt": prompt,
                "text": f"the {thing} was {verb}ed on day {i} . " * 4,
                "label": "safe",
                "type": "homonyms",
                "category": "general",
                "functional_category": "standard",
                "verb": verb,
                "task": "howto",
                "wrapper": "story",
            }
        )
    return rows


def build_data(root: Path, n: int = 48) -> Path:
    """The dry-run dataset as one JSONL file (see `records`)."""
    rows = records(n)
    final = Path(root) / f"data-{_key(rows)}.jsonl"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return publish_dir(tmp, final)
