"""The plan runner: the plan as data (refused in one line when wrong), content keys that
travel across machines, rows that run once and accumulate, a throw-away world added with one
conf file and one module, the hub plan dry-run on the local executor, and the SLURM executor
(a mocked submitit: no cluster)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import CHEAP_EVAL

from ssah.config import compose
from ssah.errors import SsahError
from ssah.plan.spec import Plan, WorldPlan, enabled_rows, expand, spell
from ssah.plan.store import content_key
from ssah.procs import Job
from ssah.results import scan

WORLD = {
    "seeds": [0],
    "stage_overrides": {"evaluate": ["toy=@{toy}"]},
    "vars": {"toy": "tiny", "many": ["a=1", "b=@{seed}"]},
    "tables": {"t": True},
}


def _plan(rows: dict) -> Plan:
    return Plan.from_cfg({"name": "p", "rows": rows})


def test_a_bad_plan_is_refused_in_one_line() -> None:
    with pytest.raises(SsahError, match=r"row 'b' needs \['zz'\]"):
        _plan({"a": {"stage": "score"}, "b": {"stage": "score", "needs": ["zz"]}})
    with pytest.raises(SsahError, match="circle"):
        _plan({"a": {"stage": "score", "needs": ["b"]}, "b": {"stage": "score", "needs": ["a"]}})
    with pytest.raises(SsahError, match="stage 'nope'"):
        _plan({"a": {"stage": "nope"}})
    plan = _plan(
        {
            "a": {"stage": "score", "table": "t"},
            "b": {"stage": "prune", "table": "t", "needs": ["a"]},
        }
    )
    world = WorldPlan.from_cfg(WORLD)
    with pytest.raises(SsahError, match=r"rows: unknown row\(s\) \['c'\]"):
        enabled_rows(plan, world, {}, ["c"])
    with pytest.raises(SsahError, match="unknown table switch"):
        enabled_rows(plan, world, {"nope": False}, None)
    assert enabled_rows(plan, world, {}, ["b"]) == ["a", "b"]  # a row pulls in what it needs
    assert enabled_rows(plan, world, {"t": False}, None) == []


def test_values_are_spelled_and_lists_spliced() -> None:
    vals = {"many": ["a=1", "b=@{seed}"], "seed": 3, "x": "@{seed}"}
    assert spell(["@{many}", "c=@{x}", "d=@{row}/f"], vals, {"row"}, "w") == [
        "a=1",
        "b=3",
        "c=3",
        "d=@{row}/f",
    ]
    with pytest.raises(SsahError, match=r"@\{nope\} is neither"):
        spell(["k=@{nope}"], vals, set(), "plan row 'r'")
    plan = _plan({"a": {"stage": "evaluate", "overrides": ["x=@{b}"]}, "b": {"stage": "score"}})
    with pytest.raises(SsahError, match=r"@\{b\}"):
        expand(plan, WorldPlan.from_cfg(WORLD), ["a"], 0, {})


def test_content_key_ignores_where_outputs_go_and_the_logger(tmp_path: Path, monkeypatch) -> None:
    def key(outputs: Path, *extra: str) -> str:
        monkeypatch.setenv("SSAH_OUTPUTS", str(outputs))
        return content_key("train", compose("train", ["toy=tiny", "freeze=none", *extra]))

    a = key(tmp_path / "here")
    assert a == key(tmp_path / "another/machine", "threads=3", "logger=csv")
    assert a != key(tmp_path / "here", "seed=1")
    assert a != key(tmp_path / "here", "toy.seed=1")  # another world: its model path differs


def _toy_plan(tmp_path: Path, *extra: str):
    return compose(
        "plan",
        [
            "world=toy",
            "world.plan.vars.toy=tiny",
            "seeds=[0,1]",
            "ft_steps=2",
            "world.plan.vars.align_overrides=['trainer.max_steps=2']",
            "stage_logger=csv",
            "tables.transfer=false",
            "tables.probe=false",
            # the plan's machinery is under test, not the attacks (tests/test_eval_suite.py):
            # the direct suite only, 8 new tokens (a quarter of the evaluation's time)
            f"eval_overrides={CHEAP_EVAL}",
            # the tiny aligned model never refuses: score it on the data's refusals
            "world.plan.vars.score_overrides=['scoring.calibration.safety.response=field',"
            "'scoring.calibration.safety.columns={refusal:response}']",
            f"results={tmp_path / 'results'}",
            *extra,
        ],
    )


@pytest.mark.slow
def test_toy_plan_runs_once_accumulates_and_reports(tiny_toy, tmp_path: Path) -> None:
    """Two tiny toy worlds: claims first, rows aggregated over worlds; a re-run runs nothing;
    a row whose result was lost (an interrupted run) is the only one run again."""
    from ssah.plan.__main__ import run

    rows = "rows=[prune_scu,prune_dense,prune_random,ft_benign_none,ft_benign_scu_all_cu]"
    summary = run(_toy_plan(tmp_path, rows), tmp_path / "run1")
    report = (tmp_path / "run1" / "report.md").read_text()
    assert report.index("## Claims") < report.index("## Table 1")
    assert "pruning SCU raises ASR" in report and "Tables 2/3" in report
    key = "world0/prune_scu/safety/asr/direct/keyword"
    assert 0.0 <= summary[key] <= 1.0 and "world1/prune_scu/safety/asr/direct/keyword" in summary
    assert "claims/t1_scu_asr/ci_low" in summary
    done = scan(tmp_path / "results")
    assert len(done) == 2 * 6  # 5 rows + the scoring they need, in each of 2 worlds
    assert (tmp_path / "run1" / "world1" / "prune_scu" / "metrics.json").is_file()
    assert all((r.dir / "outcomes.jsonl").is_file() for r in done if r.row.startswith("prune"))
    metas = {r.dir: (r.dir / "meta.json").stat().st_mtime_ns for r in done}
    lost = next(r.dir for r in done if r.row == "prune_dense" and r.seed == 1)
    (lost / "meta.json").unlink()  # as if the run had been killed during this row
    run(_toy_plan(tmp_path, rows), tmp_path / "run2")
    again = {r.dir: (r.dir / "meta.json").stat().st_mtime_ns for r in scan(tmp_path / "results")}
    assert [d for d in again if again[d] != metas.get(d)] == [lost]  # nothing else recomputed
    # the report from the results alone (e.g. copied from another machine): same numbers
    copy = tmp_path / "copied"
    run(_toy_plan(tmp_path, rows, "export=" + str(copy)), tmp_path / "run3")
    only = run(_toy_plan(tmp_path, rows, f"results={copy}", "report_only=true"), tmp_path / "run4")
    assert only[key] == summary[key]


@pytest.mark.slow
def test_a_throwaway_world_is_one_conf_file_and_one_module(
    tiny_toy, tmp_path: Path, monkeypatch
) -> None:
    """A world defined outside ssah (a conf file on Hydra's search path, a module on
    sys.path) runs a two-row plan; its build job runs before the rows that read it."""
    from ssah.plan.__main__ import run

    (tmp_path / "conf" / "world").mkdir(parents=True)
    (tmp_path / "conf" / "world" / "scratch.yaml").write_text(
        textwrap.dedent("""\
        name: scratch
        module: scratch_world
        plan:
          seeds: [0]
          fresh_process: false
          logger: null
          tables: {baseline: true, scoring: true}
          stage_overrides:  # evaluate: the direct suite only, as conftest.CHEAP_EVAL
            evaluate: [toy=tiny, "@{marker}", eval.suites.jailbreak=null, eval.suites.poem=null,
                       eval.suites.purpose=null, eval.suites.prefill=null,
                       eval.generation.max_new_tokens=8]
            score: [toy=tiny, scoring.calibration.safety.response=field,
                    "scoring.calibration.safety.columns={refusal:response}"]
          vars: {evaluate_overrides: [], score_overrides: [], base_model: toy_base,
                 asr: safety/asr/direct/keyword, asr_avg: safety/asr/direct/keyword}
          columns: [[ASR, safety/asr/direct/keyword, 100]]
        """)
    )
    (tmp_path / "scratch_world.py").write_text(
        textwrap.dedent("""\
        from pathlib import Path
        from ssah.worlds.base import WorldJob

        def needed(cfg): return []
        def ensure(cfg, missing): pass
        def prepare(world, workers): pass
        def touch(path):
            Path(path).write_text("built")
            return {"dir": path}
        def jobs(world, seed):
            return [WorldJob("scratch_build", touch, (world["plan"]["vars"]["marker_file"],))]
        def values(world, seed, plan):
            return {"marker": "seed=7"}
        def describe(world): return "a scratch world"
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "built.txt"
    cfg = compose(
        "plan",
        [
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "world=scratch",
            f"+world.plan.vars.marker_file={marker}",
            "rows=[aligned,score_aligned]",
            f"results={tmp_path / 'results'}",
            "stage_logger=csv",
        ],
    )
    summary = run(cfg, tmp_path / "run")
    assert marker.read_text() == "built"
    assert "seed0/aligned/safety/asr/direct/keyword" in summary
    assert "seed0/score_aligned/score/units_share/scu" in summary
    assert {r.row for r in scan(tmp_path / "results")} == {"aligned", "score_aligned"}


@pytest.mark.slow
def test_hub_plan_dry_runs_on_a_standin_locally(tmp_path: Path, outputs_dir: Path) -> None:
    """The paper's plan on Llama-2-7B-chat's stand-in (world=hub standin=true): scoring, a
    pruning row and a frozen fine-tuning row, each through its stage door."""
    from ssah.plan.__main__ import run

    cfg = compose(
        "plan",
        [
            "world=hub",
            "model=llama2_7b_chat",
            "standin=true",
            "rows=[prune_scu,ft_benign_scu_all_cu]",
            "stage_logger=csv",
            f"results={tmp_path / 'results'}",
        ],
    )
    summary = run(cfg, tmp_path / "run")
    assert "seed0/prune_scu/prune/params_fraction" in summary
    assert summary["seed0/ft_benign_scu_all_cu/freeze/frozen_params_fraction"] > 0
    jobs = json.loads((tmp_path / "run" / "jobs.json").read_text())
    after = {j["job"]: j["after"] for j in jobs}
    assert after["seed0/prune_scu"] == ["seed0/score_aligned"]


def _ok(x: int) -> int:
    return x


def _boom() -> None:
    raise RuntimeError("boom")


class _FakeJob:
    """A submitted job that ran at submission (no cluster): its result or its error."""

    def __init__(self, job_id: int, fn, args) -> None:
        self.job_id = job_id
        try:
            self._result, self._error = fn(*args), None
        except Exception as e:  # noqa: BLE001
            self._result, self._error = None, e

    def done(self) -> bool:
        return True

    def result(self):
        if self._error:
            raise self._error
        return self._result

    def results(self):
        return [self.result()]


class _FakeExecutor:
    """submitit.AutoExecutor's surface, recording the parameters it was given."""

    params: dict = {}

    def __init__(self, folder: str, cluster=None, **kw) -> None:
        self.n = 0
        _FakeExecutor.params.update(kw)

    def update_parameters(self, **kw) -> None:
        _FakeExecutor.params.update(kw)

    def submit(self, fn, *args):
        self.n += 1
        return _FakeJob(100 + self.n, fn, args)


def test_slurm_executor_submits_a_row_once_its_needs_finished(tmp_path: Path, monkeypatch) -> None:
    import submitit

    from ssah.plan.slurm import executor_params, run_on_slurm

    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)

    jobs = [
        Job("a", _ok, (1,)),
        Job("b", _ok, (2,), ("a",)),
        Job("c", _boom, (), ("a",)),
        Job("d", _ok, (4,), ("c",)),
    ]
    seen: list[str] = []
    with pytest.raises(SsahError, match="job c failed: RuntimeError: boom"):
        run_on_slurm(
            jobs,
            tmp_path,
            {"partition": "gpu", "timeout_min": 5, "max_num_timeout": 2},
            {},
            lambda n, r: seen.append(n),
            say=lambda m: None,
            poll_s=0,
        )
    record = json.loads((tmp_path / "slurm_jobs.json").read_text())
    assert [r["row"] for r in record] == ["a", "b", "c"]  # d waits for c, which failed
    assert record[1]["after"] == ["a"] and seen == ["a", "b"]
    assert [r["job_id"] for r in record] == ["101", "102", "103"]
    assert (
        _FakeExecutor.params["slurm_partition"] == "gpu"
        and _FakeExecutor.params["timeout_min"] == 5
        and _FakeExecutor.params["slurm_max_num_timeout"] == 2  # a constructor argument
    )
    assert executor_params({"partition": "gpu", "qos": None, "gpus_per_node": 4}) == {
        "slurm_partition": "gpu",
        "gpus_per_node": 4,
    }


@pytest.mark.slow
def test_unknown_world_and_bad_row_override_end_in_one_line(
    tmp_path: Path, outputs_dir: Path
) -> None:
    import subprocess

    for args, needle in (
        (["world=nope"], "world/nope"),
        (["rows=[nope]"], "unknown row(s) ['nope']"),
        (["rows=[aligned]", "world.plan.vars.toy=nope"], "row aligned (world0"),
    ):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "ssah.plan",
                *args,
                f"hydra.run.dir={tmp_path / 'r'}",
                f"results={tmp_path}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert any(needle in ln for ln in err), r.stderr


def test_checkpoint_every_reaches_train_rows_only_and_keeps_their_keys(tmp_path: Path) -> None:
    """On SLURM (+launcher=slurm) train rows checkpoint so a requeued row resumes; the interval
    does not change a row's numbers, so it does not change its key (finished rows stay done)."""
    from ssah.plan.runner import make_plan

    rows = "rows=[ft_benign_none,prune_scu]"
    plain = make_plan(_toy_plan(tmp_path, rows), "g", None)
    slurm = make_plan(_toy_plan(tmp_path, rows, "checkpoint_every=7"), "g", None)
    assert [r.key for r in plain.rows] == [r.key for r in slurm.rows]
    for r in slurm.rows:
        wanted = r.row.stage == "train"
        assert ("checkpoint.every_n_steps=7" in r.args) == wanted, (r.row.name, r.args)
    assert compose("plan", ["+launcher=slurm"]).checkpoint_every == 200


class _StoppedJob(_FakeJob):
    """A running job during which the user presses Ctrl-C; records its cancellation."""

    cancelled: list[int] = []

    def done(self) -> bool:
        raise KeyboardInterrupt

    def cancel(self, check: bool = True) -> None:
        _StoppedJob.cancelled.append(self.job_id)


def test_slurm_executor_adds_the_jobs_a_finished_one_frees(tmp_path: Path, monkeypatch) -> None:
    """`more` (a selection decided mid-run): asked after each finished job; the jobs it adds
    are submitted once their needs, including results it hands over, are there; a job it
    names again (pending, or done) is not submitted twice."""
    import submitit

    from ssah.plan.slurm import run_on_slurm

    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    asked: list[set[str]] = []

    def more(results):
        asked.append(set(results))
        if "a" not in results:
            return [], {}
        return [Job("a", _ok, (1,)), Job("t", _ok, (5,), ("a", "pick"))], {"pick": 0}

    seen: list[str] = []
    out = run_on_slurm([Job("a", _ok, (1,))], tmp_path, {}, {}, lambda n, r: seen.append(n),
                       say=lambda m: None, poll_s=0, more=more)  # fmt: skip
    assert seen == ["a", "t"] and out == {"a": 1, "pick": 0, "t": 5}
    assert asked == [{"a"}, {"a", "pick", "t"}]


def test_stopping_the_slurm_plan_cancels_its_jobs_in_one_line(tmp_path: Path, monkeypatch) -> None:
    import submitit

    from ssah.plan.slurm import run_on_slurm

    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    monkeypatch.setattr(_FakeExecutor, "submit", lambda self, fn, *a: _StoppedJob(7, _ok, (1,)))
    said: list[str] = []
    with pytest.raises(SystemExit) as stop:
        run_on_slurm([Job("a", _ok, (1,))], tmp_path, {}, {}, lambda n, r: None, said.append)
    assert stop.value.code == 130 and _StoppedJob.cancelled == [7]
    assert said[-2:] == [
        "[slurm] cancelled a (job 7)",
        "[slurm] SIGINT: plan stopped; run it again to continue",
    ]


def test_a_failed_slurm_row_is_named_by_its_own_error_line() -> None:
    """The line a failed row gets: the stage's `error:` line, else its traceback's last line
    (as submitit frames it), else the SLURM state of a job that ended without a result."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from ssah.plan.slurm import TRACE_FRAME, why_failed

    class Cancelled:
        state = "CANCELLED by 0"

    trace = "Traceback (most recent call last):\n  File x\nValueError: bad units file\n"
    failed = FailedJobError(f"Job failed:\n{TRACE_FRAME}\n{trace}{TRACE_FRAME}\n  - a.err\n")
    log = "[ssah] ...\nerror: units=/x: no such file; run the score row first\n"
    assert why_failed(None, failed, log) == "units=/x: no such file; run the score row first"
    assert why_failed(None, failed, "") == "ValueError: bad units file"
    lost = UncompletedJobError("no result")
    assert why_failed(Cancelled(), lost, "").startswith("CANCELLED without a result")


def test_a_row_done_under_another_name_with_its_key_is_adopted_not_run(tmp_path: Path) -> None:
    """Content keys: a finished row of another name (another plan's) with the same key and
    stage has this row's numbers, so the row takes them over (meta names its source and keeps
    when it was made) instead of running; a twin of another stage is not taken."""
    from ssah.plan.runner import make_plan

    rows = "rows=[prune_scu]"
    first = make_plan(_toy_plan(tmp_path, rows), "g", None)
    row = next(r for r in first.rows if r.row.name == "prune_scu" and r.row.seed == 0)
    assert row.result is None and any(j.name == "world0/prune_scu" for j in first.jobs)
    twin = row.dir.parent / f"other_row-{row.key}"
    twin.mkdir(parents=True)
    (twin / "metrics.json").write_text(json.dumps({"safety/asr/direct/keyword": 0.25}))
    made = {"stage": "score", "row": "other_row", "finished": "2026-01-01 00:00:00 UTC"}
    (twin / "meta.json").write_text(json.dumps(made))
    other = make_plan(_toy_plan(tmp_path, rows), "g", None)  # another stage: still to run
    assert row.row.stage != "score" and "world0/prune_scu" in [j.name for j in other.jobs]
    made["stage"] = row.row.stage
    (twin / "meta.json").write_text(json.dumps(made))
    again = make_plan(_toy_plan(tmp_path, rows), "g", None)
    assert "world0/prune_scu" not in [j.name for j in again.jobs]
    meta = json.loads((row.dir / "meta.json").read_text())
    assert (meta["row"], meta["same_as"], meta["key"]) == ("prune_scu", twin.name, row.key)
    assert meta["finished"] == made["finished"] and meta["instance"] == row.instance
    assert json.loads((row.dir / "metrics.json").read_text()) == {"safety/asr/direct/keyword": 0.25}
    assert json.loads((twin / "meta.json").read_text())["row"] == "other_row"  # source untouched
    assert not list(row.dir.parent.glob("*.adopting"))
