"""A 2-process FSDP2 job (gloo, CPU) continued from its sharded checkpoint ends bit-identical
to the same job run without a break: the distributed checkpoint dir, the per-rank data shards
and the optimizer state all come back. The break is a job stopped at step 2 with its
checkpoint kept and its metrics.json removed, i.e. exactly what a kill after step 2 leaves."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
COMMON = [
    "toy=tiny",
    "evaluate=false",
    "save_model=true",
    "logger=csv",
    "trainer=fsdp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "optim.scheduler=constant",  # a schedule over max_steps would differ between 2 and 4 steps
    "optim.warmup_steps=0",
    "task.batch_size=8",
    "checkpoint.every_n_steps=2",
]


def test_fsdp_job_resumes_from_its_sharded_checkpoint_bit_identical(
    tiny_toy, stage_runner, tmp_path
):
    whole, job = tmp_path / "whole", tmp_path / "job"
    res = stage_runner("train", *COMMON, "trainer.max_steps=4", f"hydra.run.dir={whole}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (whole / "checkpoints").exists()  # removed once the job completed
    res = stage_runner(
        "train", *COMMON, "trainer.max_steps=2", "checkpoint.keep=true", f"hydra.run.dir={job}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (job / "checkpoints" / "last.ckpt").is_dir()  # FSDP2: a sharded checkpoint dir
    (job / "metrics.json").unlink()
    res = stage_runner("train", *COMMON, "trainer.max_steps=4", f"hydra.run.dir={job}")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((job / "metrics.json").read_text())
    want = json.loads((whole / "metrics.json").read_text())
    assert got["train/resumed_from_step"] == 2.0 and got["train/steps"] == 4.0
    assert got["train/loss"] == want["train/loss"]
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(job / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed FSDP weights differ"
