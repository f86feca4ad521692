"""The plan's rows as SLURM jobs through submitit: a row is submitted once the rows it needs
have finished (the plan process waits, polls, and submits what has become ready).

The cluster settings are the sweeps' (conf/hydra/launcher/submitit_slurm.yaml, site values in
conf/local/slurm.yaml): the plan reads them from its own `hydra.launcher` node. Every
submission is recorded in <run>/slurm_jobs.json (row, job id, the rows it waited for).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ssah.errors import SsahError
from ssah.io import atomic_write_text
from ssah.procs import Job, _call

# hydra launcher key -> submitit AutoExecutor parameter
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
    "max_num_timeout": "slurm_max_num_timeout",
}


def executor_params(launcher: Mapping[str, Any] | None) -> dict[str, Any]:
    """submitit parameters from the sweeps' launcher settings (None values left out)."""
    out = {PARAMS[k]: v for k, v in (launcher or {}).items() if k in PARAMS and v is not None}
    extra = (launcher or {}).get("additional_parameters") or {}
    if extra:
        out["slurm_additional_parameters"] = dict(extra)
    return out


def run_on_slurm(
    jobs: Sequence[Job],
    folder: Path,
    launcher: Mapping[str, Any] | None,
    done: Mapping[str, Any],
    on_done: Callable[[str, Any], None],
    say: Callable[[str], None] = print,
    cluster: str | None = None,
    poll_s: float = 30.0,
) -> dict[str, Any]:
    """Submit each job when its `after` jobs have finished; wait for all. `cluster`: None for
    SLURM (submitit's auto-detection), "local" or "debug" to run without a cluster."""
    import submitit

    ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params = executor_params(launcher)
    if cluster in ("local", "debug"):
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(**params)
    results = dict(done)
    pending = [j for j in jobs if j.name not in results]
    running: dict[str, Any] = {}
    failed: dict[str, str] = {}
    record: list[dict[str, Any]] = []
    while pending or running:
        for j in list(pending):
            if any(a in failed for a in j.after):
                pending.remove(j)
                failed[j.name] = "skipped: a row it needs failed"
                say(f"[slurm] skip  {j.name}")
            elif all(a in results for a in j.after):
                pending.remove(j)
                ex.update_parameters(name=j.name.replace("/", "_"))
                running[j.name] = ex.submit(_call, j.fn, j.args, j.log)
                record.append(
                    {"row": j.name, "job_id": str(running[j.name].job_id), "after": list(j.after)}
                )
                atomic_write_text(folder / "slurm_jobs.json", json.dumps(record, indent=1) + "\n")
                say(f"[slurm] submit {j.name} as job {running[j.name].job_id}")
        if pending and not running:
            raise SsahError(f"jobs {[j.name for j in pending]} wait for jobs that never run.")
        for name, job in list(running.items()):
            if not job.done():
                continue
            del running[name]
            try:
                results[name] = job.result()
            except Exception as e:  # noqa: BLE001 (reported with its log, the others go on)
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"
                say(f"[slurm] FAILED {name}: {failed[name]}")
                continue
            say(f"[slurm] done  {name}")
            on_done(name, results[name])
        if running:
            time.sleep(poll_s)
    real = {n: m for n, m in failed.items() if not m.startswith("skipped")}
    if real:
        raise SsahError("; ".join(f"job {n} failed: {m}" for n, m in real.items()))
    return results
