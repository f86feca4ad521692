"""The harmful-ratio fine-tuning task (benign + share p of harmful records) and its held-out
score (experiments/freeze_budget)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from ssah.config import compose
from ssah.data.datamodule import ChatDataModule, TaskConfig
from ssah.errors import SsahError
from ssah.eval.tiny import tiny_llama
from ssah.training import heldout_loss


def jsonl(path, tag: str, n: int):
    path.write_text(
        "".join(
            json.dumps({"prompt": f"{tag} q {i}", "response": f"{tag} a {i}"}) + "\n"
            for i in range(n)
        )
    )
    return str(path)


@pytest.fixture
def files(tmp_path):
    return jsonl(tmp_path / "benign.jsonl", "benign", 50), jsonl(
        tmp_path / "harm.jsonl", "harm", 12
    )


def module(tok, files, p: float, seed: int = 3) -> ChatDataModule:
    benign, harm = files
    task = TaskConfig(
        name="mix", source=benign, batch_size=4, val_fraction=0.2, seed=seed,
        mix_source=harm, mix_ratio=p, heldout_eval=True,
    )  # fmt: skip
    dm = ChatDataModule(tok, task)
    dm.setup()
    return dm


def texts(tok, rows) -> list[str]:
    return [tok.decode(r["input_ids"]) for r in rows]


def test_mix_replaces_a_share_p_of_training_rows_and_keeps_the_heldout_split_pure(
    toy_tokenizer, files
):
    pure, mixed = module(toy_tokenizer, files, 0.0), module(toy_tokenizer, files, 0.1)
    assert len(pure.train_rows) == len(mixed.train_rows) == 40 and len(mixed.val_rows) == 10
    harm = [t for t in texts(toy_tokenizer, mixed.train_rows) if "harm" in t]
    assert len(harm) == 4 == mixed.summary["task/mixed_rows"]  # round(0.1 * 40)
    assert not any("harm" in t for t in texts(toy_tokenizer, pure.train_rows))
    assert pure.val_rows == mixed.val_rows  # the same held-out split for every p
    assert not any("harm" in t for t in texts(toy_tokenizer, mixed.val_rows))
    benign_kept = [t for t in texts(toy_tokenizer, mixed.train_rows) if "harm" not in t]
    assert benign_kept == texts(toy_tokenizer, pure.train_rows)[:36]
    again = module(toy_tokenizer, files, 0.1)
    assert again.train_rows == mixed.train_rows  # seeded
    assert module(toy_tokenizer, files, 0.1, seed=4).train_rows != mixed.train_rows
    assert mixed.summary["task/mix_ratio"] == 0.1 and mixed.summary["task/heldout_rows"] == 10


def test_too_few_harmful_records_is_refused(toy_tokenizer, files):
    with pytest.raises(SsahError, match="has 12"):
        module(toy_tokenizer, files, 0.5)  # 20 of 40 needed


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"mix_ratio": 0.1}, "mix_source"),
        ({"mix_ratio": 1.0, "mix_source": "x"}, "mix_ratio=1.0"),
        ({"heldout_eval": True, "val_fraction": 0.0}, "val_fraction"),
    ],
)
def test_bad_mix_settings_name_the_key(kw, match):
    with pytest.raises(SsahError, match=match):
        TaskConfig(name="t", source="x.jsonl", **kw)


def test_heldout_loss_is_the_mean_loss_per_response_token(toy_tokenizer, files):
    dm = module(toy_tokenizer, files, 0.1)
    model = tiny_llama(len(toy_tokenizer), layers=1, seed=0, pad_token_id=None)
    got = heldout_loss(model, dm)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for r in dm.val_rows:  # one row at a time: HF's loss is then the per-token mean
            ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            tokens += n
    assert got["task/heldout_tokens"] == tokens
    assert got["task/heldout_loss"] == pytest.approx(total / tokens, rel=1e-5)


def test_the_conf_task_composes():
    node = compose("train", ["task=smollm2_benign_mix", "task.mix_ratio=0"]).task
    d = OmegaConf.to_container(node, resolve=False)
    assert d["mix_ratio"] == 0 and d["heldout_eval"] and d["val_fraction"] == 0.1
    assert (
        d["mix_source"].endswith("/ft_harmful.jsonl") and "harmbench" not in d["mix_source"].lower()
    )
    assert set(d) <= set(TaskConfig.__dataclass_fields__)
