"""On a real SLURM cluster (make test starts a single-node one: .ci/slurm-cluster): the plan's
rows as jobs (a cancelled row reported in one line, the re-run submitting only it), a 2-job
Hydra sweep, a 2-task DDP job with ranks from SLURM, and a job requeued mid-training that ends
bit-identical to one that was not. Every job is toy-sized; a test waits for its jobs only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_stage
from safetensors.torch import load_file
from test_sweep import FAST

# conftest puts every `slurm` test in one xdist group: one worker runs them one after another.
pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PY = sys.executable
ON_CLUSTER = [
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
]
TOY_PLAN = [  # the tiny toy world of tests/test_plan.py, as command-line overrides
    "world=toy",
    "world.plan.vars.toy=tiny",
    "seeds=[0]",
    "world.plan.vars.align_overrides=['trainer.max_steps=2']",
    "stage_logger=csv",
    "world.plan.vars.score_overrides=['scoring.calibration.safety.response=field',"
    "'scoring.calibration.safety.columns={refusal:response}']",
    "slurm_poll_s=1",
]
NOISE = (
    "Bypassing sacct",
    "srun` command is available",
    "auto-requeueing",
    "checkpoint that ended before the epoch ended",
    "Traceback",
)


NEVER = ("PartitionConfig", "BadConstraints", "PartitionNodeLimit", "InvalidAccount")
SINFO = "`sinfo -o '%P %c %m'`"


def squeue_state(job_id: str) -> str:
    """The job's state as the controller has it ('' once it has forgotten the job)."""
    r = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    return r.stdout.strip()


def wait_for(what: str, check, timeout: float = 240.0, every: float = 0.3):
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def sbatch(*args: str) -> str:
    """Submit a batch job from the repo root (the environment travels with it); its id."""
    r = subprocess.run(
        ["sbatch", "--parsable", *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return r.stdout.strip().split(";")[0]


def wait_done(job_id: str, timeout: float = 300.0) -> str:
    """Wait until the job left the queue for good; its final state. A job the cluster can never
    start (e.g. more CPUs than the partition has) fails the test at once, naming the reason."""
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")

    def check() -> str | None:
        state = squeue_state(job_id)
        reason = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True, text=True
        ).stdout.strip()
        assert reason not in NEVER, f"job {job_id} cannot start here: {reason} (sinfo: {SINFO})"
        return state if state in final else None

    return wait_for(f"job {job_id}", check, timeout, every=1.0)


def _plan(results: Path, *extra: str) -> subprocess.Popen:
    cmd = [PY, "-m", "ssah.plan", *TOY_PLAN, "+launcher=slurm", *ON_CLUSTER, *extra]
    cmd.append(f"results={results}")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_plan_rows_run_as_jobs_a_cancelled_row_is_reported_and_rerun(
    tiny_toy, outputs_dir, tmp_path
):
    results = tmp_path / "results"
    rows = "rows=[aligned,prune_scu]"  # prune_scu waits for score_aligned
    first = _plan(results, rows)
    jobs_file = wait_for("the plan's first submission", lambda: _jobs_files(outputs_dir))
    cancel = wait_for("aligned's job", lambda: _job_of(jobs_file[0], "world0/aligned"), timeout=300)
    wait_for("aligned to run", lambda: squeue_state(cancel) == "RUNNING", timeout=120)
    subprocess.run(["scancel", cancel], check=True)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 2, out[-3000:]
    error = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "world0/aligned failed: CANCELLED" in error[0], out[-3000:]
    assert f"{cancel}_0_log.out" in error[0]  # names the row's SLURM log
    assert "[slurm] done  world0/prune_scu" in out
    submitted = [ln for ln in out.splitlines() if ln.startswith("[slurm] submit")]
    assert len(submitted) == 3 and all("SLURM log: " in ln for ln in submitted), out[-3000:]
    assert "[plan] 3 rows, 0 done already, 3 to run" in out  # the world was built: no job
    assert not [n for n in NOISE if n in out], out[-3000:]

    again = _plan(results, rows)
    out2, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out2[-3000:]
    submitted = [ln for ln in out2.splitlines() if ln.startswith("[slurm] submit world0/")]
    assert len(submitted) == 1 and "world0/aligned as job" in submitted[0], out2[-3000:]
    done = next(ln for ln in out2.splitlines() if ln.startswith("[plan] done in"))
    report_md = Path(done.split("report: ")[-1].strip())
    run_dir, report = report_md.parent, report_md.read_text()
    assert "| aligned | 1 |" in report and "`prune_scu`: `python -m ssah.prune" in report
    assert (run_dir / "world0" / "aligned" / "metrics.json").is_file()  # the report's link
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["world0/aligned/safety/asr/direct/keyword"] <= 1.0
    assert 0.0 <= metrics["world0/prune_scu/safety/asr/direct/keyword"] <= 1.0
    record = json.loads((run_dir / ".submitit" / "slurm_jobs.json").read_text())
    (job,) = [r for r in record if r["row"].startswith("world0/")]  # rows, not world builds
    assert job["row"] == "world0/aligned" and int(job["job_id"]) > int(cancel)
    assert Path(job["slurm_log"]).is_file() and wait_done(job["job_id"]) == "COMPLETED"
    assert len(list(results.glob("toy/*/meta.json"))) == 3  # aligned, score_aligned, prune_scu


def _jobs_files(outputs: Path) -> list[Path]:
    return sorted(outputs.glob("runs/*/*/.submitit/slurm_jobs.json"))


def _job_of(jobs_file: Path, row: str) -> str | None:
    try:
        record = json.loads(jobs_file.read_text())
    except (OSError, ValueError):
        return None
    return next((r["job_id"] for r in record if r["row"] == row), None)


def test_two_job_sweep_runs_on_the_cluster_quietly(tiny_toy, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_stage(
        "train",
        "-m",
        "freeze=none,scu_all_cu",
        *FAST,
        "logger=csv",
        "hydra/launcher=submitit_slurm",
        *ON_CLUSTER,
        f"hydra.sweep.dir={sweep}",
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    both = res.stdout + res.stderr
    assert not [n for n in NOISE if n in both], both[-3000:]
    for i in (0, 1):
        metrics = json.loads((sweep / str(i) / "metrics.json").read_text())
        assert metrics["train/steps"] > 0
    ids = {p.name.split("_")[0] for p in (sweep / ".submitit").glob("[0-9]*_[0-9]*")}
    assert len(ids) == 1  # one array job
    (array,) = ids
    # submitit returns once each task wrote its result; SLURM marks the task COMPLETED a moment
    # later (after its epilogue), so wait for the final state rather than read it at once.
    assert [wait_done(f"{array}_{i}") for i in (0, 1)] == ["COMPLETED", "COMPLETED"]


def test_two_task_ddp_job_reads_its_ranks_from_slurm(tiny_toy, outputs_dir, tmp_path):
    log = tmp_path / "ddp.out"
    train = [PY, "-m", "ssah.train", "toy=tiny", "trainer=ddp", "trainer.accelerator=cpu"]
    train += ["trainer.devices=2", "trainer.max_steps=2", "evaluate=false", "logger=csv"]
    job = sbatch(
        "--ntasks-per-node=2", "--cpus-per-task=1", "-o", str(log),
        "--wrap", "srun " + " ".join(train),
    )  # fmt: skip
    assert wait_done(job) == "COMPLETED", log.read_text()[-3000:]
    text = log.read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text and "GLOBAL_RANK: 0, MEMBER: 1/2" in text
    assert text.count("[ssah] train finished") == 1, text[-3000:]  # rank 0 speaks
    run = outputs_dir / "runs" / "train" / f"slurm-{job}"  # both ranks in one dir
    assert json.loads((run / "metrics.json").read_text())["train/steps"] == 2.0
    assert not [n for n in NOISE if n in text], text[-3000:]


def test_requeued_job_resumes_from_its_checkpoint_bit_identical(tiny_toy, outputs_dir, tmp_path):
    """`scontrol requeue` kills a training job after its first checkpoint; SLURM starts it
    again, in the same run dir (slurm-<job id>), and it ends with the weights of a job that
    ran through."""
    train = [PY, "-m", "ssah.train", "toy=tiny", "evaluate=false", "save_model=true"]
    train += ["trainer.max_steps=240", "task.batch_size=8", "checkpoint.every_n_steps=30"]
    train += ["logger=csv", "freeze=none"]
    cmd = " ".join(train)
    whole = sbatch("-o", str(tmp_path / "whole.out"), "--wrap", cmd)
    hit = sbatch("-o", str(tmp_path / "requeued.out"), "--open-mode=append", "--wrap", cmd)
    run = outputs_dir / "runs" / "train"
    ckpt = run / f"slurm-{hit}" / "checkpoints" / "last.ckpt"
    wait_for("the first checkpoint", ckpt.is_file, timeout=240, every=0.1)
    subprocess.run(["scontrol", "requeue", hit], check=True)
    assert wait_done(hit) == "COMPLETED", (tmp_path / "requeued.out").read_text()[-3000:]
    assert wait_done(whole) == "COMPLETED", (tmp_path / "whole.out").read_text()[-3000:]
    metrics = json.loads((run / f"slurm-{hit}" / "metrics.json").read_text())
    assert metrics["train/resumed_from_step"] >= 30.0, metrics  # it did continue, not restart
    log = (tmp_path / "requeued.out").read_text()
    assert "DUE TO JOB REQUEUE" in log and "resuming from" in log
    assert not [n for n in NOISE if n in log], log[-3000:]
    a = load_file(str(run / f"slurm-{whole}" / "model" / "model.safetensors"))
    b = load_file(str(run / f"slurm-{hit}" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the requeued job's weights differ"
    whole_loss = json.loads((run / f"slurm-{whole}" / "metrics.json").read_text())["train/loss"]
    assert metrics["train/loss"] == whole_loss
