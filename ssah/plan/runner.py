"""From a composed `python -m ssah.plan` config to jobs, and from results to the report.

1. The world (conf/world/<name>.yaml + its module) and the plan (conf/plan/<name>.yaml) give
   the rows of every instance, their overrides spelled out (ssah.plan.spec).
2. Every row's stage config is composed and validated before any row runs (a bad override
   ends the run in seconds, naming the row), and keyed by content (ssah.plan.store).
3. Rows whose result exists are done; the rest become jobs, with the world's build jobs, in
   the order their needs allow, on the local worker pool or on SLURM (ssah.plan.slurm). A
   job carries the config its row was keyed by (ssah.config.hand_over), not its overrides:
   the row runs what was composed and validated here, never a second composition.
4. The report is rendered from the results (ssah.reporting.plan_report): after every row,
   and from any set of results alone (ssah.plan.reports: `report_only=true results=DIR`,
   `make reports`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from ssah.config import compose, hand_over
from ssah.errors import SsahError
from ssah.plan import select as selection
from ssah.plan.rejudge import rejudge_result
from ssah.plan.reports import intro, numbers, runs_of, spell_claim, spell_table
from ssah.plan.row import run_row
from ssah.plan.spec import Plan, PlannedRow, WorldPlan, enabled_rows, expand, spell, with_dirs
from ssah.plan.store import adopt, content_key, twin
from ssah.procs import Job
from ssah.reporting.judges import measured_from
from ssah.reporting.plan_report import Report, claim_metrics, render
from ssah.results import Result, load
from ssah.schema import validate
from ssah.tables import Column
from ssah.worlds.ensure import world_module

UNKEYED_OVERRIDES = ("logger", "~logger", "++sweep_name", "threads", "checkpoint.")


@dataclass
class RowJob:
    """A planned row of one instance: its overrides (what a user would type), its composed
    config (ssah.config.hand_over's data: what its job runs), result dir and key."""

    row: PlannedRow
    instance: str
    args: list[str]
    dir: Path
    key: str
    result: Result | None = None
    config: dict[str, Any] | None = None  # None for a selection row (a rule, not a stage)


@dataclass
class Planned:
    """Everything one run of the plan knows before it starts."""

    plan: Plan
    world: dict[str, Any]
    wplan: WorldPlan
    module: ModuleType
    tables_on: dict[str, bool]
    rows: list[RowJob] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)  # behind a selection not made yet
    blocked: list[str] = field(default_factory=list)  # behind a selection that chose none
    waiting: dict[str, tuple[str, ...]] = field(default_factory=dict)  # selection -> its rows
    unmet: dict[str, str] = field(default_factory=dict)  # selection -> why it chose nothing
    worlds: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> its world


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _plan_values(cfg: DictConfig, wplan: WorldPlan) -> dict[str, Any]:
    """The plan-level settings that replace the world's @{vars} when given."""
    out: dict[str, Any] = {}
    if cfg.get("ft_steps") is not None:
        out["ft_steps"] = cfg.ft_steps  # a bad value is refused where a row uses it
    if cfg.get("eval_overrides") is not None:
        out["eval_overrides"] = list(cfg.eval_overrides)
    out["overrides"] = [*wplan.vars.get("overrides", []), *list(cfg.get("overrides") or [])]
    return out


def _logger(cfg: DictConfig, wplan: WorldPlan, stage: str, group: str) -> list[str]:
    name = cfg.get("stage_logger") or wplan.logger
    if not name or stage == "score":
        return ["~logger"] if stage not in ("score", "transfer") else []
    return [f"logger={name}", f"++sweep_name={group}"]


def _checkpoint(cfg: DictConfig, stage: str) -> list[str]:
    """Train rows keep a checkpoint when `checkpoint_every` > 0, so a requeued job resumes."""
    every = int(cfg.get("checkpoint_every") or 0)
    return [f"checkpoint.every_n_steps={every}"] if stage == "train" and every > 0 else []


def make_plan(cfg: DictConfig, group: str, model_choice: str | None) -> Planned:
    """Rows of every instance, composed, validated and keyed; jobs for what is not done."""
    world = plain(cfg.world)
    if not isinstance(world, dict) or "plan" not in world or "module" not in world:
        raise SsahError("world: this world has no `plan:`/`module:`; see conf/world/toy.yaml.")
    module = world_module(str(world["module"]))
    plan = Plan.from_cfg(plain(cfg.plan))
    wplan = WorldPlan.from_cfg(world["plan"])
    if cfg.get("executor") not in ("local", "slurm"):
        raise SsahError(f"executor={cfg.get('executor')}: must be local or slurm.")
    tables = {str(k): bool(v) for k, v in (plain(cfg.get("tables")) or {}).items() if v is not None}
    names = enabled_rows(plan, wplan, tables, wanted_rows(plan, cfg.rows))
    seeds = [
        int(s) for s in (cfg.seeds if cfg.get("seeds") is not None else plan.seeds or wplan.seeds)
    ]
    p = Planned(plan, world, wplan, module, {**wplan.tables, **tables})
    info = {"model": model_choice, "standin": bool(cfg.get("standin"))}
    values = _plan_values(cfg, wplan)
    results = Path(str(cfg.results)) / str(world.get("name", "world"))
    threads = [f"threads={int(cfg.threads)}"]
    for i, seed in enumerate(seeds):
        inst = wplan.instance_dir.format(seed=seed)
        full = i < wplan.full or cfg.rows is not None
        mine = [n for n in names if full or plan.rows[n].claim]
        w = instance_world(module, world, seed) if plan.align_seed_from_instance else world
        p.worlds[seed] = w
        vals = {**values, **module.values(w, seed, info)}
        dirs: dict[str, str] = {}
        mine_rows: dict[str, RowJob] = {}
        choices: dict[str, list[str]] = {}
        for row in expand(plan, wplan, _ordered(plan, mine), seed, vals):
            if any(f"{inst}/{n}" in (*p.unmet, *p.blocked) for n in row.needs):
                p.blocked.append(f"{inst}/{row.name}")
                continue
            if any(f"{inst}/{n}" in p.deferred for n in row.needs):
                p.deferred.append(f"{inst}/{row.name}")
                continue
            if row.stage == selection.STAGE:
                rj = _selection(p, row, inst, results, mine_rows, {**wplan.vars, **vals})
                if rj is None:
                    p.deferred.append(f"{inst}/{row.name}")
                    p.waiting[f"{inst}/{row.name}"] = tuple(f"{inst}/{n}" for n in row.needs)
                    continue
                assert rj.result is not None
                dirs[row.name] = str(rj.dir)
                mine_rows[row.name] = rj
                p.rows.append(rj)
                try:
                    choices[row.name] = selection.chosen_overrides(
                        row.name, rj.result.meta["choice"]
                    )
                except SsahError as e:  # the rows behind it cannot run; the others still do
                    p.unmet[f"{inst}/{row.name}"] = str(e)
                continue
            row = replace(row, overrides=tuple(selection.splice(row.overrides, choices)))
            args = [*with_dirs(row, dirs), *threads, *_logger(cfg, wplan, row.stage, group)]
            args += _checkpoint(cfg, row.stage)
            try:
                stage_cfg = compose(row.stage, args)
                handed = hand_over(stage_cfg)  # what the row's job runs: this config, whole
                validate(stage_cfg)
                key = content_key(row.stage, stage_cfg, cfg.results)
            except (SsahError, HydraException) as e:
                msg = " ".join(str(e).split())
                raise SsahError(
                    f"row {row.name} ({inst}: python -m ssah.{row.stage} ...): {msg}"
                ) from None
            out = results / f"{row.name}-{key}"
            dirs[row.name] = str(out)
            mine_rows[row.name] = RowJob(row, inst, args, out, key, load(out), handed)
            p.rows.append(mine_rows[row.name])
    roots = {str(Path(str(cfg.results)).resolve()): "<results>", str(cfg.results): "<results>"}
    roots[str(Path(str(cfg.paths.outputs)).resolve())] = "<outputs>"
    _jobs(p, seeds, results / "logs", roots)
    return p


def _selection(
    p: Planned,
    row: PlannedRow,
    inst: str,
    results: Path,
    jobs: Mapping[str, RowJob],
    values: Mapping[str, Any],
) -> RowJob | None:
    """A selection row of one instance: its choice made (and kept as a result) once every
    row it reads has finished; None while one has not (the rows behind it are planned when it has)."""
    spec = p.plan.rows[row.name].select
    rule = selection.parse(row.name, spec, list(p.plan.rows))
    rule = selection.spelled(rule, lambda s: spell([s], values, set(), f"plan row {row.name!r}")[0])
    if any(jobs.get(n) is None or jobs[n].result is None for n in selection.needs_of(rule)):
        return None
    done = {
        n: selection.Candidate(jobs[n].key, jobs[n].result.metrics, tuple(jobs[n].args))  # type: ignore[union-attr]
        for n in selection.needs_of(rule)
    }
    key = selection.key_of(rule, done)
    out = results / f"{row.name}-{key}"
    if load(out) is None:
        meta = {"plan": p.plan.name, "row": row.name, "seed": row.seed, "instance": inst,
                "stage": selection.STAGE, "world": p.world.get("name"), "key": key,
                "overrides": []}  # fmt: skip
        selection.write(out, selection.decide(row.name, rule, done), meta)
    return RowJob(row, inst, [], out, key, load(out))


def wanted_rows(plan: Plan, rows: Any) -> list[str] | None:
    """`rows=[...]`: a grid template stands for all its rows."""
    if rows is None:
        return None
    out: list[str] = []
    for r in (str(x) for x in rows):
        out += [n for _, n in plan.grids[r]] if r in plan.grids else [r]
    return out


def instance_world(module: ModuleType, world: dict[str, Any], seed: int) -> dict[str, Any]:
    """The world of one instance when the plan ties its alignment seed to the instance's seed
    (plan `align_seed_from_instance: true`): the world module's `seeded(world, seed)`."""
    seeded = getattr(module, "seeded", None)
    if seeded is None:
        raise SsahError(
            f"plan: align_seed_from_instance=true, but world {world.get('name')!r} has no "
            "seeded(world, seed) in its module; add one or set plan.align_seed_from_instance=false."
        )
    return dict(seeded(world, seed))


def _ordered(plan: Plan, names: list[str]) -> list[str]:
    """Needs before the rows that need them (conf order otherwise)."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen or n not in names:
            return
        seen.add(n)
        for d in plan.rows[n].needs:
            visit(d)
        out.append(n)

    for n in names:
        visit(n)
    return out


def _portable(arg: str, roots: Mapping[str, str]) -> str:
    """An override with the results and outputs dirs written `<results>`, `<outputs>`, so a
    row's meta.json (and a report's command list) reads the same on every machine."""
    for root, name in sorted(roots.items(), key=lambda kv: -len(kv[0])):
        arg = arg.replace(root + "/", name + "/")
    return arg


def _jobs(p: Planned, seeds: list[int], logs: Path, roots: Mapping[str, str]) -> None:
    """World build jobs, then every row not done, in the plan's start order."""
    early: dict[int, list[str]] = {}
    late: dict[int, list[str]] = {}
    names: set[str] = set()
    for seed in seeds:
        for wj in p.module.jobs(p.worlds.get(seed, p.world), seed):
            (early if wj.early else late).setdefault(seed, []).append(wj.name)
            if wj.name in names:
                continue
            names.add(wj.name)
            if wj.built is not None:
                p.done[wj.name] = wj.built  # built before: nothing to run
            else:
                p.jobs.append(Job(wj.name, wj.fn, wj.args, (), logs / f"{wj.name}.log"))
    order = {n: i for i, n in enumerate(p.plan.start_order)}
    rows = sorted(p.rows, key=lambda r: order.get(r.row.name, len(order)))
    for r in rows:
        name = f"{r.instance}/{r.row.name}"
        if r.result is None and r.config is not None:
            same = twin(r.dir.parent, r.key, r.row.stage, r.dir.name)
            if same is not None:  # done under another row's name: the same numbers
                adopt(same, r.dir, _meta(p, r, roots))
                r.result = load(r.dir)
        if r.result is not None and p.wplan.rejudge and rejudge_result(r.result, p.wplan.rejudge):
            r.result = load(r.dir)  # a row done before the world's judges changed gains them
        if r.result is not None:
            p.done[name] = r.result.metrics
            continue
        waits = early.get(r.row.seed, []) + ([] if r.row.base_only else late.get(r.row.seed, []))
        after = tuple(waits) + tuple(f"{r.instance}/{n}" for n in r.row.needs)
        log = r.dir / "log.txt"
        job_args = (r.row.stage, r.config, str(r.dir), _meta(p, r, roots))
        p.jobs.append(Job(name, run_row, job_args, after, log))


def _meta(p: Planned, r: RowJob, roots: Mapping[str, str]) -> dict[str, Any]:
    """What meta.json says of the row besides when and where it ran (ssah.plan.store)."""
    return {
        "plan": p.plan.name,
        "row": r.row.name,
        "seed": r.row.seed,
        "instance": r.instance,
        "stage": r.row.stage,
        "world": p.world.get("name"),
        "key": r.key,
        "rejudge": list(p.wplan.rejudge),
        "overrides": [_portable(a, roots) for a in r.args if not a.startswith(UNKEYED_OVERRIDES)],
    }


def report_of(p: Planned, cfg: DictConfig, world_text: str, times: Mapping[str, float]) -> Report:
    """The report of a run in progress: the rows finished so far, every row's command."""
    commands: dict[str, str] = {}
    for r in p.rows:  # the first instance's command of each row
        if r.row.stage == selection.STAGE:
            continue  # a rule, not a command: its table shows it
        args = " ".join(a for a in r.args if not a.startswith(UNKEYED_OVERRIDES))
        commands.setdefault(r.row.name, f"python -m ssah.{r.row.stage} {args}")
    inst = sorted({r.instance for r in p.rows})
    return Report(
        f"ssah: the paper in miniature on {p.world.get('name')}",
        intro(p.plan.name, str(p.world.get("name")), inst, str(cfg.results)),
        runs_of([r.result for r in p.rows if r.result is not None], p.wplan.alias),
        [Column(h, k, s) for h, k, s in p.wplan.columns],
        world_text,
        [str(x) for x in p.wplan.vars.get("avg_over", [])],
        dict(times),
        commands,
        judges=measured_from(p.wplan.judge_error),
        judges_source=str(p.wplan.judge_error or ""),
    )


def write_report(
    p: Planned, cfg: DictConfig, out: Path, times: Mapping[str, float]
) -> tuple[Path, dict[str, float]]:
    """report.md in the run dir, links to the rows' result dirs, and the claims' numbers."""
    from ssah.io import atomic_write_text

    rep = report_of(p, cfg, p.module.describe(p.world), times)
    rep.figures = out
    claims = [spell_claim(c, p.wplan.vars) for c in p.plan.claims]
    tables = [spell_table(t, p.wplan.vars) for t in p.plan.tables]
    for r in p.rows:
        link = out / r.instance / r.row.name
        if r.dir.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(r.dir.resolve(), target_is_directory=True)
    text = render(tables, claims, rep, p.tables_on)
    return atomic_write_text(out / "report.md", text), claim_metrics(claims, rep)


def summary(p: Planned, claims: Mapping[str, float]) -> dict[str, Any]:
    """The plan run's metrics.json: every row's numbers as <instance>/<row>/<key>, the claims."""
    return {**numbers(r.result for r in p.rows if r.result is not None), **claims}


def status_line(p: Planned) -> str:
    todo = [j for j in p.jobs if j.fn is run_row]
    later = f", {len(p.deferred)} behind a selection not made yet" if p.deferred else ""
    later += f", {len(p.blocked)} behind a selection that chose none" if p.blocked else ""
    return f"{len(p.rows)} rows, {len(p.rows) - len(todo)} done already, {len(todo)} to run{later}"


def dump_jobs(p: Planned, path: Path) -> None:
    """The job graph as JSON (what runs, what it waits for): for reading and for tests."""
    rows = [
        {"job": j.name, "after": list(j.after), "log": str(j.log) if j.log else None}
        for j in p.jobs
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
