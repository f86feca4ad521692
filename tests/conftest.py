"""Shared fixtures: a seconds-scale toy world (toy=tiny) built once per test session in a tmp
outputs dir, tiny random-init models, and a helper to run stages as real CLI subprocesses."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# One thread per process: tests run tiny models, often beside a subprocess or a second rank,
# and OpenMP threads spinning against each other on 2 cores cost far more than they give.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# Tests compose configs naming world paths (`${toy:...}`) without passing the stage door,
# which is what registers the worlds' resolvers in a run (ssah.config.compose knows no world).
from ssah.worlds.resolvers import register_world_resolvers  # noqa: E402

register_world_resolvers()

# `eval_overrides=` of a toy plan test whose subject is the plan, not the attacks: the direct
# suite only (both system prompt modes, so safety/asr/avg stays) and 8 new tokens, about a
# quarter of a row's evaluation time. The attack suites are tested in tests/test_eval_suite.py.
CHEAP_EVAL = (
    "['eval.suites.jailbreak=null','eval.suites.poem=null','eval.suites.purpose=null',"
    "'eval.suites.prefill=null','eval.generation.max_new_tokens=8']"
)


@pytest.fixture(autouse=True)
def _one_thread_after_each_test():
    """A test that runs a stage in-process passes its door, which applies `threads`: put the
    process back to one thread and no recorded run env, so later tests see neither."""
    yield
    import ssah.threads

    ssah.threads._applied = None
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def outputs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All stage outputs of this test session (never the repo's outputs/)."""
    out = tmp_path_factory.mktemp("outputs")
    os.environ["SSAH_OUTPUTS"] = str(out)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return out


@pytest.fixture(scope="session")
def tiny_toy(outputs_dir: Path):
    """The tiny toy world (built once, ~15 s): data, tokenizer, base and aligned checkpoints."""
    from ssah.config import compose
    from ssah.worlds.toy.world import ensure_toy

    cfg = compose("toy", ["toy=tiny"])
    return ensure_toy(cfg.toy)


@pytest.fixture(scope="session")
def toy_tokenizer(tiny_toy):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_toy.path("tokenizer"))


def run_stage(stage: str, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m ssah.<stage> overrides...` as a user would run it; output captured."""
    cmd = [sys.executable, "-m", f"ssah.{stage}", *overrides]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def stage_runner(outputs_dir: Path):
    return run_stage


@functools.cache
def slurm_unreachable() -> str | None:
    """Why no SLURM cluster can take jobs from here (None: one can; `sinfo` sees an idle node)."""
    if shutil.which("sinfo") is None:
        return "no `sinfo` on PATH"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`sinfo` did not answer in 30 s"
    states = r.stdout.split()
    if r.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"`sinfo` shows no usable node ({(r.stderr or r.stdout).strip()[:80] or 'none'})"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `slurm` need a cluster (make test starts one, .ci/slurm-cluster): skipped
    with a one-line reason without one, but failed when CI is set (CI never skips silently).
    Checked before any fixture is built."""
    if item.get_closest_marker("slurm") is None:
        return
    why = slurm_unreachable()
    if why is None:
        return
    msg = f"no SLURM cluster: {why}; start one with `.ci/slurm-cluster up` (root)"
    if os.environ.get("CI"):
        pytest.fail(msg + " [CI is set: slurm tests must run]", pytrace=False)
    pytest.skip(msg)
