"""The plan's rows as SLURM jobs through submitit: a row is submitted once the rows it needs
have finished (the plan process waits, polls, and submits what has become ready).

The cluster settings are the sweeps' (conf/hydra/launcher/submitit_slurm.yaml, site values in
conf/local/slurm.yaml): the plan reads them from its own `hydra.launcher` node. Every
submission is recorded in <run>/.submitit/slurm_jobs.json (row, job id, the rows it waited for,
its SLURM log). A row that reaches its time limit or is preempted is requeued by submitit (at
most max_num_timeout times) and its stage continues from its checkpoint in the row's result
dir; a row that fails or is cancelled (scancel) is reported in one line with its logs, the rows
that do not need it go on, and the plan ends with one error line. Stopping the plan (Ctrl-C,
SIGTERM) cancels its running jobs; a re-run submits only the rows without a result.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import submitit

from ssah.errors import SsahError
from ssah.io import atomic_write_text
from ssah.procs import Job, More, _call, added

# hydra launcher key -> submitit AutoExecutor parameter (update_parameters)
PARAMS = {
    "timeout_min": "timeout_min",
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "tasks_per_node": "tasks_per_node",
    "mem_gb": "mem_gb",
    "nodes": "nodes",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "exclude": "slurm_exclude",
    "setup": "slurm_setup",
    "signal_delay_s": "slurm_signal_delay_s",
}
# hydra launcher key -> submitit AutoExecutor constructor argument (not a job parameter)
CTOR_PARAMS = {"max_num_timeout": "slurm_max_num_timeout"}
RESULT_GRACE_S = 15.0  # how long an ended job's result file may take to appear
TRACE_FRAME = "-" * 22  # submitit frames a failed job's traceback between two such lines


class RowCall(submitit.helpers.Checkpointable):
    """The submitted callable: a row in its SLURM job. Checkpointable so that submitit requeues
    it on a time limit as on preemption (the same call again); the row's stage resumes from
    its own checkpoint (ssah/checkpointing.py), not from anything pickled here."""

    def __call__(self, fn: Callable[..., Any], args: tuple[Any, ...], log: Path | None) -> Any:
        return _call(fn, args, log)


def executor_params(launcher: Mapping[str, Any] | None) -> dict[str, Any]:
    """submitit parameters from the sweeps' launcher settings (None values left out)."""
    out = {PARAMS[k]: v for k, v in (launcher or {}).items() if k in PARAMS and v is not None}
    extra = (launcher or {}).get("additional_parameters") or {}
    if extra:
        out["slurm_additional_parameters"] = dict(extra)
    return out


def executor_args(launcher: Mapping[str, Any] | None) -> dict[str, Any]:
    """submitit AutoExecutor constructor arguments from the launcher settings."""
    items = (launcher or {}).items()
    return {CTOR_PARAMS[k]: v for k, v in items if k in CTOR_PARAMS and v is not None}


def make_executor(folder: Path, launcher: Mapping[str, Any] | None, cluster: str | None) -> Any:
    """An AutoExecutor for the plan's rows; `cluster`: None for SLURM (auto-detected), "local"
    or "debug" to run without a cluster (slurm-only settings are dropped there)."""
    on_slurm = cluster not in ("local", "debug")
    if on_slurm:
        from ssah.slurmstate import use_slurm_state_watcher

        use_slurm_state_watcher()
    ex = submitit.AutoExecutor(
        folder=str(folder / "%j"), cluster=cluster, **(executor_args(launcher) if on_slurm else {})
    )
    params = executor_params(launcher)
    if not on_slurm:
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(**params)
    return ex


def slurm_log(job: Any) -> str:
    """Where SLURM writes a job's output (submitit's <folder>/<id>_0_log.out), or '?'."""
    paths = getattr(job, "paths", None)
    return str(paths.stdout) if paths is not None else "?"


def has_result(job: Any) -> bool:
    """The job wrote its result file (a job without `paths`, a test's stand-in, holds it)."""
    paths = getattr(job, "paths", None)
    return paths is None or paths.result_pickle.exists()


def waiting_for_result(job: Any, name: str, ended: dict[str, float]) -> bool:
    """True while an ended job's result file may still appear (a shared filesystem shows it
    late; submitit waits as long). Waits here, not in job.result(), so other rows go on."""
    if has_result(job):
        return False
    first = ended.setdefault(name, time.monotonic())
    return time.monotonic() - first < RESULT_GRACE_S


def log_since(log: Path | None, offset: int) -> str:
    """What a row wrote to its log since `offset` (the log is appended to by every attempt)."""
    if log is None or not log.is_file():
        return ""
    with open(log, errors="replace") as f:
        f.seek(offset)
        return f.read()


def why_failed(job: Any, error: BaseException, log_text: str) -> str:
    """One line: the stage's own `error:` line, else the last line of the job's traceback, else
    the SLURM state of a job that ended without a result (scancel, time limit, node failure)."""
    errors = [ln for ln in log_text.splitlines() if ln.startswith("error: ")]
    if errors:
        return errors[-1].removeprefix("error: ")
    text = str(error)
    if isinstance(error, submitit.core.utils.FailedJobError):  # the job's Python raised
        parts = text.split(TRACE_FRAME)
        lines = [ln.strip() for ln in (parts[1] if len(parts) > 2 else text).splitlines()]
        return next((ln for ln in reversed(lines) if ln), "FailedJobError")
    if isinstance(error, submitit.core.utils.UncompletedJobError):
        state = str(getattr(job, "state", "UNKNOWN")).split()[0]
        return f"{state} without a result (scancel, time limit or node failure)"
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


@contextmanager
def cancel_on_stop(running: Mapping[str, Any], say: Callable[[str], None]) -> Iterator[None]:
    """Ctrl-C or SIGTERM while the plan waits cancels its running jobs and ends the plan in
    one line (exit 130 / 143, no traceback); an error does the same, then propagates."""
    previous = signal.getsignal(signal.SIGTERM)
    stopped_by = [signal.SIGINT]

    def stop(signum: int, _frame: Any) -> None:
        stopped_by[0] = signal.Signals(signum)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    except BaseException as e:
        for name, job in running.items():
            job.cancel(check=False)
            say(f"[slurm] cancelled {name} (job {job.job_id})")
        if not isinstance(e, KeyboardInterrupt):
            raise
        say(f"[slurm] {stopped_by[0].name}: plan stopped; run it again to continue")
        raise SystemExit(128 + stopped_by[0].value) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_on_slurm(
    jobs: Sequence[Job],
    folder: Path,
    launcher: Mapping[str, Any] | None,
    done: Mapping[str, Any],
    on_done: Callable[[str, Any], None],
    say: Callable[[str], None] = print,
    cluster: str | None = None,
    poll_s: float = 30.0,
    more: More | None = None,
) -> dict[str, Any]:
    """Submit each job when its `after` jobs have finished; wait for all. `cluster`: None for
    SLURM (submitit's auto-detection), "local" or "debug" to run without a cluster. `more`:
    asked after every finished job for jobs to add (ssah.procs.run_jobs)."""
    ex = make_executor(folder, launcher, cluster)
    results = dict(done)
    pending = [j for j in jobs if j.name not in results]
    running: dict[str, Any] = {}
    failed: dict[str, str] = {}
    ended: dict[str, float] = {}  # row -> when SLURM said it ended without a result file
    by_name = {j.name: j for j in jobs}
    log_start = {j.name: j.log.stat().st_size for j in jobs if j.log and j.log.is_file()}
    record: list[dict[str, Any]] = []
    with cancel_on_stop(running, say):
        while pending or running:
            for j in list(pending):
                if any(a in failed for a in j.after):
                    pending.remove(j)
                    failed[j.name] = "skipped: a row it needs failed"
                    say(f"[slurm] skip  {j.name}: it needs a row that failed")
                elif all(a in results for a in j.after):
                    pending.remove(j)
                    running[j.name] = _submit(ex, j, folder, record, say)
            if pending and not running:
                raise SsahError(f"jobs {[j.name for j in pending]} wait for jobs that never run.")
            for name, job in list(running.items()):
                if not job.done() or waiting_for_result(job, name, ended):
                    continue
                del running[name]
                try:
                    if not has_result(job):
                        raise submitit.core.utils.UncompletedJobError(name)
                    results[name] = job.results()[0]  # a multi-task (DDP) job: rank 0's
                except Exception as e:  # noqa: BLE001 (reported with its log, the others go on)
                    j = by_name[name]
                    why = why_failed(job, e, log_since(j.log, log_start.get(name, 0)))
                    logs = (f"row log: {j.log}; " if j.log else "") + f"SLURM log: {slurm_log(job)}"
                    failed[name] = f"{why} ({logs})"
                    say(f"[slurm] FAILED {name} (job {job.job_id}): {failed[name]}")
                    continue
                say(f"[slurm] done  {name} (job {job.job_id})")
                on_done(name, results[name])
                known = {*(j.name for j in pending), *running, *failed}
                for j in added(more, results, known):
                    pending.append(j)
                    by_name[j.name] = j
            if running:
                time.sleep(poll_s)
    real = {n: m for n, m in failed.items() if not m.startswith("skipped")}
    if real:
        skipped = [n for n in failed if n not in real]
        raise SsahError(
            "; ".join(f"job {n} failed: {m}" for n, m in real.items())
            + (f"; not run for want of it: {', '.join(skipped)}" if skipped else "")
            + "; run the plan again to retry what is not done"
        )
    return results


def _submit(
    ex: Any, j: Job, folder: Path, record: list[dict[str, Any]], say: Callable[[str], None]
) -> Any:
    """Submit one row, record it in slurm_jobs.json and say where its logs are."""
    ex.update_parameters(name=j.name.replace("/", "_"))
    job = ex.submit(RowCall(), j.fn, j.args, j.log)
    log = slurm_log(job)
    record.append(
        {"row": j.name, "job_id": str(job.job_id), "after": list(j.after), "slurm_log": log}
    )
    atomic_write_text(folder / "slurm_jobs.json", json.dumps(record, indent=1) + "\n")
    row_log = f"; row log: {j.log}" if j.log else ""
    say(f"[slurm] submit {j.name} as job {job.job_id} (SLURM log: {log}{row_log})")
    return job
