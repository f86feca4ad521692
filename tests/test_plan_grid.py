"""Grid rows, grid claims and the curves table (conf/plan/freeze_budget.yaml): one row template
expanded over named axes into ordinary rows with stable names; a claim over a grid written once;
curves with 95% bands rendered from results alone; the seed axis stays the plan's instances,
each instance's seed also its world's alignment seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CHEAP_EVAL

from ssah.config import compose
from ssah.errors import SsahError
from ssah.plan.grid import label, row_name
from ssah.plan.spec import Plan

ROOT = Path(__file__).resolve().parents[1]
GRID = {
    "name": "g",
    "rows": {
        "ref": {"stage": "evaluate"},
        "ft": {
            "stage": "train",
            "grid": {
                "sel": {"safety": {"freeze": ["freeze=budget", "freeze.selection=safety"]},
                        "random": {"freeze": ["freeze=budget_random"]}},
                "budget": [0.05, 0.63],
            },
            "overrides": ["@{freeze}", "freeze.budget=@{budget}", "seed=@{seed}", "x=@{ref}"],
            "needs": ["ref"],
        },
    },
    "grid_claims": [{"id": "c", "grid": "ft", "axis": "sel", "a": "random", "b": "safety",
                     "claim": "safety < random", "metric": "m", "direction": -1}],
    "tables": [{"id": "t", "kind": "curves", "grid": "ft", "x": "budget", "line": "sel"}],
    "start_order": ["ft__sel_safety__budget_0p63", "ft"],
}  # fmt: skip


def test_a_grid_row_expands_into_named_rows_with_its_levels_spelled() -> None:
    plan = Plan.from_cfg(GRID)
    assert list(plan.rows) == ["ref", "ft__sel_safety__budget_0p05", "ft__sel_safety__budget_0p63",
                               "ft__sel_random__budget_0p05", "ft__sel_random__budget_0p63"]  # fmt: skip
    r = plan.rows["ft__sel_random__budget_0p05"]
    assert r.overrides == (
        ["freeze=budget_random"],
        "freeze.budget=0.05",
        "seed=@{seed}",
        "x=@{ref}",
    )
    assert r.needs == ("ref",)
    assert plan.start_order[:2] == ["ft__sel_safety__budget_0p63", "ft__sel_safety__budget_0p05"]
    assert row_name("ft", {"p": 0.0, "b": -0.5}) == "ft__p_0__b_m0p5"
    assert label("ft", {"p": 0.1}) == "ft[p=0.1]"
    assert [(c["a"]["row"], c["b"]["row"]) for c in plan.claims] == [
        ("ft__sel_random__budget_0p05", "ft__sel_safety__budget_0p05"),
        ("ft__sel_random__budget_0p63", "ft__sel_safety__budget_0p63"),
    ]
    assert plan.claims[0]["claim"] == "safety < random (budget=0.05)"
    assert [n for n, _ in plan.tables[0]["points"]][0] == "ft__sel_safety__budget_0p05"


def test_a_bad_grid_is_refused_in_one_line() -> None:
    bad = json.loads(json.dumps(GRID))
    bad["rows"]["ft"]["grid"]["budget"] = ["a b"]
    with pytest.raises(SsahError, match="grid level 'a b' of 'budget'"):
        Plan.from_cfg(bad)
    bad = json.loads(json.dumps(GRID))
    bad["tables"][0]["grid"] = "zz"
    with pytest.raises(SsahError, match="grid 'zz' is not a grid row"):
        Plan.from_cfg(bad)


@pytest.mark.parametrize("side", ["a", "b"])
def test_a_grid_claim_whose_level_a_piece_removes_is_skipped_in_one_line(side: str) -> None:
    piece = json.loads(json.dumps(GRID))
    del piece["rows"]["ft"]["grid"]["sel"]["random" if side == "a" else "safety"]
    plan = Plan.from_cfg(piece)
    assert plan.claims == []
    assert len(plan.skipped_claims) == 1
    assert "grid_claims 'c' skipped" in plan.skipped_claims[0]
    assert ("'random'" if side == "a" else "'safety'") in plan.skipped_claims[0]
    typo = json.loads(json.dumps(GRID))
    typo["grid_claims"][0][side] = "nope"
    assert "['nope']" in Plan.from_cfg(typo).skipped_claims[0]
    assert Plan.from_cfg(GRID).skipped_claims == []


def _run(path: Path, metrics: dict) -> object:
    from ssah.reporting.collect import Run

    return Run(path, {}, {"row": path.name, "world": "0"}, metrics)


def test_curves_render_a_table_and_a_png_from_results(tmp_path: Path) -> None:
    from ssah.reporting.plan_report import Report, render

    plan = Plan.from_cfg(GRID)
    asr = {"ft__sel_safety__budget_0p05": 0.5, "ft__sel_safety__budget_0p63": 0.3,
           "ft__sel_random__budget_0p05": 0.5, "ft__sel_random__budget_0p63": 0.31}  # fmt: skip
    runs = {n: [_run(tmp_path / n, {"a": v, "a/ci_low": v - 0.1, "a/ci_high": v + 0.1, "a/n": 100})]
            for n, v in asr.items()}  # fmt: skip
    rep = Report("t", "i", runs, [], figures=tmp_path)
    spec = {**plan.tables[0], "title": "Curves", "metrics": [["ASR %", "a", 100]], "file": "c.png"}
    text = render([spec], [], rep, {})
    assert "![t](c.png)" in text and "| safety | 0.63 | 1 | 30.0 [20.0, 40.0] |" in text
    assert (tmp_path / "c.png").stat().st_size > 1000
    rep.figures = None  # a check renders the same text and writes nothing
    (tmp_path / "c.png").unlink()
    assert render([spec], [], rep, {}) == text and not (tmp_path / "c.png").exists()


def test_the_freeze_budget_plan_ties_alignment_seed_to_the_instance(outputs_dir: Path) -> None:
    """On smollm2 (planned, nothing built): instance 1's rows read the seed-1 aligned model and
    wait for its own alignment job; instance 0 keeps the world's default one."""
    from ssah.plan.runner import make_plan

    cfg = compose("plan", ["world=smollm2", "plan=freeze_budget", "seeds=[0,1]",
                           "rows=[noft,ft_budget__selection_random__budget_0p05__p_0]"])  # fmt: skip
    p = make_plan(cfg, "g", None)
    rows = {(r.row.seed, r.row.name): r for r in p.rows}
    random1 = rows[(1, "ft_budget__selection_random__budget_0p05__p_0")].args
    assert "world.align.seed=1" in random1 and "seed=1" in random1
    assert "freeze.match_kv_groups=true" in random1 and "task=smollm2_benign_mix" in random1
    assert "world.align.seed=0" in rows[(0, "noft")].args
    jobs = {j.name: j for j in p.jobs}
    assert jobs["seed1/noft"].after == ("world_aligned_a1",)
    assert jobs["seed0/noft"].after == ("world_aligned",)
    with pytest.raises(SsahError, match="align_seed_from_instance=true, but world"):
        from ssah.plan.runner import instance_world

        instance_world(type(json)("w"), {"name": "w"}, 1)


def test_the_old_runners_rows_migrate_into_plan_rows_the_report_renders(tmp_path: Path) -> None:
    """The 6 rows of the removed study runner: plan rows with the plan's names, outcomes and
    meta, a key of their own (not the plan's: their config is not today's), rendered."""
    from ssah.plan.migrate import convert, key_of, migrate
    from ssah.plan.reports import plan_settings, render_results
    from ssah.results import scan

    old = json.loads((ROOT / "tests/fixtures/freeze_budget_old_row.json").read_text())
    name, metrics, meta, outs = convert(old, {"task/heldout_loss": 0.638})
    assert name == f"ft_budget__selection_random__budget_0p05__p_0-{key_of(old)}"
    assert metrics["task/heldout_loss_start"] == 0.638 and meta["instance"] == "seed0"
    assert "freeze=budget_random" in meta["overrides"] and "threads=1" not in meta["overrides"]
    direct = [o for o in outs if o["suite"] == "direct"]
    assert len(direct) == 100 and sum(o["judge/keyword"] for o in direct) == 51
    assert len([o for o in outs if "refused" in o]) == 71
    res = tmp_path / "results"
    res.mkdir()
    shutil.copy(ROOT / "tests/fixtures/freeze_budget_old_row.json", res / f"{old['row']}.json")
    made = migrate(res)
    assert [d.name for d in made] == [name] and not list(res.glob("*.json"))
    plan, wplan, _ = plan_settings("smollm2", "freeze_budget")
    text = render_results(scan(res / "smollm2"), plan, wplan, "smollm2", tmp_path, res)[0]
    assert "| 0 | random | 0.05 | 5 | 1 |" in text  # the curves table: frozen unit params 5%
    assert "| 0 | (ft_none__p_0) | 0 | 0 |" not in text  # its start row did not run here


@pytest.mark.slow
def test_a_reduced_freeze_budget_plan_runs_on_toy_worlds(tiny_toy, tmp_path: Path) -> None:
    """plan=freeze_budget on two tiny toy worlds, one budget, p = 0.1: the references, safety vs
    random, its claim per budget, the curves (PNG beside the report) and the held-out loss
    before fine-tuning recorded by the train rows."""
    from ssah.plan.__main__ import run

    cfg = compose("plan", [
        "world=toy", "plan=freeze_budget", "world.plan.vars.toy=tiny", "seeds=[0,1]", "ft_steps=2",
        "stage_logger=csv", f"results={tmp_path / 'results'}", f"eval_overrides={CHEAP_EVAL}",
        "plan.rows.ft_budget.grid.budget=[0.63]", "plan.rows.ft_budget.grid.p=[0.1]",
        "plan.rows.ft_none.grid.p=[0.1]", "~plan.rows.ft_budget.grid.selection.safety_score",
        "~plan.rows.ft_budget.grid.selection.random_score",
        "world.plan.vars.freeze_scoring=['scoring.calibration.safety.response=field',"
        "'scoring.calibration.safety.columns={refusal:response}']",
    ])  # fmt: skip
    summary = run(cfg, tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "(budget=0.63, p=0.1)" in report and "![budget_grid](freeze_budget.png)" in report
    assert (tmp_path / "run" / "freeze_budget.png").is_file()
    assert (
        "world1/ft_budget__selection_random__budget_0p63__p_0p1/freeze/frozen_params_fraction"
        in summary
    )
    assert summary["world0/ft_none__p_0p1/task/heldout_loss_start"] > 0
    assert summary["world0/ft_none__p_0p1/task/mixed_rows"] > 0


def test_every_plans_table_has_a_switch_in_the_entry_config() -> None:
    """`tables.<id>=false` is how a user drops a table; an id missing from conf/plan.yaml's
    `tables:` fails to compose ("Could not override") instead of switching it off."""
    from omegaconf import OmegaConf

    from ssah.io import CONF_DIR

    switches = set(OmegaConf.load(Path(CONF_DIR) / "plan.yaml").tables)
    for f in sorted((Path(CONF_DIR) / "plan").glob("*.yaml")):
        ids = {str(t["id"]) for t in OmegaConf.load(f).get("tables") or [] if "id" in t}
        assert ids <= switches, (f.name, sorted(ids - switches))


def test_the_curves_legend_names_every_line_in_one_colour_across_panels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A level missing from the first panel (safety_score run at p = 0.1 only) is still in the
    legend, and a level keeps its colour in every panel."""
    import matplotlib.pyplot as plt

    from ssah.reporting import curves

    def pt(panel: str, line: str, x: float) -> dict:
        return {"panel": panel, "line": line, "x": x, "start": False, "metrics": {"a": 0.5}}

    pts = [pt("0", "random", 5), pt("0.1", "random", 5), pt("0.1", "safety_score", 5)]
    shown = []
    monkeypatch.setattr(plt, "close", shown.append)
    spec = {"metrics": [["ASR %", "a", 100]], "panel": "p", "x": "budget"}
    curves.plot(spec, pts, None, tmp_path / "c.png")
    (fig,) = shown
    first, second = fig.axes
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["random", "safety_score"]
    colours = {ln.get_color() for ln in first.get_lines()} | {
        ln.get_color() for ln in second.get_lines()
    }
    assert colours == {"C0", "C1"}  # random C0 in both panels, safety_score C1
