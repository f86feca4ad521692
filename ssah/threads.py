"""CPU threads per job: one config key (`threads: auto | N`) applied at the stage door.

Why: torch defaults to one intra-op thread per core of the machine. Two jobs of a sweep (or a
job beside other work) then run more OpenMP threads than there are cores, and threads that
spin-wait for each other make that 10x+ slower, not 2x. `auto` means "what this job was given":
the smallest of the cores this process may run on (sched_getaffinity), SLURM_CPUS_PER_TASK, the
launcher's cpus_per_task (submitit), the job's share of the cores under joblib (cores // n_jobs),
an OMP_NUM_THREADS already set by whoever started us, divided over the CPU ranks of a DDP job.
Children (DataLoader workers, DDP ranks, tokenizers) inherit OMP/MKL_NUM_THREADS.

Bottom layer: imports no stage and not ssah.cli.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ssah.errors import SsahError

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_applied: int | None = None  # threads set at this process's stage door (None: no door ran)


def machine_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _positive_int(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def joblib_share(n_jobs: Any, cores: int) -> int:
    """A joblib worker's share: n_jobs=-1 means one job per core, -2 all cores but one, ..."""
    n = int(n_jobs) if n_jobs is not None else 1
    if n < 0:
        n = max(1, cores + 1 + n)
    return max(1, cores // max(1, n))


def limits(
    launcher: Mapping[str, Any] | None,
    env: Mapping[str, str],
    cores: int,
    ranks: int = 1,
) -> dict[str, int]:
    """Every bound on this job's threads that applies, by where it comes from."""
    job = {"cores": cores}  # what the whole job was given
    if launcher:
        cpt = _positive_int(launcher.get("cpus_per_task"))
        if cpt:
            job["launcher.cpus_per_task"] = cpt
        if "n_jobs" in launcher:  # joblib: the jobs run side by side on this machine
            job["joblib n_jobs share"] = joblib_share(launcher.get("n_jobs"), cores)
    if ranks > 1:  # CPU DDP that Lightning starts here: its ranks share what the job was given
        job = {f"{k} / {ranks} ranks": max(1, v // ranks) for k, v in job.items()}
    # Per process already: SLURM gives every task its CPUs, OMP_NUM_THREADS binds one process
    # (a DDP rank inherits the share its parent set).
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        n = _positive_int(env.get(var))
        if n:
            job[var] = n
    return job


def resolve(
    setting: Any,
    launcher: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
    ranks: int = 1,
) -> int:
    """Threads for `threads: <setting>`: a positive int as given, `auto` the tightest limit."""
    if setting is None or str(setting).lower() == "auto":
        bounds = limits(
            launcher, os.environ if env is None else env, cores or machine_cores(), ranks
        )
        return min(bounds.values())
    n = _positive_int(setting)
    if n is None or isinstance(setting, bool) or str(setting).strip() != str(n):
        raise SsahError(
            f"threads={setting!r}: not a thread count; use threads=auto (what the job was "
            "given) or a positive integer, e.g. threads=1."
        )
    return n


def _launcher_cfg() -> Mapping[str, Any] | None:
    """The launcher's settings when this process is a job of a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    launcher = hc.get("launcher")
    if launcher is None or "BasicLauncher" in str(launcher.get("_target_", "")):
        return None  # the basic launcher runs jobs one after another in this process
    return {k: launcher.get(k) for k in ("cpus_per_task", "n_jobs") if k in launcher}


def _cpu_ranks(cfg: Mapping[str, Any]) -> int:
    """Processes a CPU DDP job starts on this machine (1 for anything else)."""
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    if not trainer or str(trainer.get("accelerator", "")) != "cpu":
        return 1
    return _positive_int(trainer.get("devices")) or 1


def apply(cfg: Mapping[str, Any]) -> int:
    """Set torch's intra-op threads and OMP/MKL_NUM_THREADS from `cfg.threads`; returns them.

    Called once at the stage door before any torch work; `env/torch_threads` in metrics.json
    (ssah.metrics) then records what the job ran with.
    """
    global _applied
    _applied = set_threads(
        resolve(cfg.get("threads", "auto"), _launcher_cfg(), ranks=_cpu_ranks(cfg))
    )
    return _applied


def set_threads(n: int) -> int:
    """torch's intra-op threads and OMP/MKL_NUM_THREADS (what children inherit) to `n`: the one
    place a process's threads are set (the stage door, plan workers, tools outside a stage)."""
    for var in ENV_VARS:
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    return n


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine and its state now (CPU, cores, threads, load, versions, time): a timing or a
    result means little without the machine and the load beside it."""
    import torch

    return {
        "cpu": cpu_model(),
        "host": platform.node(),
        "cores": machine_cores(),
        "torch_threads": torch.get_num_threads(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],  # 1, 5, 15 min
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run_env() -> dict[str, int]:
    """Metrics about how this process ran (empty outside a stage): merged into metrics.json."""
    if _applied is None:
        return {}
    import torch

    return {"env/torch_threads": torch.get_num_threads(), "env/cores": machine_cores()}


def worker_count(setting: Any, threads: int, cores: int | None = None) -> int:
    """Processes of `threads` threads each for `workers: <setting>`: `auto` (or None) fills
    this machine's cores, a number is taken as given (at least 1)."""
    if setting is None or str(setting).lower() == "auto":
        return max(1, (cores or machine_cores()) // max(1, threads))
    return max(1, int(setting))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Pin torch's intra-op threads inside the block, then restore them. CPU float sums
    depend on how many threads split them: a fixed count builds the same world on any machine
    (n=None keeps the current count)."""
    import torch

    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)
