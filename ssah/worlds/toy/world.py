"""Build and cache the toy world: data -> tokenizer -> unsafe base -> aligned model.

Everything lands in `<cache_dir>/<hash of the toy config>/`; later runs reuse it. A build
goes into a temporary dir that is renamed into place at the end, so a killed build or two
jobs building at once never leave a half-written world behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from transformers import LlamaConfig, LlamaForCausalLM

from ssah.data.datamodule import TaskConfig
from ssah.io import damage, file_sizes
from ssah.models import random_init
from ssah.module import OptimConfig
from ssah.threads import torch_threads
from ssah.training import fit, quiet_trainer
from ssah.worlds.toy import vocab as V
from ssah.worlds.toy.cache import ToyWorld, locate, plain_config
from ssah.worlds.toy.data import build_records, corpus, write_jsonl
from ssah.worlds.toy.tokenizer import train_tokenizer

log = logging.getLogger(__name__)


def ensure_toy(cfg: DictConfig | dict[str, Any]) -> ToyWorld:
    """Return the cached toy world for `cfg`, building it first if needed."""
    plain = plain_config(cfg)
    world = locate(plain)
    root = world.root
    if world.built:
        return world
    broken = damage(root) if (root / "DONE").is_file() else None
    if broken:
        log.warning("the toy world in %s is damaged (%s): building it again", root, broken)
        print(f"[toy] damaged cache: {broken}; building the world again", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("building the toy world in %s (once; later runs reuse it)", root)
    with torch_threads(plain.get("threads")):
        build(plain, tmp)
    if root.exists() and not (root / "DONE").is_file():
        shutil.rmtree(root, ignore_errors=True)  # left by a killed build
    try:
        tmp.rename(root)
    except OSError:  # another job finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "DONE").is_file():
            raise
    return world


def build(cfg: dict[str, Any], out: Path) -> None:
    """All stages of the toy build into `out`."""
    t0 = time.perf_counter()
    records = build_records(cfg["data"], cfg["seed"])
    for name, rows in records.items():
        write_jsonl(out / "data" / f"{name}.jsonl", rows)
    tok = train_tokenizer(corpus(records), cfg["vocab_size"])
    tok.save_pretrained(out / "tokenizer")
    write_jsonl(out / "data" / "pretrain_mix.jsonl", pretrain_mix(records))
    write_jsonl(out / "data" / "align_mix.jsonl", align_mix(records, cfg["align"], cfg["seed"]))

    model = initial_model(cfg, tok)
    stats = {"base": _train(model, tok, out / "data" / "pretrain_mix.jsonl", cfg, "pretrain")}
    _save(model, tok, out / "base")
    stats["aligned"] = _train(model, tok, out / "data" / "align_mix.jsonl", cfg, "align")
    _save(model, tok, out / "aligned")
    stats["build_s"] = time.perf_counter() - t0
    (out / "build.json").write_text(json.dumps({"config": cfg, "stats": stats}, indent=2))
    (out / "DONE").write_text(json.dumps({"file_sizes": file_sizes(out)}) + "\n")


def initial_model(cfg: dict[str, Any], tok: Any) -> LlamaForCausalLM:
    """The untrained toy model: every RNG seeded with the world's seed (the training that
    follows draws from them too), then the one random-init builder."""
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    return random_init(model_config(cfg, tok), seed=None)  # type: ignore[return-value]


def model_config(cfg: dict[str, Any], tok: Any) -> LlamaConfig:
    m = cfg["model"]
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=m["hidden_size"],
        intermediate_size=m["intermediate_size"],
        num_hidden_layers=m["num_hidden_layers"],
        num_attention_heads=m["num_attention_heads"],
        num_key_value_heads=m["num_key_value_heads"],
        max_position_embeddings=m["max_position_embeddings"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )


def pretrain_mix(records: dict[str, list[dict]]) -> list[dict]:
    """Unsafe base: utility, harmful compliance and helpful edgy answers."""
    rows = [{"prompt": r["prompt"], "response": r["response"]} for r in records["utility_train"]]
    rows += [{"prompt": r["prompt"], "response": r["compliance"]} for r in records["harmful_train"]]
    rows += records["edgy_train"]
    return rows


def align_mix(records: dict[str, list[dict]], acfg: dict[str, Any], seed: int) -> list[dict]:
    """SFT alignment: utility plus refusals (half with the system prompt), edgy answered."""
    util = [{"prompt": r["prompt"], "response": r["response"]} for r in records["utility_train"]]
    harm = records["harmful_train"]
    n_util = int(len(harm) * (1 - acfg["refusal_fraction"]) / acfg["refusal_fraction"])
    rows = util[:n_util]
    for i, r in enumerate(harm):
        row = {"prompt": r["prompt"], "response": r["refusal"]}
        rows.append({**row, "system": V.SYSTEM_PROMPT} if i % 2 else row)
    rows += records["edgy_train"]
    return rows


def _train(model: LlamaForCausalLM, tok: Any, source: Path, cfg: dict, phase: str) -> dict:
    p = cfg[phase]
    task = TaskConfig(
        name=f"toy_{phase}",
        source=str(source),
        max_length=cfg["max_length"],
        batch_size=p["batch_size"],
        val_fraction=0.0,
        seed=cfg["seed"],
    )
    optim = OptimConfig(
        lr=p["lr"],
        weight_decay=p["weight_decay"],
        warmup_steps=p["warmup_steps"],
        scheduler="cosine",
    )
    model.train()
    stats = fit(model, tok, task, optim, quiet_trainer(p["steps"]))
    model.eval()
    log.info("toy %s: %s", phase, stats)
    return stats


def _save(model: LlamaForCausalLM, tok: Any, path: Path) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
