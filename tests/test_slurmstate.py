"""Job states without a cluster: submitit's watcher reads squeue where sacct fails (no
accounting), a job squeue has forgotten counts as ended, transitional states as running."""

from __future__ import annotations

import pytest

from ssah import slurmstate
from ssah.slurmstate import SlurmStateWatcher


def _watcher(monkeypatch: pytest.MonkeyPatch, accounting: bool) -> SlurmStateWatcher:
    monkeypatch.setattr(slurmstate, "sacct_works", lambda job_id: accounting)
    w = SlurmStateWatcher()
    for job_id in ("5", "6", "7_1", "8"):
        w.register_job(job_id)
    return w


def test_without_accounting_squeue_is_read_and_forgotten_jobs_have_ended(monkeypatch) -> None:
    w = _watcher(monkeypatch, accounting=False)
    cmd = w._make_command()
    assert cmd is not None and cmd[0] == "squeue" and "--states=all" in cmd
    info = w.read_info(b"5|RUNNING|vm\n6|CONFIGURING|vm\n7_1|CANCELLED|vm\n")
    w._info_dict.update(info)
    assert w.get_state("5", mode="cache") == "RUNNING"
    assert w.get_state("6", mode="cache") == "RUNNING"  # submitit would take it as finished
    assert w.get_state("7_1", mode="cache") == "CANCELLED"
    assert w.get_state("8", mode="cache") == "GONE"  # purged by the controller: it ended
    assert not w.is_done("5", mode="cache") and w.is_done("8", mode="cache")


def test_with_accounting_submitit_reads_sacct_as_before(monkeypatch) -> None:
    w = _watcher(monkeypatch, accounting=True)
    cmd = w._make_command()
    assert cmd is not None and cmd[0] == "sacct"
    info = w.read_info("JobID|State|NodeList\n5|COMPLETED|vm\n")
    assert info["5"]["State"] == "COMPLETED" and "8" not in info  # no guessing with sacct


def test_the_watcher_is_installed_once_for_every_slurm_job() -> None:
    from submitit.slurm.slurm import SlurmJob

    first = slurmstate.use_slurm_state_watcher()
    assert SlurmJob.watcher is first and slurmstate.use_slurm_state_watcher() is first


def test_a_stopped_slurm_sweep_cancels_its_jobs(tmp_path, monkeypatch) -> None:
    import subprocess

    from ssah.localsweep import cancel_slurm_jobs

    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    for name in ("41_0", "41_1", "43_0"):
        (tmp_path / ".submitit" / name).mkdir(parents=True)
    (tmp_path / ".submitit" / "41").mkdir()  # the array's submission folder, no task
    assert cancel_slurm_jobs(str(tmp_path)) == ["41", "43"]
    assert calls == [["scancel", "41", "43"]]
    assert cancel_slurm_jobs(str(tmp_path / "nothing")) == [] and len(calls) == 1
