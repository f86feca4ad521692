"""Threads per job (ssah.threads): `threads: auto` takes what the job was given, never more."""

from __future__ import annotations

import json

import pytest
import torch

from ssah.errors import SsahError
from ssah.threads import joblib_share, limits, resolve


def test_auto_is_the_tightest_limit():
    assert resolve("auto", None, env={}, cores=8) == 8
    assert resolve("auto", None, env={"SLURM_CPUS_PER_TASK": "3"}, cores=8) == 3
    assert resolve("auto", {"cpus_per_task": 2}, env={}, cores=8) == 2
    assert resolve("auto", {"cpus_per_task": None}, env={}, cores=8) == 8  # unset: no bound
    assert resolve("auto", {"n_jobs": 3}, env={}, cores=8) == 2  # 8 cores // 3 jobs
    assert resolve("auto", None, env={"OMP_NUM_THREADS": "1"}, cores=8) == 1
    assert resolve(None, None, env={}, cores=4) == 4


def test_parallel_local_jobs_never_exceed_the_cores():
    for cores in (1, 2, 3, 8, 64):
        for n_jobs in (1, 2, 3, 5, -1, -2):
            k = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
            per_job = resolve("auto", {"n_jobs": n_jobs}, env={}, cores=cores)
            assert per_job >= 1
            assert per_job * min(k, cores) <= cores, (cores, n_jobs, per_job)
    assert joblib_share(-1, 2) == 1 and joblib_share(1, 2) == 2


def test_cpu_ddp_ranks_share_the_job_but_omp_stays_per_process():
    assert resolve("auto", None, env={}, cores=8, ranks=2) == 4
    assert resolve("auto", {"cpus_per_task": 4}, env={}, cores=8, ranks=2) == 2
    # a rank started by its parent inherits OMP_NUM_THREADS = the share already
    assert resolve("auto", None, env={"OMP_NUM_THREADS": "4"}, cores=8, ranks=2) == 4
    assert set(limits(None, {}, 8, ranks=2)) == {"cores / 2 ranks"}


def test_explicit_count_and_bad_values():
    assert resolve(3, None, env={"OMP_NUM_THREADS": "1"}, cores=2) == 3  # explicit wins
    assert resolve("2", None, env={}, cores=8) == 2
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(SsahError, match="threads="):
            resolve(bad, None, env={}, cores=8)


def test_apply_sets_torch_env_and_metrics(monkeypatch, tmp_path):
    from ssah import threads
    from ssah.metrics import write_metrics

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setattr(threads, "machine_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        write_metrics(tmp_path, {"a/b": 1.0})
        assert "env/torch_threads" not in json.loads((tmp_path / "metrics.json").read_text())
        assert threads.apply({"threads": 2}) == 2
        assert torch.get_num_threads() == 2
        import os

        assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["MKL_NUM_THREADS"] == "2"
        write_metrics(tmp_path, {"a/b": 1.0})
        m = json.loads((tmp_path / "metrics.json").read_text())
        assert m["env/torch_threads"] == 2 and m["env/cores"] == 2 and m["a/b"] == 1.0
        with pytest.raises(SsahError):
            threads.apply({"threads": "lots"})
    finally:
        torch.set_num_threads(before)


def test_bad_threads_value_is_one_line_at_the_stage_door(stage_runner, outputs_dir):
    res = stage_runner("transfer", "threads=lots", "a=x", "b=y", timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: threads='lots'")


def test_waves_never_run_more_threads_than_cores():
    from ssah.localsweep import plan_waves

    for cores in (1, 2, 3, 8):
        for k in (1, 2, 3, 5, 16):
            for given in (None, 1, 2, 4, 100):
                per_job, at_once = plan_waves(k, cores, given)
                assert per_job >= 1 and at_once >= 1
                assert per_job * at_once <= cores, (cores, k, given)
    assert plan_waves(1, 2, None) == (2, 1)  # one job gets both cores
    assert plan_waves(2, 2, None) == (1, 2)
    assert plan_waves(5, 2, None) == (1, 2)


def test_local_sweep_callback_caps_batches_and_passes_the_share(monkeypatch):
    """On a 2-core machine, a 3-job submitit_local sweep runs 2 at a time, 1 thread each."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ssah import localsweep
    from ssah.cli import CONF_DIR

    monkeypatch.setattr(localsweep, "machine_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
        cfg = compose("train", ["hydra/launcher=submitit_local"], return_hydra_config=True)
    from omegaconf import open_dict, read_write

    with read_write(cfg), open_dict(cfg):
        cfg.hydra.overrides.task = ["seed=0,1,2"]  # as `-m seed=0,1,2` leaves it
    assert localsweep.count_jobs(cfg) == 3
    cb = localsweep.LocalSweep()
    assert cb._share(cfg) == 1
    assert cfg.hydra.sweeper.max_batch_size == 2
    cb._set_env(1)
    try:
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        cb.on_multirun_end(cfg)
    assert "OMP_NUM_THREADS" not in __import__("os").environ


def test_joblib_with_more_jobs_than_cores_runs_batches_of_cores(monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ssah import localsweep
    from ssah.cli import CONF_DIR

    monkeypatch.setattr(localsweep, "machine_cores", lambda: 2)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
        cfg = compose(
            "train", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"], return_hydra_config=True
        )
    assert localsweep.LocalSweep()._share(cfg) == 1
    assert cfg.hydra.sweeper.max_batch_size == 2  # 2 cores: 2 one-thread jobs at once
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
        cfg = compose("train", ["hydra/launcher=joblib"], return_hydra_config=True)
    assert localsweep.LocalSweep()._share(cfg) == 1  # conf: n_jobs 2 on 2 cores
    assert cfg.hydra.sweeper.max_batch_size == 2


def test_worker_count_fills_the_cores_at_the_given_threads() -> None:
    from ssah.threads import worker_count

    assert worker_count("auto", 1, cores=2) == 2
    assert worker_count(None, 2, cores=8) == 4
    assert worker_count("auto", 4, cores=2) == 1  # never zero
    assert worker_count(3, 1, cores=2) == 3  # a number is taken as given
