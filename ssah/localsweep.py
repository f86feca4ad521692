"""Local sweeps on a shared machine: never more threads than cores, and a stopped sweep stops
its jobs. One Hydra callback (conf/hydra/default.yaml), active in the launching process only.

Threads: submitit's local launcher starts every job of a sweep at once, each free to use every
core; k jobs on c cores then run k*c OpenMP threads, and threads spin-waiting for each other make
that 10x+ slower than running the jobs in turn. Before the sweeper starts, this callback gives
each job `cpus_per_task` threads (null: the cores split evenly over the jobs, at least 1), runs
at most cores // threads jobs at once (hydra.sweeper.max_batch_size), and passes the share on
through OMP_NUM_THREADS, which `threads: auto` (ssah/threads.py) reads. joblib jobs get
cores // n_jobs the same way (and with n_jobs > cores, batches of `cores` jobs).

Stopping: submitit's jobs ignore SIGTERM ("Bypassing signal SIGTERM") and its controllers outlive
the launcher, so killing a sweep used to leave orphan training processes. While a sweep runs,
SIGINT/SIGTERM to its process end every process it started (basic, joblib, submitit_local).
Finished jobs keep their metrics.json (written atomically, last); the others resume from their
checkpoints when the same sweep runs again (skip_completed, checkpoint.* in conf/train.yaml).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from ssah.threads import ENV_VARS, joblib_share, machine_cores


def plan_waves(k: int, cores: int, cpus_per_task: int | None) -> tuple[int, int]:
    """(threads per job, jobs at once) for k jobs on `cores` cores: never more threads than cores
    in total (a job asking for more than all cores gets all of them, alone)."""
    per_job = cpus_per_task or max(1, cores // max(1, min(k, cores)))
    per_job = max(1, min(per_job, cores))
    return per_job, max(1, cores // per_job)


def count_jobs(cfg: DictConfig) -> int | None:
    """How many jobs the basic sweeper will run (its params x the command line), None if unknown."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # a sweep this parser cannot expand alone (e.g. glob): unknown
        return None
    sizes = [len(list(o.sweep_string_iterator())) for o in parsed if o.is_discrete_sweep()]
    return math.prod(sizes) if sizes else 1


def stop_descendants(grace_s: float = 5.0) -> list[int]:
    """End every process this one started (jobs, their workers and ranks); returns their pids.

    SIGINT and SIGTERM first (submitit's jobs stop on SIGINT as on Ctrl-C, joblib's workers on
    SIGTERM; Lightning shuts down and nothing marks the job complete), SIGKILL for what is left
    after `grace_s`. The tree is read before each round and remembered, so a child whose parent
    ends first is not lost.
    """
    import psutil

    me = psutil.Process()
    procs: dict[int, psutil.Process] = {}
    for sigs in ((signal.SIGINT, signal.SIGTERM), (signal.SIGKILL,)):
        try:
            procs.update({p.pid: p for p in me.children(recursive=True)})
        except psutil.Error:
            pass
        alive = [p for p in procs.values() if p.is_running()]
        if not alive:
            break
        for p in alive:
            for sig in sigs:
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    pass
        psutil.wait_procs(alive, timeout=grace_s)
    return sorted(procs)


def cancel_slurm_jobs(sweep_dir: str) -> list[str]:
    """scancel the SLURM jobs of a sweep (their ids name its .submitit/<id>_<task> folders):
    they run on the cluster, not below this process, so stop_descendants cannot reach them."""
    from pathlib import Path

    folder = Path(sweep_dir) / ".submitit"
    ids = sorted({p.name.split("_")[0] for p in folder.glob("[0-9]*_[0-9]*") if p.is_dir()})
    if ids:
        import subprocess

        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
        print(f"[ssah] cancelled SLURM job(s) {', '.join(ids)}", file=sys.stderr, flush=True)
    return ids


class LocalSweep(Callback):
    """Hydra callback: fit a local sweep to the cores; stop its jobs with it."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._env: dict[str, str | None] = {}
        self._stopping = False
        self._slurm_dir: str | None = None  # a SLURM sweep's submitit folder: its jobs' ids

    # ---- threads ---------------------------------------------------------------------------
    def _share(self, cfg: DictConfig) -> int | None:
        """Threads per job for a local parallel launcher (capping jobs at once), else None."""
        launcher = OmegaConf.select(cfg, "hydra.launcher") or {}
        target = str(launcher.get("_target_", ""))
        cores = machine_cores()
        if "n_jobs" in launcher:  # joblib: n_jobs at once, each cores // n_jobs threads
            per_job = joblib_share(launcher.get("n_jobs"), cores)
            at_once = max(1, cores // per_job)  # n_jobs > cores: no more than cores at once
        elif target.endswith("submitit_launcher.LocalLauncher"):
            given = launcher.get("cpus_per_task")
            k = count_jobs(cfg) or cores
            per_job, at_once = plan_waves(k, cores, int(given) if given else None)
        else:
            return None  # basic: one job at a time in this process; SLURM: other machines
        self._cap_batches(cfg, at_once)
        return per_job

    @staticmethod
    def _cap_batches(cfg: DictConfig, at_once: int) -> None:
        """The basic sweeper hands the launcher batches of max_batch_size jobs: at most that many
        run at once, so the sweep never runs more threads than cores."""
        sweeper = cfg.hydra.sweeper
        if "max_batch_size" not in sweeper:
            return  # another sweeper: it decides
        with read_write(sweeper), open_dict(sweeper):
            current = sweeper.max_batch_size
            sweeper.max_batch_size = min(at_once, current) if current else at_once

    def _set_env(self, threads: int) -> None:
        """Jobs started from here (submitit controllers, loky workers) inherit the share."""
        own = os.environ.get("OMP_NUM_THREADS", "")
        if own.isdigit() and int(own) > 0:
            threads = min(threads, int(own))  # a limit the user set stays a limit
        for var in ENV_VARS:
            self._env[var] = os.environ.get(var)
            os.environ[var] = str(threads)

    # ---- stopping --------------------------------------------------------------------------
    def _handle(self, signum: int, _frame: Any) -> None:
        if self._stopping:
            return
        self._stopping = True
        name = signal.Signals(signum).name
        print(f"[ssah] {name}: stopping the sweep's jobs", file=sys.stderr, flush=True)
        stop_descendants()
        if self._slurm_dir:
            cancel_slurm_jobs(self._slurm_dir)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if target.endswith("submitit_launcher.SlurmLauncher"):
            from ssah.slurmstate import use_slurm_state_watcher

            use_slurm_state_watcher()  # job states without sacct, no warning every poll
            self._slurm_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
        threads = self._share(config)
        if threads is not None:
            self._set_env(threads)
        if threading.current_thread() is threading.main_thread():  # handlers: main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        for var, value in self._env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        self._env.clear()
