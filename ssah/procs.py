"""Run jobs in a few one-thread worker processes, in dependency order.

Why: on a 2-core machine one process at one thread leaves a core idle, and one process at two
threads changes float reduction order (so the numbers would depend on the machine). Two spawned
workers at one thread each do two jobs at once and give exactly the numbers a single
one-thread process gives. Spawned (not forked) so no torch or Hydra state is shared. Each job's
stdout/stderr goes to its own log file; the parent prints one line per start and finish and a
heartbeat with what is running, so progress stays readable.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssah.errors import SsahError


@dataclass(frozen=True)
class Job:
    """`fn(*args)` (a top-level, picklable function) once every job named in `after` is done."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = ()
    log: Path | None = None


@dataclass
class Progress:
    """What the parent knows: results, start times, seconds per finished job."""

    results: dict[str, Any] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the process that started it dies, so killing a run
    (even with SIGKILL) leaves no orphan finishing a row and holding gigabytes."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C still reaches the whole process group


def _init_worker(threads: int) -> None:
    _die_with_parent()
    from ssah.threads import set_threads

    set_threads(threads)
    from ssah.quiet import silence_third_party

    silence_third_party()


def _call(fn: Callable[..., Any], args: tuple[Any, ...], log: Path | None) -> Any:
    """In the worker: run one job with fds 1 and 2 sent to its log (C-level output too)."""
    if log is None:
        return fn(*args)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            return fn(*args)
        except BaseException:
            traceback.print_exc()  # into the job's log; the parent prints one line
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _check(jobs: Sequence[Job], done: set[str]) -> None:
    """Every job's inputs exist and none waits on itself through others (it would never
    start, and the scheduler would wait forever)."""
    names = {j.name for j in jobs} | done
    for j in jobs:
        missing = [a for a in j.after if a not in names]
        if missing:
            raise SsahError(f"job {j.name!r} waits for {missing}, which no job produces.")
    after = {j.name: j.after for j in jobs if j.name not in done}
    ready = set(done)
    while after:
        free = [n for n, deps in after.items() if all(a in ready for a in deps)]
        if not free:
            raise SsahError(f"jobs {sorted(after)} wait on each other in a circle.")
        ready.update(free)
        for n in free:
            del after[n]


# results so far -> (jobs that became plannable, results of rows they need that finished
# before this run): how a plan adds the rows behind a selection decided while others still run
More = Callable[[Mapping[str, Any]], tuple[Sequence[Job], Mapping[str, Any]]]


def added(more: More | None, results: dict[str, Any], known: set[str]) -> list[Job]:
    """The jobs `more` adds that are not `known` (pending, running, failed) or done; the
    results it hands over enter `results`. Their inputs are checked like the first jobs'."""
    if more is None:
        return []
    jobs, done = more(results)
    for name, value in done.items():
        results.setdefault(name, value)
    new = [j for j in jobs if j.name not in known and j.name not in results]
    _check(new, set(results) | known)
    return new


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    threads: int = 1,
    done: dict[str, Any] | None = None,
    on_done: Callable[[str, Any, Progress], None] | None = None,
    say: Callable[[str], None] = print,
    heartbeat_s: float = 60.0,
    fresh: bool = True,
    more: More | None = None,
) -> Progress:
    """Run `jobs` (in list order as their inputs allow) on `workers` processes; `done` holds
    results of jobs finished earlier (a re-run continues). A failed job does not stop the
    others: what waits for it is skipped, the rest run, and the failures are raised at the
    end (hours of other rows are not lost to one bad row). `fresh`: every job in a new
    process (False: a worker runs several small jobs, saving their start-up). `more`: asked
    after every finished job for jobs to add (queued after those pending)."""
    p = Progress(results=dict(done or {}))
    _check(jobs, set(p.results))
    pending = [j for j in jobs if j.name not in p.results]
    total, t0 = len(pending), time.perf_counter()
    running: dict[Future[Any], Job] = {}
    failed: dict[str, str] = {}
    skipped: list[str] = []
    ctx = mp.get_context("spawn")
    # one job per process: a worker reused for a second row kept the first one's memory
    # (7.6 GB RSS after two fine-tuning rows, against 4.8 GB for one)
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(threads,),
        max_tasks_per_child=1 if fresh else None,
    ) as ex:
        while pending or running:
            for j in list(pending):
                if any(a in failed or a in skipped for a in j.after):
                    pending.remove(j)
                    skipped.append(j.name)
                    say(
                        f"[jobs] skip  {j.name}: it needs {[a for a in j.after if a in failed or a in skipped]}"
                    )
                    continue
                if len(running) < workers and all(a in p.results for a in j.after):
                    pending.remove(j)
                    running[ex.submit(_call, j.fn, j.args, j.log)] = j
                    p.started[j.name] = time.perf_counter()
                    say(f"[jobs] start {j.name}" + (f" (log: {j.log})" if j.log else ""))
            if not running:
                continue  # what is left waits only on failures: the loop above skips it
            finished, _ = wait(running, timeout=heartbeat_s, return_when=FIRST_COMPLETED)
            now = time.perf_counter()
            if not finished:
                busy = ", ".join(
                    f"{j.name} {(now - p.started[j.name]) / 60:.1f} min" for j in running.values()
                )
                say(
                    f"[jobs] {len(p.seconds)}/{total} done, {(now - t0) / 60:.1f} min; running: {busy}"
                )
            for f in finished:
                j = running.pop(f)
                try:
                    result = f.result()
                except BaseException as e:  # noqa: BLE001  (reported below with its log)
                    failed[j.name] = f"{type(e).__name__}: {e}" + (
                        f" (log: {j.log})" if j.log else ""
                    )
                    say(f"[jobs] FAILED {j.name}: {failed[j.name]}")
                    continue
                p.seconds[j.name] = now - p.started[j.name]
                p.results[j.name] = result
                say(
                    f"[jobs] done  {j.name} in {p.seconds[j.name] / 60:.1f} min "
                    f"({len(p.seconds)}/{total}, {(now - t0) / 60:.1f} min in all)"
                )
                if on_done:
                    on_done(j.name, result, p)
                known = {*(x.name for x in pending), *(x.name for x in running.values()),
                         *failed, *skipped}  # fmt: skip
                fresh_jobs = added(more, p.results, known)
                pending += fresh_jobs
                total += len(fresh_jobs)
    if failed:
        what = "; ".join(f"job {n} failed: {m}" for n, m in failed.items())
        raise SsahError(
            what + (f"; not run for want of it: {', '.join(skipped)}" if skipped else "")
        )
    return p
