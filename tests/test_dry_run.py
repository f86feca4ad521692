"""Every experiment preset runs end to end, as users type it, on a tiny random-init model of the
real model's architecture (`+dry_run=<stage>`): hub datasets come from the data mirror, and
composing a real-model preset never builds the toy world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ssah.config import compose
from ssah.data.records import load_records, set_mirror
from ssah.errors import SsahError

ROOT = Path(__file__).resolve().parents[1]

# (experiment, stage, extra overrides, model config whose architecture must be used, keys)
PRESETS = [
    (
        "table1_pruning",
        "prune",
        ["target=scu", "model=mistral_7b_instruct"],
        "mistral_7b_instruct",
        ["prune/params_fraction", "safety/asr/direct/keyword", "utility/ppl"],
    ),
    (
        "table2_freezing",
        "train",
        ["freeze=scu_all_cu"],
        "llama2_7b_chat",
        ["freeze/final_check", "safety/asr/avg/keyword", "utility/ppl", "train/loss"],
    ),
    (
        "table3_peft",
        "train",
        ["freeze=lora", "trainer=ddp", "model=qwen2_5_7b_instruct"],
        "qwen2_5_7b_instruct",
        ["freeze/trained_params_fraction", "safety/asr/direct_sys/keyword", "train/loss"],
    ),
    (
        "table4_alignment_budget",
        "train",
        ["freeze=ru_only", "model=llama3_8b_instruct"],
        "llama3_8b_instruct",
        ["freeze/trained_params_fraction", "safety/over_refusal"],
    ),
    (
        "figs2_4_probe",
        "probe",
        [],
        "llama2_7b_chat",
        ["probe/gap_difference", "probe/llama2_chat/gap_mean", "probe/llama2_base/gap_mean"],
    ),
]


def _check_standin(run: Path, outputs: Path, model_cfg: str, node: str) -> None:
    """The run loaded the stand-in of `model_cfg`'s architecture: its composed config carries
    that model config's `standin:` spec, name_or_path is the stand-in, and it was built."""
    spec = yaml.safe_load((ROOT / "conf" / "model" / f"{model_cfg}.yaml").read_text())["standin"]
    used = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())[node]
    assert used["standin"] == spec, (used["standin"], spec)
    assert used["name_or_path"] == f"${{standin:${{{node}.standin}}}}", used["name_or_path"]
    built = {
        json.loads(p.read_text())["model_type"]
        for p in (outputs / "standins").glob("*/config.json")
    }
    assert spec["model_type"] in built, (spec, built)


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment,stage,extra,model_cfg,keys", PRESETS, ids=[p[0] for p in PRESETS]
)
def test_experiment_preset_runs_end_to_end_on_a_standin(
    experiment, stage, extra, model_cfg, keys, outputs_dir, stage_runner, tmp_path
):
    run = tmp_path / "run"
    res = stage_runner(
        stage, f"+experiment={experiment}", *extra, f"+dry_run={stage}", f"hydra.run.dir={run}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    missing = [k for k in keys if k not in metrics]
    assert not missing, (missing, sorted(metrics))
    if "freeze/final_check" in keys:
        assert metrics["freeze/final_check"] == 1.0
        assert metrics["freeze/frozen_params_fraction"] > 0
    if stage == "train":
        assert metrics["train/steps"] >= 2
    _check_standin(run, outputs_dir, model_cfg, "aligned" if stage == "probe" else "model")


def test_data_mirror_replaces_hub_ids_only(tmp_path):
    mirror = tmp_path / "m.jsonl"
    mirror.write_text('{"goal": "g", "target": "t", "prompt": "old"}\n')
    local = tmp_path / "l.jsonl"
    local.write_text('{"prompt": "mine"}\n')
    try:
        set_mirror({"walledai/AdvBench": str(mirror)})
        ds = load_records("walledai/AdvBench", columns={"goal": "prompt"})
        assert ds[0]["prompt"] == "g"  # the mapped column replaces an existing one of that name
        assert load_records(str(local))[0]["prompt"] == "mine"
        set_mirror({"*": str(local)})
        assert load_records("any/hub-id")[0]["prompt"] == "mine"
        set_mirror({"*": str(tmp_path / "missing.jsonl")})
        with pytest.raises(SsahError, match="does not exist"):
            load_records("any/hub-id")
    finally:
        set_mirror(None)


def test_real_model_preset_composes_without_building_the_toy_world(tmp_path, monkeypatch):
    import ssah.worlds.toy.world as world
    from ssah.worlds.ensure import ensure_worlds
    from ssah.worlds.toy.reads import reads_toy

    builds: list[str] = []
    monkeypatch.setattr(world, "ensure_toy", lambda cfg: builds.append(cfg["cache_dir"]))
    cfg = compose(
        "probe",
        ["+experiment=figs2_4_probe", "+dry_run=probe", f"toy.cache_dir={tmp_path / 'toy'}"],
    )
    str(cfg.direction.harmful_eval)  # resolving a toy path does not build ...
    assert builds == [] and not (tmp_path / "toy").exists()
    ensure_worlds(cfg)  # ... and a dry run reads no toy path, so the door builds nothing
    assert not reads_toy(cfg) and builds == []
    toy_cfg = compose("probe", [f"toy.cache_dir={tmp_path / 'toy'}"])
    assert reads_toy(toy_cfg)
    ensure_worlds(toy_cfg)  # the toy probe reads the toy world: the door builds it
    assert builds == [str(tmp_path / "toy")]
