"""Benchmark: a k-job local sweep against k single runs of the same jobs (the cost a user feels).

Goal: a k-job submitit_local sweep on c cores takes no longer than ceil(k/c) single runs plus
10% (`sweep_vs_single_ratio` = sweep seconds / (waves x the mean single run) <= 1.1), the single
run given the same threads as each job of the sweep. The sweep's jobs get their threads from
ssah/localsweep.py (c // min(k, c) each, so at most c threads at once, in ceil(k / jobs at once)
waves); each single run gets exactly that many (`threads=N`). Comparing with a single run on
all c threads instead (`threads: auto` alone) measured how much slower one thread is than c,
not what the sweep costs (the 2-job figure read 1.89 that way on 2 cores). Each pair runs the
sweep and the k single runs back to back, alternating which goes first; every run is a fresh
`python -m ssah.<stage>` process. The median ratio over the pairs is the headline, with its
spread.

    python -m ssah.bench.sweep [--pairs 3] [--jobs 2] [--tiny]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ssah.bench.common import ROOT, BenchError, goal, machine, paired, spread, write
from ssah.localsweep import plan_waves
from ssah.threads import machine_cores

# A short toy fine-tune without evaluation: start-up, model load and training, what a sweep's
# job costs beyond the work itself. --tiny: one step on the tiny toy world.
# (stage, overrides, the key the k jobs differ in)
JOB = ("train", ["trainer.max_steps=30", "evaluate=false", "~logger"], "seed")
TINY_JOB = ("train", ["toy=tiny", "trainer.max_steps=1", "evaluate=false", "~logger"], "seed")


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"sweep bench: `{' '.join(cmd[2:])}` failed: {last}")
    return time.perf_counter() - t0


def ran_threads(work: Path, side: str) -> list[int]:
    """env/torch_threads of every run of one side (its metrics.json, written by the stage)."""
    pattern = "single*/metrics.json" if side == "single" else "sweep*/*/metrics.json"
    return [int(json.loads(p.read_text())["env/torch_threads"]) for p in sorted(work.glob(pattern))]


def measure(
    stage: str, overrides: list[str], key: str, k: int, pairs: int, work: Path
) -> dict[str, Any]:
    """Paired (k single runs, one k-job sweep) wall times."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # the sweep's callback decides each job's threads, as for a user
    cores = machine_cores()
    per_job, at_once = plan_waves(k, cores, None)  # what submitit_local's jobs get (null cpt)
    base = [sys.executable, "-m", f"ssah.{stage}", *overrides]
    seeds = list(range(k))
    count = itertools.count()  # a fresh dir for every run
    singles: list[float] = []

    def single_runs() -> float:
        i = next(count)
        times = [
            _run(
                [*base, f"threads={per_job}", f"hydra.run.dir={work}/single{i}_{s}", f"{key}={s}"],
                env,
            )
            for s in seeds
        ]
        singles.extend(times)
        return sum(times) / len(times)

    def sweep() -> float:
        i = next(count)
        seed_list = ",".join(map(str, seeds))
        return _run(
            [
                *base[:3],
                "-m",  # before the overrides: Hydra's parser takes one run of them
                *overrides,
                f"{key}={seed_list}",
                "hydra/launcher=submitit_local",
                f"hydra.sweep.dir={work}/sweep{i}",
            ],
            env,
        )

    waves = math.ceil(k / at_once)
    res = paired(single_runs, sweep, pairs)  # ratio = sweep / mean single run
    threads = {side: ran_threads(work, side) for side in ("single", "sweep")}
    if set(threads["single"]) != {per_job} or set(threads["sweep"]) != {per_job}:
        raise BenchError(
            f"sweep bench: runs did not use {per_job} threads each as planned (metrics.json "
            f"env/torch_threads: single runs {threads['single']}, sweep jobs {threads['sweep']})"
        )
    ratios = [r / waves for r in res["ratios"]]
    sp = spread(ratios)
    ratio = sp["median"]
    return {
        "sweep_vs_single_ratio": ratio,
        "sweep_vs_single_ratio_spread": sp,
        "sweep_vs_single_ratios": ratios,
        "goal": goal(ratio, 1.1),
        "sweep_s": res["b"],
        "single_run_s": res["a"],
        "single_runs_s": singles,
        "jobs": k,
        "cores": cores,
        "threads_per_job": per_job,
        "jobs_at_once": at_once,
        "threads_ran": threads,
        "waves": waves,
        "pairs": pairs,
        "command": " ".join([f"python -m ssah.{stage}", *overrides]),
        "launcher": "submitit_local",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="seconds-scale jobs (smoke test)")
    args = p.parse_args(argv)
    stage, overrides, key = TINY_JOB if args.tiny else JOB
    with tempfile.TemporaryDirectory(prefix="ssah-bench-sweep-") as tmp:
        res = measure(stage, list(overrides), key, args.jobs, args.pairs, Path(tmp))
    result = {**res, "machine": machine()}
    path = write("sweep", result)
    sp = res["sweep_vs_single_ratio_spread"]
    print(
        f"sweep_vs_single_ratio: {sp['median']:.2f} [{sp['min']:.2f}, {sp['max']:.2f}] over "
        f"{args.pairs} pairs: {args.jobs}-job sweep {res['sweep_s']['median']:.1f}s vs single "
        f"run {res['single_run_s']['median']:.1f}s on {res['cores']} cores (goal <= 1.1) -> {path}"
    )
    return result


if __name__ == "__main__":
    main()
