"""SLURM job states for submitit on clusters with or without accounting (sacct).

Why: submitit asks `sacct` for the state of every job it waits for. Many small clusters (and
ssah's test cluster, .ci/slurm-cluster) run no accounting database; there `sacct` fails, submitit
warns on every poll and sees every job as UNKNOWN, i.e. never finished. A job that ends
without writing its result (scancel, a node failure, a kill after the time limit) then keeps
the plan or the sweep waiting forever. This watcher asks `sacct` once; when it works, nothing
changes. When it does not, it reads `squeue --states=all` (the controller keeps a finished job
for MinJobAge seconds) and takes a job that squeue no longer lists as ended (GONE): submitit then
reads its result file, or reports that the job produced none. Transitional states (configuring,
completing, requeued) count as running, so a requeued job is waited for, not given up on.
"""

from __future__ import annotations

import getpass
import subprocess

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

HEADER = "JobID|State|NodeList"
# states squeue shows that submitit's watcher would otherwise take as "finished"
STILL_RUNNING = {
    "CONFIGURING",
    "COMPLETING",
    "SIGNALING",
    "STAGE_OUT",
    "RESIZING",
    "SUSPENDED",
    "STOPPED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "REQUEUED",
    "RESV_DEL_HOLD",
}


def sacct_works(job_id: str) -> bool:
    """True when the cluster answers `sacct` (it has accounting storage)."""
    try:
        r = subprocess.run(
            ["sacct", "-n", "-X", "-j", job_id], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class SlurmStateWatcher(SlurmInfoWatcher):
    """submitit's SLURM watcher with a squeue fallback when `sacct` is not available."""

    def __init__(self, delay_s: int = 600) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting: bool | None = None  # unknown until the first poll

    def _waiting(self) -> set[str]:
        return self._registered - self._finished

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None:
            return None
        if self.accounting is None:
            self.accounting = sacct_works(sorted(self._waiting())[0].split("_")[0])
        if self.accounting:
            return command
        fmt = "%i|%T|%N"
        return ["squeue", "-u", getpass.getuser(), "--states=all", "-r", "-h", "-o", fmt]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if self.accounting:
            return super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        info = super().read_info(HEADER + "\n" + text)
        for stats in info.values():
            if (stats.get("State") or "?").split()[0] in STILL_RUNNING:
                stats["State"] = "RUNNING"
        for job_id in self._waiting():
            info.setdefault(job_id, {"JobID": job_id, "State": "GONE", "NodeList": ""})
        return info


def use_slurm_state_watcher() -> SlurmStateWatcher:
    """Make every submitit SLURM job (the plan's, the Hydra launcher's) use this watcher."""
    watcher = SlurmJob.watcher
    if not isinstance(watcher, SlurmStateWatcher):
        watcher = SlurmStateWatcher(delay_s=getattr(watcher, "_delay_s", 600))
        SlurmJob.watcher = watcher
    return watcher
