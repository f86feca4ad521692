"""Selection rows (ssah/plan/select.py): the rule chooses on the candidates' results alone,
its choice is a content-keyed result the report shows, later rows get the chosen overrides,
bad rules end in one line; and a reduced defence plan on the tiny toy world, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssah.errors import SsahError
from ssah.io import CONF_DIR
from ssah.plan import select
from ssah.plan.spec import Plan
from ssah.results import Result


def _rule(**kw):
    spec = {"candidates": ["v_*"], "reference": "v0", "minimize": "m",
            "subject_to": [{"metric": "o", "max_above": 0.05}], **kw}  # fmt: skip
    return select.parse("pick", spec, ["v0", "v_a", "v_b", "v_c", "t"])


def _done(values: dict[str, tuple[float, float]]) -> dict[str, select.Candidate]:
    return {
        n: select.Candidate(f"k{n}", {"m": m, "m/n": 10, "o": o},
                            ("toy=tiny", f"defence.steer.alpha={m}", "+defence.action=stop"))
        for n, (m, o) in values.items()
    }  # fmt: skip


def test_the_rule_picks_the_lowest_among_candidates_within_the_bound() -> None:
    rule = _rule()
    assert rule.candidates == ("v_a", "v_b", "v_c") and select.needs_of(rule)[-1] == "v0"
    done = _done({"v0": (0.9, 0.10), "v_a": (0.2, 0.30), "v_b": (0.5, 0.12), "v_c": (0.5, 0.0)})
    c = select.decide("pick", rule, done)
    assert c["chosen"] == "v_b"  # v_a is lower but breaks the bound; v_b ties v_c and comes first
    assert [x["eligible"] for x in c["candidates"]] == [False, True, True]
    assert c["overrides"] == ["defence.steer.alpha=0.5", "+defence.action=stop"]
    assert select.splice(["a=1", "@{pick}", "@{other}"], {"pick": c["overrides"]}) == [
        "a=1", "defence.steer.alpha=0.5", "+defence.action=stop", "@{other}"]  # fmt: skip
    # the key follows the rule and the rows it read, nothing else
    assert select.key_of(rule, done) == select.key_of(rule, dict(done))
    other = {**done, "v_a": select.Candidate("changed", done["v_a"].metrics, ())}
    assert select.key_of(rule, other) != select.key_of(rule, done)
    nobody = _done({"v0": (0.9, 0.0), "v_a": (0.2, 0.3), "v_b": (0.5, 0.3), "v_c": (0.5, 0.3)})
    none = select.decide("pick", rule, nobody)
    assert none["chosen"] is None
    with pytest.raises(SsahError, match="selection pick: no candidate meets"):
        select.chosen_overrides("pick", none)
    high = select.decide("pick", _rule(minimize=None, maximize="m", subject_to=[]), done)
    assert high["chosen"] == "v_b"  # the highest; tie with v_c -> the first


def test_a_candidate_whose_answers_collapse_is_not_chosen() -> None:
    """Degenerate text refuses nothing and complies with nothing: it meets an over-refusal bound
    and minimises ASR (seed 1's activation addition at alpha 4, 2026-12-06). The utility bound
    (at most 3 points below the reference) is what keeps it out."""
    rule = _rule(
        subject_to=[{"metric": "o", "max_above": 0.05}, {"metric": "u", "min_above": 0.03}]
    )
    done = {
        n: select.Candidate(f"k{n}", {"m": m, "o": o, "u": u}, ())
        for n, (m, o, u) in {"v0": (0.6, 0.1, 0.775), "v_a": (0.05, 0.0, 0.0),
                             "v_b": (0.3, 0.1, 0.75), "v_c": (0.2, 0.1, 0.7)}.items()
    }  # fmt: skip
    c = select.decide("pick", rule, done)
    assert c["chosen"] == "v_b"  # v_a: lowest, within the over-refusal bound, QA 0; v_c: -7.5
    assert [[b["ok"] for b in x["bounds"]] for x in c["candidates"]] == [
        [True, False], [True, True], [True, False]]  # fmt: skip
    assert c["candidates"][0]["bounds"][1]["bound"] == "u >= reference - 0.03"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"candidates": ["zz*"], "minimize": "m"}, "match no row"),
        ({"candidates": ["v_*"]}, "exactly one of select.minimize"),
        ({"candidates": ["v_*"], "minimize": "m", "bogus": 1}, r"unknown select field\(s\) \['bogus'\]"),
        ({"candidates": ["v_*"], "minimize": "m", "subject_to": [{"metric": "o", "max_above": 1}]},
         "needs select.reference"),
        ({"candidates": "v_a", "minimize": "m"}, "must be a list"),
    ],
)  # fmt: skip
def test_a_bad_rule_is_one_line_naming_the_key(spec, message) -> None:
    with pytest.raises(SsahError, match=message):
        select.parse("pick", spec, ["v_a", "v_b"])


def test_a_missing_metric_names_the_candidate_and_the_key() -> None:
    done = _done({"v0": (0.1, 0.0), "v_a": (0.2, 0.0), "v_b": (0.3, 0.0), "v_c": (0.3, 0.0)})
    with pytest.raises(SsahError, match="candidate 'v_a' has no metric 'nope'"):
        select.decide("pick", _rule(minimize="nope"), done)


def test_plan_rows_need_their_selection_and_its_candidates() -> None:
    plan = Plan.from_cfg({"name": "p", "rows": {
        "v0": {"stage": "evaluate"}, "v_a": {"stage": "evaluate"}, "v_b": {"stage": "evaluate"},
        "pick": {"stage": "select", "select": {"candidates": ["v_*"], "minimize": "m"}},
        "t": {"stage": "evaluate", "overrides": ["x=1", "@{pick}"]},
    }})  # fmt: skip
    assert plan.rows["pick"].needs == ("v_a", "v_b")
    assert plan.rows["t"].needs == ("pick",)
    with pytest.raises(SsahError, match="goes with stage: select"):
        Plan.from_cfg({"rows": {"a": {"stage": "evaluate", "select": {"candidates": ["b"]}}}})


def test_the_defence_plan_composes_on_both_worlds() -> None:
    from ssah.plan.reports import plan_settings

    for world in ("toy", "smollm2"):
        plan, wplan, _ = plan_settings(world, "defence")
        assert "val_none" not in plan.rows["choose_defence"].needs[:-1]  # the reference, last
        assert {"choose_defence"} <= set(plan.rows["test_reevaluate"].needs)
        assert {"defence_val", "defence_test", "aligned_path"} <= set(wplan.vars)
        for sel in ("choose_defence", "choose_actadd"):  # both rules bound utility
            bounds = plan.rows[sel].select["subject_to"]
            assert {"metric": "utility/accuracy", "min_above": 0.03} in bounds
        assert "eval/utility=none" not in wplan.vars["defence_val"]  # so val rows measure it


def test_defence_candidates_do_not_read_the_choice_written_back() -> None:
    """The validation choice is written into conf/defence/reevaluate.yaml; a candidate that left
    one of those keys to that file would change its content key (and be re-run) each time a
    choice is written back, as the stop rows did on 2026-12-06 (alpha 1 -> 4)."""
    from omegaconf import OmegaConf

    from ssah.plan.reports import plan_settings

    chosen = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "defence" / "reevaluate.yaml"))
    leaves = {f"defence.{k}.{kk}" if isinstance(v, dict) else f"defence.{k}"
              for k, v in chosen.items() if k not in ("defaults", "name")
              for kk in (v if isinstance(v, dict) else [None])}  # fmt: skip
    assert {"defence.action", "defence.monitor.direction", "defence.steer.alpha"} <= leaves
    plan, _, _ = plan_settings("smollm2", "defence")
    candidates = [n for n in plan.rows["choose_defence"].needs if n != "val_none"]
    assert len(candidates) >= 10
    for name in candidates:
        given = {o.split("=", 1)[0] for o in plan.rows[name].overrides if isinstance(o, str)}
        assert "defence=reevaluate" in plan.rows[name].overrides
        assert leaves <= given, f"{name} leaves {sorted(leaves - given)} to reevaluate.yaml"


VAL = ("['seed=@{seed}','eval.harmful.name=toy_harmful_calib','eval.harmful.source=\\${toy:data}/harmful_calib.jsonl',"
       "'eval.harmful.limit=12','eval.benign.name=toy_edgy_train','eval.benign.source=\\${toy:data}/edgy_train.jsonl',"
       "'eval.suites.direct=null','eval.suites.jailbreak=null','eval.suites.poem=null','eval.suites.purpose=null',"
       "'eval.suites.prefill.depths=[4]','eval.utility.generation.data.source=\\${toy:data}/utility_train.jsonl',"
       "'eval.utility.generation.data.limit=2','eval.utility.ppl=null','eval.utility.mc=null',"
       "'eval.validation.harmful.limit=8',"
       "'eval.validation.benign.limit=8']")  # fmt: skip
TEST = ("['seed=@{seed}','eval.suites.prefill.depths=[4]','eval.harmful.limit=6','eval.benign.limit=4',"
        "'eval.suites.jailbreak.limit=2','eval.suites.poem.limit=2','eval.suites.purpose.limit=2',"
        "'eval.utility.generation.data.limit=2','eval.utility.ppl.data.limit=2',"
        "'eval.utility.mc.tasks.toy_answers.from_answers.data.limit=4',"
        "'eval.validation.harmful.limit=8','eval.validation.benign.limit=8']")  # fmt: skip


@pytest.mark.slow
def test_defence_plan_on_the_toy_world_chooses_on_validation_then_tests(
    tiny_toy, tmp_path: Path
) -> None:
    """Validation rows, the choice (a result with every candidate's value), test rows with the
    chosen overrides, the report's selection table; a re-run decides and runs nothing again."""
    from ssah.config import compose
    from ssah.plan.__main__ import run
    from ssah.results import scan

    def cfg(*extra: str):
        return compose("plan", [
            "plan=defence", "world=toy", "world.plan.vars.toy=tiny", "seeds=[0]", "stage_logger=csv",
            "plan.rows.choose_defence.select.candidates=[val_mean_diff_steer_a1,val_probe_stop]",
            "plan.rows.choose_defence.select.subject_to=[{metric:safety/over_refusal,max_above:1.0},"
            "{metric:utility/accuracy,min_above:1.0}]",
            "rows=[test_none,test_reevaluate]", "overrides=['eval.generation.max_new_tokens=6']",
            f"world.plan.vars.defence_val={VAL}", f"world.plan.vars.defence_test={TEST}",
            f"results={tmp_path / 'results'}", *extra,
        ])  # fmt: skip

    run(cfg(), tmp_path / "run1")
    done = {r.row: r for r in scan(tmp_path / "results")}
    assert {"val_none", "val_mean_diff_steer_a1", "val_probe_stop", "choose_defence",
            "test_none", "test_reevaluate"} <= set(done)  # fmt: skip
    choice = done["choose_defence"].meta["choice"]
    assert [c["row"] for c in choice["candidates"]] == ["val_mean_diff_steer_a1", "val_probe_stop"]
    assert choice["chosen"] in ("val_mean_diff_steer_a1", "val_probe_stop")
    values = {c["row"]: c["value"] for c in choice["candidates"]}
    metric = "safety/asr/prefill_k4/keyword"
    assert values == {n: done[n].metrics[metric] for n in values}  # from the validation rows
    assert values[choice["chosen"]] == min(values.values())
    qa = {c["row"]: c["bounds"][1]["value"] for c in choice["candidates"]}
    assert qa == {n: done[n].metrics["utility/accuracy"] for n in qa}  # val rows measure utility
    test = json.loads((done["test_reevaluate"].dir / "meta.json").read_text())["overrides"]
    assert all(o in test for o in choice["overrides"]) and "defence=reevaluate" in test
    report = (tmp_path / "run1" / "report.md").read_text()
    assert "Validation: what the selection rows chose" in report and "**chosen**" in report
    assert "Test: the aligned model, defended and not" in report and "n=6" in report
    stamps = {r.dir: (r.dir / "meta.json").stat().st_mtime_ns for r in scan(tmp_path / "results")}
    run(cfg(), tmp_path / "run2")
    again = {r.dir: (r.dir / "meta.json").stat().st_mtime_ns for r in scan(tmp_path / "results")}
    assert again == stamps  # nothing decided or run twice


@pytest.mark.slow
def test_a_seeds_rows_behind_its_selection_start_before_other_seeds_candidates_finish(
    tiny_toy, tmp_path: Path, capsys
) -> None:
    """One round, not one per selection over all seeds: seed 0's choice is made as soon as its
    own candidates finished, while seed 1's still wait to run, and its test row joins the run."""
    from ssah.config import compose
    from ssah.plan.__main__ import run
    from ssah.results import scan

    args = [
        "plan=defence", "world=toy", "world.plan.vars.toy=tiny", "seeds=[0,1]", "workers=1",
        "plan.rows.choose_defence.select.candidates=[val_mean_diff_steer_a1,val_probe_stop]",
        "plan.rows.choose_defence.select.subject_to=[]", "rows=[test_reevaluate]",
        "overrides=['eval.generation.max_new_tokens=4']",
        f"world.plan.vars.defence_val={VAL}", f"world.plan.vars.defence_test={TEST}",
        f"results={tmp_path / 'results'}",
    ]  # fmt: skip
    run(compose("plan", args), tmp_path / "run")
    lines = capsys.readouterr().out.splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    assert sum(line.startswith("[plan] ") and " rows, " in line for line in lines) == 1
    decided = first("[plan] world0/choose_defence decided: 1 more row(s) to run")
    assert decided < first("[jobs] start world1/val_mean_diff_steer_a1")
    assert (
        decided < first("[plan] world1/choose_defence decided") < first("[jobs] start world1/test")
    )
    graph = {j["job"] for j in json.loads((tmp_path / "run" / "jobs.json").read_text())}
    assert {"world0/test_reevaluate", "world1/test_reevaluate"} <= graph  # the graph that ran
    done = {(r.row, r.instance): r for r in scan(tmp_path / "results")}
    for inst in ("world0", "world1"):
        chosen = done[("choose_defence", inst)].meta["choice"]["overrides"]
        assert chosen and set(chosen) <= set(done[("test_reevaluate", inst)].meta["overrides"])
    # a rule no candidate meets: one round, nothing runs, the rows behind it are named
    none = compose("plan", [*args, "plan.rows.choose_defence.select.subject_to="
                            "[{metric:utility/accuracy,min_above:-1.0}]"])  # fmt: skip
    run(none, tmp_path / "run_none")
    out = capsys.readouterr().out.splitlines()
    status = [line for line in out if line.startswith("[plan] ") and " rows, " in line]
    assert len(status) == 1 and "0 to run, 2 behind a selection that chose none" in status[0]
    assert (
        "[plan] not run, behind a selection without a choice: world0/test_reevaluate, "
        "world1/test_reevaluate"
        in out
        and not any(x.startswith("[jobs] start") for x in out)
    )


def test_the_defence_claims_say_the_worlds_prefill_depth() -> None:
    """The prefill claims' labels come from the world's var (the toy runs k = 4, not 10)."""
    from ssah.plan.reports import plan_settings, spell_claim

    for world, k in (("toy", 4), ("smollm2", 10)):
        plan, wplan, _ = plan_settings(world, "defence")
        claims = {c["id"]: spell_claim(c, wplan.vars) for c in plan.claims}
        for cid in ("d_prefill", "d_prefill_goal"):
            assert f"k = {k}" in claims[cid]["claim"] and "@{" not in claims[cid]["claim"]
            assert claims[cid]["metric"].startswith(f"safety/asr/prefill_k{k}/")


def test_every_defence_table_can_be_switched_off(outputs_dir: Path) -> None:
    from ssah.config import compose
    from ssah.plan.reports import plan_settings
    from ssah.plan.runner import make_plan

    plan, _, _ = plan_settings("toy", "defence")
    ids = [str(t["id"]) for t in plan.tables]
    off = [f"tables.{t}=false" for t in ids if t != "defence_val"]
    p = make_plan(compose("plan", ["plan=defence", "world=toy", "seeds=[0]", *off]), "g", None)
    assert {p.tables_on[t] for t in ids if t != "defence_val"} == {False}
    assert {plan.rows[r.row.name].table for r in p.rows} == {"defence_val"}  # test, FT: off
    with pytest.raises(SsahError, match="unknown table switch"):
        make_plan(compose("plan", ["world=toy", "tables.defence=false"]), "g", None)  # paper plan


def _result(tmp: Path, row: str, inst: str, finished: str, **meta) -> Result:
    d = tmp / f"{row}-{inst}-{finished}"
    m = {"row": row, "instance": inst, "finished": finished, "stage": "evaluate", **meta}
    return Result(d, {"safety/asr": 0.5}, m)


def test_reports_do_not_render_rows_made_under_an_earlier_choice(tmp_path: Path) -> None:
    """A rule changed after test rows ran: the newest selection result chooses another setting
    (seed1) or none (seed2); the test rows made under the old choice are left out of the report,
    with the reason in it, while a row whose choice still holds (seed0) renders."""
    from ssah.plan.reports import latest, plan_settings, report_from, superseded

    plan, wplan, _ = plan_settings("toy", "defence")
    steer = ["defence=reevaluate", "defence.action=steer", "defence.steer.alpha=4.0"]
    stop = ["defence=reevaluate", "defence.action=stop"]

    def choice(chosen, overrides):
        return {"stage": "select", "choice": {"chosen": chosen, "overrides": overrides}}

    results = [
        _result(tmp_path, "choose_defence", "seed0", "1", **choice("val_a", steer)),
        _result(tmp_path, "test_reevaluate", "seed0", "2", overrides=["x=1", *steer]),
        _result(tmp_path, "choose_defence", "seed1", "1", **choice("val_a", steer)),
        _result(tmp_path, "test_reevaluate", "seed1", "2", overrides=["x=1", *steer]),
        _result(tmp_path, "choose_defence", "seed1", "3", **choice("val_b", stop)),
        _result(tmp_path, "choose_actadd", "seed2", "3", **choice(None, [])),
        _result(tmp_path, "test_actadd", "seed2", "2", overrides=["defence=actadd"]),
        _result(tmp_path, "test_none", "seed2", "2", overrides=["x=1"]),
    ]
    stale = superseded(latest(results), plan)
    assert stale == {("test_reevaluate", "seed1"): "choose_defence now chooses val_b",
                     ("test_actadd", "seed2"): "choose_actadd now chooses none"}  # fmt: skip
    rep = report_from(results, plan, wplan, "toy", tmp_path, tmp_path)
    shown = sorted((n, r.path.name) for n, runs in rep.runs.items() for r in runs)
    kept = [*results[:2], *results[4:6], results[7]]
    assert shown == sorted((r.row, r.dir.name) for r in kept)
    assert rep.intro.endswith(
        "Not rendered, made under an earlier choice: seed1/test_reevaluate "
        "(choose_defence now chooses val_b); seed2/test_actadd "
        "(choose_actadd now chooses none)."
    )


def test_a_row_needing_a_superseded_row_is_superseded_too(tmp_path: Path) -> None:
    from ssah.plan.reports import superseded

    plan = Plan.from_cfg({"name": "p", "rows": {
        "v_a": {"stage": "evaluate"}, "v_b": {"stage": "evaluate"},
        "pick": {"stage": "select", "select": {"candidates": ["v_*"], "minimize": "m"}},
        "t": {"stage": "train", "overrides": ["x=1", "@{pick}"]},
        "u": {"stage": "evaluate", "needs": ["t"]},
    }})  # fmt: skip
    rows = {(r.row, r.instance): r for r in [
        _result(tmp_path, "pick", "seed0", "3", stage="select",
                choice={"chosen": "v_b", "overrides": ["a=2"]}),
        _result(tmp_path, "t", "seed0", "1", overrides=["x=1", "a=1"]),
        _result(tmp_path, "u", "seed0", "2", overrides=["m=@{t}"]),
        _result(tmp_path, "v_a", "seed0", "1"),
    ]}  # fmt: skip
    assert superseded(rows, plan) == {("t", "seed0"): "pick now chooses v_b",
                                      ("u", "seed0"): "it needs t, made under an earlier choice"}  # fmt: skip
    rows[("t", "seed0")].meta["overrides"] = ["x=1", "a=2"]
    assert superseded(rows, plan) == {}
