"""`python -m ssah.plan`: the paper's plan on a world (make run: world=toy; make real:
world=smollm2; world=hub model=... on GPUs or SLURM). See conf/plan.yaml and ssah/plan/runner.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssah.cli import run_dir, stage
from ssah.config import hydra_state_kept
from ssah.metrics import write_metrics
from ssah.plan import runner
from ssah.plan.store import export, load
from ssah.procs import Progress, run_jobs
from ssah.threads import worker_count


def say(msg: str) -> None:
    print(msg, flush=True)


def _choice(group: str) -> str | None:
    try:
        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:
        return None


def _launcher() -> dict[str, Any] | None:
    try:
        node = HydraConfig.get().launcher
    except ValueError:
        return None
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Plan, run what is not done, render the report (after every row, and at the end)."""
    t0 = time.perf_counter()
    launcher = _launcher()  # read before rows are composed (composing resets Hydra's state)
    with hydra_state_kept():
        p = runner.make_plan(cfg, f"plan-{out.name}", _choice("model"))
    workers = worker_count(cfg.workers, int(cfg.threads))
    times: dict[str, float] = {}
    report = out / "report.md"
    if not cfg.report_only:
        where = (
            f"on {workers} worker(s) x {cfg.threads} thread(s)"
            if cfg.executor == "local"
            else "as SLURM jobs (submitted once their needs finish)"
        )
        say(f"[plan] {runner.status_line(p)}, {where}; report: {report}")
        runner.dump_jobs(p, out / "jobs.json")
        runner.write_report(p, cfg, out, times)
        p.module.prepare(p.world, workers)

        def on_done(name: str, metrics: Any, prog: Progress | None = None) -> None:
            if prog is not None and name in prog.seconds:
                times[name] = prog.seconds[name]
            for r in p.rows:
                if f"{r.instance}/{r.row.name}" == name:
                    r.result = load(r.dir)
            runner.write_report(p, cfg, out, times)

        if cfg.executor == "slurm":
            from ssah.plan.slurm import run_on_slurm

            run_on_slurm(
                p.jobs,
                out / ".submitit",
                launcher,
                p.done,
                on_done,
                say,
                cluster=cfg.get("slurm_cluster"),
                poll_s=float(cfg.get("slurm_poll_s", 5)),
            )
        else:
            run_jobs(
                p.jobs, workers, int(cfg.threads), p.done, on_done, say, fresh=p.wplan.fresh_process
            )
    report, claims = runner.write_report(p, cfg, out, times)
    metrics = runner.summary(p, claims)
    metrics["time/plan_s"] = time.perf_counter() - t0
    write_metrics(out, metrics)
    if cfg.get("export"):
        n = export(
            [r.result for r in p.rows if r.result is not None],
            Path(str(cfg.export)),
        )
        say(f"[plan] exported {n} row results to {cfg.export}")
    say(f"[plan] done in {metrics['time/plan_s'] / 60:.1f} min; report: {report}")
    return metrics


@stage("plan")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
