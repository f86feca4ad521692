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
from ssah.errors import SsahError
from ssah.io import atomic_write_text
from ssah.metrics import write_metrics
from ssah.plan import runner
from ssah.plan.reports import latest, numbers, render_results
from ssah.plan.row import run_row
from ssah.plan.spec import Plan, WorldPlan
from ssah.plan.store import export
from ssah.procs import Job, Progress, run_jobs
from ssah.results import load, scan
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


def report_only(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """`report_only=true`: the report of the rows under `results=` alone (a copy of them, from
    another machine or committed), found by their meta, not by re-composing them; nothing runs."""
    world = runner.plain(cfg.world)
    name = str(world.get("name", "world"))
    if "plan" not in world:
        raise SsahError(f"world={name}: this world has no `plan:`; see conf/world/toy.yaml.")
    plan, wplan = Plan.from_cfg(runner.plain(cfg.plan)), WorldPlan.from_cfg(world["plan"])
    root = Path(str(cfg.results))
    results = list(latest(r for r in scan(root / name) if r.world == name).values())
    given = runner.plain(cfg.get("tables")) or {}
    tables = {**wplan.tables, **{str(k): bool(v) for k, v in given.items() if v is not None}}
    text, claims = render_results(results, plan, wplan, name, out, root, tables, figures=out)
    atomic_write_text(out / "report.md", text)
    say(f"[plan] {len(results)} row results under {root / name}; report: {out / 'report.md'}")
    return {**numbers(results), **claims}


def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Plan, run what is not done, render the report (after every row, and at the end). Rows
    behind a selection (ssah.plan.select) join the run once its candidates (of their own
    instance) finished and the choice is made (`_more`); a failed candidate ends the run with
    its error (they wait for the next run), a selection that chose none leaves them unrun."""
    for line in Plan.from_cfg(runner.plain(cfg.plan)).skipped_claims:
        say(f"[plan] {line}")
    if cfg.report_only:
        metrics = report_only(cfg, out)
        write_metrics(out, metrics)
        return metrics
    t0 = time.perf_counter()
    launcher = _launcher()  # read before rows are composed (composing resets Hydra's state)
    times: dict[str, float] = {}
    waiting: list[str] | None = None
    while True:
        p = _round(cfg, out, launcher, times)
        if not p.deferred or p.deferred == waiting:
            break
        waiting = p.deferred
    for line in p.unmet.values():
        say(f"[plan] {line}")
    if p.blocked:
        say(f"[plan] not run, behind a selection without a choice: {', '.join(p.blocked)}")
    if p.deferred:
        say(f"[plan] not run, behind a selection not made: {', '.join(p.deferred)}")
    report, claims = runner.write_report(p, cfg, out, times)
    metrics = runner.summary(p, claims)
    metrics["time/plan_s"] = time.perf_counter() - t0
    write_metrics(out, metrics)
    if cfg.get("export"):
        n = export(
            [r.result for r in p.rows if r.result is not None],
            Path(str(cfg.export)),
            p.plan.name,
        )
        say(f"[plan] exported {n} row results to {cfg.export}")
    say(f"[plan] done in {metrics['time/plan_s'] / 60:.1f} min; report: {report}")
    return metrics


def _round(cfg: DictConfig, out: Path, launcher: Any, times: dict[str, float]) -> runner.Planned:
    """One round: plan every row that can be planned now, run what is not done, and the rows
    a selection frees while it runs."""
    model = _choice("model")
    with hydra_state_kept():
        p = runner.make_plan(cfg, f"plan-{out.name}", model)
    workers = worker_count(cfg.workers, int(cfg.threads))
    report = out / "report.md"
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

    def more(results: Any) -> tuple[list[Job], dict[str, Any]]:
        return _more(p, cfg, out, model, results)

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
            more=more,
        )
    else:
        run_jobs(
            p.jobs,
            workers,
            int(cfg.threads),
            p.done,
            on_done,
            say,
            fresh=p.wplan.fresh_process,
            more=more,
        )
    return p


def _more(
    p: runner.Planned, cfg: DictConfig, out: Path, model: str | None, results: Any
) -> tuple[list[Job], dict[str, Any]]:
    """Once every row a waiting selection reads has finished: plan again (the choice is made
    and kept), take over the new plan's rows, and hand the run the jobs behind the choice.
    A selection still undecided after that (its rows did not all leave results) stops being
    asked about, so a run plans again at most once per selection."""
    ready = [s for s, needs in p.waiting.items() if all(n in results for n in needs)]
    if not ready:
        return [], {}
    with hydra_state_kept():
        q = runner.make_plan(cfg, f"plan-{out.name}", model)
    known = {j.name for j in p.jobs}
    new = [j for j in q.jobs if j.name not in known]
    p.rows, p.deferred, p.unmet, p.blocked = q.rows, q.deferred, q.unmet, q.blocked
    p.waiting = {s: n for s, n in q.waiting.items() if s not in ready}
    p.jobs += new
    runner.dump_jobs(p, out / "jobs.json")
    rows = sum(j.fn is run_row for j in new)
    say(f"[plan] {', '.join(ready)} decided: {rows} more row(s) to run")
    return q.jobs, q.done


@stage("plan")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg, run_dir())


if __name__ == "__main__":
    main()
