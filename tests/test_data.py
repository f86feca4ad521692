"""Prompt masking, collation and the datamodule."""

from __future__ import annotations

import json

import torch

from ssah.data.chat import IGNORE, collate, encode_example, encode_prompt
from ssah.data.datamodule import ChatDataModule, TaskConfig


def test_labels_mask_exactly_the_prompt(toy_tokenizer):
    ex = encode_example(toy_tokenizer, "what is 2 plus 2 ?", "the answer is 4 .")
    n_prompt = len(encode_prompt(toy_tokenizer, "what is 2 plus 2 ?"))
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == toy_tokenizer.eos_token_id
    assert toy_tokenizer.decode(ex["input_ids"][n_prompt:-1]) == "the answer is 4 ."


def test_collate_right_pads(toy_tokenizer):
    rows = [
        encode_example(toy_tokenizer, "hi", "a"),
        encode_example(toy_tokenizer, "hi", "a b c d"),
    ]
    batch = collate(rows, pad_id=toy_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = len(rows[0]["input_ids"])
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE).all()
    assert batch["attention_mask"][1].all()


def test_datamodule_split_is_seeded_and_batches_have_masks(toy_tokenizer, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(
        "".join(json.dumps({"prompt": f"q {i}", "response": f"a {i}"}) + "\n" for i in range(40))
    )
    task = TaskConfig(name="t", source=str(src), batch_size=4, val_fraction=0.25, seed=3)
    dm = ChatDataModule(toy_tokenizer, task)
    dm.setup()
    assert len(dm.train_rows) == 30 and len(dm.val_rows) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    assert (batch["labels"] != IGNORE).any() and (batch["labels"] == IGNORE).any()
    dm2 = ChatDataModule(toy_tokenizer, task)
    dm2.setup()
    assert dm2.val_rows == dm.val_rows
    b2 = next(iter(dm2.train_dataloader()))
    assert torch.equal(b2["input_ids"], batch["input_ids"])
