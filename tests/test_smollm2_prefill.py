"""The smollm2 world's `prefill` artifact (the prefilling attack's data of the defence plan):
keyed apart from the model chain (the aligned model's key and dir never move), built with what
it reads and nothing else, at the door of a job that names it, through the base model's answer
cache and ssah.defence.prefill's own filter; the defence plan's rows read it per recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_smollm2 import WORLD_CFG, _fake_wheels, write_tiny_gguf

from ssah.errors import SsahError
from ssah.worlds.smollm2 import data as wdata
from ssah.worlds.smollm2 import sources, world

PREFILL = {
    "harmbench100_prefill": {"source": "harmful_test", "limit": 6, "tokens": 5},
    "val_prefill": {"source": "harmful_val", "limit": None, "tokens": 5},
}
CFG = {**WORLD_CFG, "prefill": PREFILL, "workers": 1}


def test_the_prefill_key_moves_nothing_else(tmp_path: Path) -> None:
    plain = world.locate({**WORLD_CFG, "cache_dir": str(tmp_path)})
    a = world.locate({**CFG, "cache_dir": str(tmp_path)})
    more = {**PREFILL, "val_prefill": {**PREFILL["val_prefill"], "tokens": 9}}
    b = world.locate({**CFG, "prefill": more, "cache_dir": str(tmp_path)})
    assert a.keys["prefill"] != b.keys["prefill"]
    for k in ("base", "data", "aligned"):  # the model chain: same keys, same dirs
        assert a.keys[k] == b.keys[k] == plain.keys[k]
        assert a.dir(k) == b.dir(k) == plain.dir(k)
    assert world.keys_of(CFG) == world.keys_of(WORLD_CFG)  # what test_compose_keys pins
    assert a.path("prefill") == tmp_path / "smollm2" / f"prefill-{a.keys['prefill']}" / "data"
    other_data = {**CFG, "data": {**CFG["data"], "seed": 1}, "cache_dir": str(tmp_path)}
    assert world.locate(other_data).keys["prefill"] != a.keys["prefill"]  # reads the data
    with pytest.raises(SsahError, match="no `prefill:` node"):
        plain.path("prefill")  # an older recipe: no such artifact, one clear line


def test_each_artifact_is_built_with_what_it_reads_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssah.worlds.smollm2 import build
    from ssah.worlds.smollm2 import plan as wplan

    cfg = {**CFG, "cache_dir": str(tmp_path)}
    log: list[str] = []

    def step(name: str):
        def body(c: dict, w: world.World, out: Path, workers: int = 1) -> dict:
            (out / "x").write_text(name)
            log.append(name)
            return {}

        return body

    monkeypatch.setattr(build, "STEPS", {a: step(a) for a in world.ARTIFACTS})
    world.ensure(cfg, upto="prefill")
    assert log == ["base", "data", "prefill"]  # not the aligned model
    world.ensure(cfg)  # the aligned model: not the prefill data again
    assert log == ["base", "data", "prefill", "aligned"]
    log.clear()
    w = world.locate(cfg)
    for a in ("aligned", "prefill"):  # both missing: the door builds both, nothing else
        shutil.rmtree(w.dir(a))
    monkeypatch.setattr(wplan, "config_of", lambda c: cfg)
    wplan.ensure(None, ["aligned", "prefill"])  # type: ignore[arg-type]
    assert log == ["aligned", "prefill"]
    assert not list(w.root.glob("*.tmp-*"))


def test_a_job_that_names_the_prefill_data_needs_it(outputs_dir: Path) -> None:
    from ssah.config import compose

    cfg = compose(
        "evaluate",
        [
            "model=smollm2_135m_aligned",
            "eval=smollm2",
            "eval.harmful.local_path=${smollm2:prefill}/harmbench100_prefill.jsonl",
        ],
    )
    w = world.locate(world.config_of(cfg))
    assert cfg.eval.harmful.local_path == str(w.path("prefill") / "harmbench100_prefill.jsonl")
    assert world.needed(cfg) == ["data", "aligned", "prefill"]
    plain = compose("evaluate", ["model=smollm2_135m_aligned", "eval=smollm2"])
    assert world.needed(plain) == ["data", "aligned"]  # no prefill unless a job names it


@pytest.mark.slow
def test_prefill_data_from_a_tiny_base_model_through_the_answer_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base + data + prefill on a tiny converted GGUF and stand-in wheels (~15 s): the rows are
    ssah.defence.prefill's filter of the base model's own answers, a rebuild answers nothing."""
    from ssah.defence.prefill import compliant
    from ssah.worlds.smollm2 import build

    dirs = _fake_wheels(tmp_path / "site")
    monkeypatch.setattr(sources, "package_dir", lambda dist: dirs[dist])
    monkeypatch.setattr(wdata, "data_file", lambda dist, rel: dirs[dist] / rel)
    write_tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setattr(build, "data_file", lambda dist, rel: tmp_path / "tiny.gguf")
    monkeypatch.setattr(build, "installed_version", lambda dist: "0.0")
    cfg = {**CFG, "cache_dir": str(tmp_path / "cache")}

    w = world.ensure(cfg, upto="prefill")
    assert w.built("base") and w.built("data") and w.built("prefill")
    assert not w.dir("aligned").exists()
    done = json.loads((w.dir("prefill") / "DONE").read_text())
    for name, spec in PREFILL.items():
        src = wdata.read_rows(w.path("data") / f"{spec['source']}.jsonl")[: spec["limit"]]
        prompts = [r["prompt"] for r in src]
        answers = build.answer_part(str(w.path("base")), prompts, spec["tokens"])
        want = compliant(prompts, answers)
        got = wdata.read_rows(w.path("prefill") / f"{name}.jsonl")
        assert [{k: r[k] for k in ("prompt", "compliance", "source_index")} for r in got] == want
        assert all(r["source"] == src[r["source_index"]]["source"] for r in got)
        assert done["files"][name]["prompts"] == len(prompts)
        assert done["files"][name]["compliant"] == len(want)
        assert build.answer_cache(w).get(prompts, spec["tokens"]) == answers  # cached
    assert done["files"]["harmbench100_prefill"]["prompts"] == 6  # the limit

    def no_model(*a: object, **k: object) -> list[str]:
        raise AssertionError("answered again")

    before = {f.name: f.read_text() for f in w.path("prefill").glob("*.jsonl")}
    shutil.rmtree(w.dir("prefill"))
    monkeypatch.setattr(build, "answers_in_workers", no_model)
    world.ensure(cfg, upto="prefill")  # from the answer cache
    assert {f.name: f.read_text() for f in w.path("prefill").glob("*.jsonl")} == before

    # The filter on answers that differ (the tiny model's bytes rarely make two words):
    # every other answer refuses; what is kept are the others, tagged with their source.
    def mixed(base: str, prompts: list[str], n: int, workers: int, threads: int = 1) -> list[str]:
        ok, no = "Sure, here is how to do that, step by step", "I'm sorry, I can't help with that."
        return [no if i % 2 else ok for i in range(len(prompts))]

    monkeypatch.setattr(build, "answers_in_workers", mixed)
    longer = {k: {**v, "tokens": 7} for k, v in PREFILL.items()}  # another key: answers anew
    w2 = world.ensure({**cfg, "prefill": longer}, upto="prefill")
    assert w2.dir("prefill") != w.dir("prefill") and w2.dir("aligned") == w.dir("aligned")
    val = wdata.read_rows(w2.path("prefill") / "val_prefill.jsonl")
    src = wdata.read_rows(w2.path("data") / "harmful_val.jsonl")
    assert [r["source_index"] for r in val] == list(range(0, len(src), 2))
    assert [r["prompt"] for r in val] == [src[i]["prompt"] for i in range(0, len(src), 2)]
    assert [r["source"] for r in val] == [src[i]["source"] for i in range(0, len(src), 2)]
    assert {r["compliance"] for r in val} == {"Sure, here is how to do that, step by step"}


@pytest.mark.slow
def test_the_defence_plan_rows_read_the_worlds_prefill_data(outputs_dir: Path) -> None:
    """The plan's vars name `${smollm2:prefill}` escaped: each row resolves it against its
    own world recipe (a plan-level recipe change reaches the rows' paths)."""
    from ssah.config import compose
    from ssah.plan.runner import make_plan

    p = make_plan(
        compose("plan", ["world=smollm2", "plan=defence", "world.prefill.val_prefill.limit=32"]),
        "g",
        None,
    )
    rows = {r.row.name: r for r in p.rows}
    cfg = compose("evaluate", rows["val_none"].args)
    w = world.locate(world.config_of(cfg))
    assert cfg.world.prefill.val_prefill.limit == 32  # the plan's recipe, in the row
    assert cfg.eval.harmful.local_path == str(w.path("prefill") / "val_prefill.jsonl")
    test = compose("evaluate", rows["test_none"].args)
    assert test.eval.harmful.local_path == str(w.path("prefill") / "harmbench100_prefill.jsonl")
    assert "prefill" in world.needed(cfg)
    default = world.locate(world.config_of(compose("evaluate", ["+world=smollm2"])))
    assert default.dir("prefill") != w.dir("prefill")
    assert default.dir("aligned") == w.dir("aligned")  # the prefill recipe moves no model
