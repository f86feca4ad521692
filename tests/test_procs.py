"""ssah.procs: jobs in spawned one-thread workers, in dependency order, output in their logs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ssah.errors import SsahError
from ssah.procs import Job, run_jobs


def stamp(path: str, name: str, wait: float) -> dict[str, object]:
    """A job: note when it ran and with how many threads, print to its log."""
    import torch

    t0 = time.time()
    time.sleep(wait)
    print(f"hello from {name}")
    with open(path, "a") as f:
        f.write(f"{name} {t0} {time.time()}\n")
    return {"name": name, "threads": torch.get_num_threads(), "pid": os.getpid()}


def sleeper(pidfile: str) -> None:
    Path(pidfile).write_text(str(os.getpid()))
    time.sleep(120)


def boom() -> None:
    print("about to fail")
    raise ValueError("bad row")


def test_jobs_wait_for_inputs_run_side_by_side_and_log(tmp_path: Path) -> None:
    times = str(tmp_path / "times.txt")
    jobs = [
        Job("a", stamp, (times, "a", 1.0), log=tmp_path / "logs" / "a.log"),
        Job("b", stamp, (times, "b", 1.0), log=tmp_path / "logs" / "b.log"),
        Job("c", stamp, (times, "c", 0.0), after=("a", "b")),
    ]
    lines: list[str] = []
    seen: list[str] = []
    p = run_jobs(
        jobs, workers=2, threads=1, on_done=lambda n, r, _: seen.append(n), say=lines.append
    )
    span = {ln.split()[0]: (float(ln.split()[1]), float(ln.split()[2])) for ln in open(times)}
    assert span["a"][0] < span["b"][1] and span["b"][0] < span["a"][1]  # a and b overlapped
    assert span["c"][0] >= max(span["a"][1], span["b"][1])  # c started after both
    assert seen[-1] == "c" and set(seen) == {"a", "b", "c"}
    assert {r["threads"] for r in p.results.values()} == {1}
    pids = {r["pid"] for r in p.results.values()}
    assert os.getpid() not in pids and len(pids) == 3  # one fresh process per job
    assert "hello from a" in (tmp_path / "logs" / "a.log").read_text()
    assert any(ln.startswith("[jobs] done  c") for ln in lines)


def test_jobs_a_finished_job_frees_join_the_run(tmp_path: Path) -> None:
    """`more` (a plan's selection decided mid-run) adds jobs once per name, with the results
    of rows they need that finished before; a job it adds that waits for nothing known fails
    like a first job would."""
    times = str(tmp_path / "times.txt")

    def more(results):
        if "a" not in results:
            return [], {}
        return [Job("a", stamp, (times, "a", 0.0)),
                Job("t", stamp, (times, "t", 0.0), after=("a", "pick"))], {"pick": 7}  # fmt: skip

    p = run_jobs([Job("a", stamp, (times, "a", 0.0))], workers=1, more=more, say=lambda m: None)
    assert [ln.split()[0] for ln in open(times)] == ["a", "t"]
    assert set(p.results) == {"a", "pick", "t"} and p.results["pick"] == 7

    def lost(results):
        return [Job("u", stamp, (times, "u", 0.0), after=("nope",))], {}

    with pytest.raises(SsahError, match=r"job 'u' waits for \['nope'\]"):
        run_jobs([Job("a", stamp, (times, "a", 0.0))], workers=1, more=lost, say=lambda m: None)


def test_a_failure_skips_what_needs_it_runs_the_rest_and_is_raised_at_the_end(
    tmp_path: Path,
) -> None:
    log = tmp_path / "bad.log"
    times = str(tmp_path / "t")
    jobs = [
        Job("old", boom),  # already done: must not run
        Job("bad", boom, log=log),
        Job("after_bad", stamp, (times, "after_bad", 0.0), after=("bad",)),
        Job("after_after", stamp, (times, "after_after", 0.0), after=("after_bad",)),
        Job("other", stamp, (times, "other", 0.5)),
    ]
    lines: list[str] = []
    with pytest.raises(SsahError) as e:
        run_jobs(jobs, workers=2, done={"old": 1}, say=lines.append)
    msg = str(e.value)
    assert msg.startswith("job bad failed: ValueError: bad row (log: ") and str(log) in msg
    assert msg.endswith("not run for want of it: after_bad, after_after")
    text = log.read_text()
    assert "about to fail" in text and "Traceback" in text and "ValueError: bad row" in text
    assert [ln.split()[0] for ln in open(times)] == ["other"]  # the independent job still ran
    assert any(ln.startswith("[jobs] FAILED bad: ValueError: bad row") for ln in lines)


def test_a_job_waiting_for_nothing_known_is_refused() -> None:
    with pytest.raises(SsahError, match="waits for \\['nope'\\]"):
        run_jobs([Job("a", boom, after=("nope",))], workers=1)


def test_jobs_waiting_on_each_other_are_refused() -> None:
    jobs = [Job("a", boom, after=("b",)), Job("b", boom, after=("a",)), Job("c", boom)]
    with pytest.raises(SsahError, match=r"jobs \['a', 'b'\] wait on each other in a circle"):
        run_jobs(jobs, workers=1)


def test_killing_the_run_kills_its_workers(tmp_path: Path) -> None:
    """SIGKILL to the parent (no chance to clean up) still ends the worker: it must not go on
    finishing its row, holding gigabytes, as an orphan."""
    import signal
    import subprocess
    import sys

    pidfile = tmp_path / "worker.pid"
    code = (
        "from ssah.procs import Job, run_jobs; from tests.test_procs import sleeper; "
        f"run_jobs([Job('s', sleeper, ({str(pidfile)!r},))], workers=1)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    try:
        for _ in range(600):
            if pidfile.is_file() and pidfile.read_text():
                break
            time.sleep(0.1)
        worker = int(pidfile.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(100):
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker outlived its killed parent")
    finally:
        parent.kill()
