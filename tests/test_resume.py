"""Resumable training: a job that dies after its last checkpoint and is re-run in the same dir
ends bit-identical to a run that was never interrupted (weights, loss, freeze counters), and
the data sampler replays exactly the order a seeded shuffling DataLoader gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ssah import checkpointing
from ssah.config import compose
from ssah.data.sampler import ResumableSampler
from ssah.errors import SsahError
from ssah.freeze.synthetic import synthetic_units
from ssah.tracking import offline_runs
from ssah.train import run


class Recorder(pl.LightningModule):
    """Trains nothing; records the batches Lightning feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.tolist())
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _lightning_order(loader: DataLoader, steps: int) -> list[list[int]]:
    from ssah.training import quiet_trainer

    module = Recorder()
    quiet_trainer(max_steps=steps).fit(module, train_dataloaders=loader)
    return module.seen


def test_sampler_replays_a_seeded_shuffling_dataloader_under_lightning():
    """Same batches as before the sampler existed, across epochs: the toy world is unchanged."""
    n, bs, seed = 37, 4, 3
    old = DataLoader(
        list(range(n)),
        batch_size=bs,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=True,
    )
    new = DataLoader(
        list(range(n)), batch_size=bs, sampler=ResumableSampler(n, seed), drop_last=True
    )
    want = _lightning_order(old, 30)  # 9 batches an epoch: 3 epochs and a part
    assert _lightning_order(new, 30) == want
    assert want[9] != want[0]  # a new epoch reshuffles


def test_sampler_resumes_mid_epoch_without_repeats_or_gaps():
    full = ResumableSampler(20, seed=1)
    full.set_epoch(2)
    order = list(full)
    first = ResumableSampler(20, seed=1)
    first.set_epoch(2)
    it = iter(first)
    seen = [next(it) for _ in range(7)]
    state = first.state_dict()
    second = ResumableSampler(20, seed=1)
    second.load_state_dict(state)
    second.set_epoch(2)  # Lightning calls this on resume with the restored epoch
    assert seen + list(second) == order
    second.set_epoch(3)  # the next epoch starts from its beginning
    assert len(list(second)) == 20
    with pytest.raises(SsahError, match="same task and seed"):
        ResumableSampler(21, seed=1).load_state_dict(state)


class Crash(pl.Callback):
    """Kills training (an exception, as a node failure would) when it reaches `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError(f"simulated kill at step {self.at}")


def _train(out: Path, overrides: list[str]) -> dict:
    cfg = compose("train", overrides)
    return run(cfg, out)


@pytest.mark.slow
def test_killed_job_resumes_from_its_checkpoint_bit_identical(
    tiny_toy, outputs_dir, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM

    units = synthetic_units(
        AutoModelForCausalLM.from_pretrained(str(tiny_toy.path("aligned"))),
        tmp_path / "units.safetensors",
        seed=2,
    )
    common = [
        "toy=tiny",
        "evaluate=false",
        "save_model=true",
        "trainer.max_steps=6",  # x2 epochs_multiplier of scu_all_cu: 12 steps, > 1 epoch
        "task.batch_size=8",
        "checkpoint.every_n_steps=4",
        "freeze=scu_all_cu",
        f"freeze.units={units}",
    ]
    whole = _train(tmp_path / "whole", common)

    job = tmp_path / "job"
    real = checkpointing.callbacks
    monkeypatch.setattr(
        checkpointing, "callbacks", lambda cfg, out: [*real(cfg, out), Crash(at=10)]
    )
    with pytest.raises(RuntimeError, match="simulated kill"):
        _train(job, common)
    assert (job / "checkpoints" / "last.ckpt").is_file()
    assert not (job / "metrics.json").exists()
    monkeypatch.setattr(checkpointing, "callbacks", real)

    resumed = _train(job, common)
    assert resumed["train/resumed_from_step"] == 8.0
    assert whole["train/resumed_from_step"] == 0.0
    assert resumed["train/steps"] == whole["train/steps"] == 12.0
    assert resumed["train/loss"] == whole["train/loss"]
    for key in ("freeze/restored_steps", "freeze/verify_checks", "freeze/final_check"):
        assert resumed[key] == whole[key], key
    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(job / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert not (job / "checkpoints").exists()  # removed once metrics.json is written
    assert json.loads((job / "metrics.json").read_text())["train/resumed_from_step"] == 8.0
    ids = {p.parent.name.rsplit("-", 1)[-1] for p in offline_runs(job)}
    assert len(ids) == 1, f"the resumed job started a second W&B run: {ids}"


def test_half_written_checkpoint_is_refused_in_one_line_and_kept(tmp_path):
    cfg = checkpointing.CheckpointConfig(every_n_steps=2)
    last = cfg.dir(tmp_path) / checkpointing.LAST
    last.parent.mkdir()
    last.write_bytes(b"PK\x03\x04 truncated by a kill")
    with pytest.raises(SsahError, match="cannot resume from .*checkpoint.resume=false"):
        checkpointing.resume_path(cfg, tmp_path)
    assert last.is_file()  # the user decides what to do with it
    last.unlink()
    last.mkdir()  # an FSDP checkpoint dir without its .metadata
    with pytest.raises(SsahError, match="no .metadata"):
        checkpointing.resume_path(cfg, tmp_path)
    assert checkpointing.resume_path(checkpointing.CheckpointConfig(resume=False), tmp_path) is None


def test_negative_checkpoint_interval_is_refused():
    with pytest.raises(SsahError, match="every_n_steps"):
        checkpointing.CheckpointConfig(every_n_steps=-1)
