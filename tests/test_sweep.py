"""Sweeps: presets compose and set multirun themselves; a 2x2 sweep through submitit_local
(scores computed once, one W&B group) then the report; resume after a kill."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_stage

# Seconds-scale jobs: tiny toy world, 2 steps, few eval prompts, 16 calibration samples
# (the tiny model's refusals are too rare for the refusal filter, so it is off).
FAST = [
    "toy=tiny",
    "trainer.max_steps=2",
    "scoring=wifv",  # train composes a scoring group (how freeze specs score units)
    "scoring.calibration.safety.require_keywords=[]",
    "scoring.calibration.safety.n_samples=16",
    "scoring.calibration.utility.n_samples=16",
    "eval.harmful.limit=4",
    "eval.benign.limit=4",
    "eval.suites.jailbreak.limit=4",
    "eval.suites.prefill.depths=[0]",
    "eval.utility.generation.data.limit=4",
    "eval.utility.ppl.data.limit=4",
    "eval.generation.max_new_tokens=8",
]
PRESETS = {
    "table1": "prune",
    "table2": "train",
    "table3": "train",
    "table4": "train",
    "freeze_ratio": "train",
    "scorer_ablation": "prune",
}


def wandb_group(run_file: Path) -> str:
    from wandb.proto import wandb_internal_pb2

    from ssah.tracking import _log_records

    for data in _log_records(run_file.read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "run":
            return rec.run.run_group
    return ""


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sets_multirun_and_composes(name, outputs_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from ssah.cli import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name=PRESETS[name]):
        cfg = compose(PRESETS[name], [f"+sweep={name}"], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.sweep_name == name and cfg.skip_completed is True
    params = dict(cfg.hydra.sweeper.params)
    assert params and all(isinstance(v, str) for v in params.values())
    assert cfg.hydra.sweep.dir.endswith(f"sweeps/{name}")


def test_skip_completed_helper(tmp_path):
    from ssah.sweep import completed_metrics, skip_completed, sweep_group

    assert completed_metrics(tmp_path) is None
    (tmp_path / "metrics.json").write_text("{}")
    assert completed_metrics(tmp_path) is None  # empty: not complete
    (tmp_path / "metrics.json").write_text(json.dumps({"utility/accuracy": 0.5}))
    assert skip_completed({"skip_completed": True}, tmp_path) == {"utility/accuracy": 0.5}
    assert skip_completed({"skip_completed": False}, tmp_path) is None
    assert sweep_group(None, "/x/sweeps/table2") == "table2" and sweep_group("g", "/x") == "g"


def test_cache_lock_serialises(tmp_path):

    code = (
        "import sys,time; from ssah.sweep import cache_lock\n"
        "with cache_lock(sys.argv[1]):\n open(sys.argv[2],'a').write('in\\n'); time.sleep(0.5);"
        " open(sys.argv[2],'a').write('out\\n')\n"
    )
    log = tmp_path / "log"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "k"), str(log)], cwd=ROOT)
        for _ in range(2)
    ]
    assert all(p.wait(60) == 0 for p in procs)
    assert log.read_text() == "in\nout\nin\nout\n"


@pytest.mark.slow
def test_2x2_submitit_local_sweep_then_report(tiny_toy, outputs_dir, tmp_path):
    scores = tmp_path / "scores"
    res = run_stage(
        "train",
        "+sweep=table2",
        *FAST,
        "freeze=scu,scu_all_cu",
        "task=toy_benign,toy_harmful",
        "seed=0",
        "sweep_name=t2x2",
        f"paths.score_cache={scores}",
        "hydra/launcher=submitit_local",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = outputs_dir / "sweeps" / "t2x2"
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 4
    # scoring ran once per (model, scoring config): one units file in the score cache
    units = list(scores.glob("*.safetensors"))
    assert len(units) == 1, units
    runs = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 4 and {wandb_group(r) for r in runs} == {"t2x2"}
    rep = run_stage("report", str(sweep), "~logger", timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    md = (sweep / "report.md").read_text()
    for label in ("freeze=scu, task=toy_benign", "freeze=scu_all_cu, task=toy_harmful"):
        assert label in md
    assert "freeze \\ task" in md  # both axes in one table
    assert list(sweep.glob("*.png"))


CLI_WIRED = "skip_completed" in inspect.getsource(__import__("ssah.cli").cli)


@pytest.mark.slow
@pytest.mark.skipif(not CLI_WIRED, reason="lead: wire ssah.sweep.skip_completed into cli.stage()")
def test_killed_sweep_resumes_without_redoing_finished_jobs(tiny_toy, outputs_dir):
    args = [
        "+sweep=table2",
        *FAST,
        "freeze=none",
        "task=toy_benign",
        "seed=0,1,2",
        "sweep_name=resume",
        "~logger",
    ]
    sweep = outputs_dir / "sweeps" / "resume"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssah.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first = sweep / "0" / "metrics.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (sweep / "2" / "metrics.json").exists()
    before = first.stat().st_mtime_ns
    res = run_stage("train", *args, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert first.stat().st_mtime_ns == before  # not redone
    assert "0 already complete" in res.stderr or "skip:" in res.stderr
    assert all((sweep / str(i) / "metrics.json").exists() for i in range(3))


EXPERIMENTS = {
    "table1_pruning": ("prune", "table1"),
    "table2_freezing": ("train", "table2"),
    "table3_peft": ("train", "table3"),
    "table4_alignment_budget": ("train", "table4"),
    "figs2_4_probe": ("probe", None),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_composes_with_real_model_configs(name, outputs_dir):
    """Composes (no weights, no network) and points at a hub model in bf16."""
    from ssah.config import compose

    stage, sweep = EXPERIMENTS[name]
    cfg = compose(stage, [f"+experiment={name}"] + ([f"+sweep={sweep}"] if sweep else []))
    models = [cfg.model] if "model" in cfg else [cfg.aligned, cfg.reference]
    for m in models:
        from ssah.models import ModelConfig

        mc = ModelConfig(**{k: m[k] for k in m})
        assert "/" in mc.name_or_path and mc.dtype == "bfloat16"
    if stage == "train":
        assert (
            cfg.trainer.precision == "bf16-mixed" and cfg.trainer.strategy.data_parallel_size == 4
        )


PIN_WIRED = "pin_multirun_job" in inspect.getsource(__import__("ssah.cli").cli)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not PIN_WIRED, reason="lead: wire ssah.sweep.pin_multirun_job into cli.stage()")
def test_ddp_job_in_submitit_sweep_writes_only_its_job_dir(tiny_toy, outputs_dir, tmp_path):
    sweep = tmp_path / "ddp_sweep"
    stray = outputs_dir / "runs" / "train"
    before = set(stray.iterdir()) if stray.exists() else set()
    res = run_stage(
        "train",
        "-m",
        "seed=0",
        "toy=tiny",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "evaluate=false",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    job = sweep / "0"
    assert (job / "metrics.json").exists() and (job / "train_ddp_process_1.log").exists()
    after = set(stray.iterdir()) if stray.exists() else set()
    assert after == before  # rank 1 did not start a run elsewhere
    runs = list(job.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and wandb_group(runs[0]) == "ddp_sweep"  # group = the sweep's name


@pytest.mark.slow
def test_stopped_sweep_stops_its_jobs_and_resumes(tiny_toy, outputs_dir, tmp_path):
    """SIGTERM to a running 2-job submitit_local sweep ends every process it started (submitit's
    jobs ignore SIGTERM themselves); the same sweep run again completes both jobs, unfinished
    ones from their checkpoints, finished ones untouched."""
    import psutil

    from ssah.threads import machine_cores

    sweep = tmp_path / "stopped"
    args = [
        "-m",
        "toy=tiny",
        "evaluate=false",
        "trainer.max_steps=100",
        "checkpoint.every_n_steps=1",
        "seed=0,1",
        "+skip_completed=true",
        "~logger",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("OMP_NUM_THREADS", None)  # threads=auto: the launcher's share of the cores
    proc = subprocess.Popen(
        [sys.executable, "-m", "ssah.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    jobs = [sweep / str(i) for i in range(2)]

    def mid_run() -> bool:
        """Every job started (a checkpoint, or done and its checkpoint dropped) and one is still
        running with a checkpoint: under load one job may finish before the other starts."""
        ckpt = [(j / "checkpoints" / "last.ckpt").exists() for j in jobs]
        done = [(j / "metrics.json").exists() for j in jobs]
        return all(c or d for c, d in zip(ckpt, done, strict=True)) and any(
            c and not d for c, d in zip(ckpt, done, strict=True)
        )

    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not mid_run():
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert tree  # submitit controllers and their jobs
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    finished = {
        j: (j / "metrics.json").stat().st_mtime_ns for j in jobs if (j / "metrics.json").exists()
    }

    def alive(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    time.sleep(0.5)
    assert not [p.pid for p in tree if alive(p)]
    strays = []
    for p in psutil.process_iter(["cmdline"]):
        if str(sweep) in " ".join(p.info["cmdline"] or []) and alive(p):
            strays.append(p.pid)
    assert not strays  # nothing of this sweep runs on its own
    assert len(finished) < 2  # stopped mid-run

    res = run_stage("train", *args, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for j in jobs:
        metrics = json.loads((j / "metrics.json").read_text())
        assert metrics["train/steps"] == 100
        if j in finished:
            assert (j / "metrics.json").stat().st_mtime_ns == finished[j]  # not redone
        else:
            assert metrics["train/resumed_from_step"] > 0  # continued from its checkpoint
        assert metrics["env/torch_threads"] == max(1, machine_cores() // 2)  # 2 jobs at once
