"""`python -m ssah.report wandb:ENTITY/PROJECT/GROUP` against a fake W&B API (no network)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import ssah.report as report
import ssah.reporting.wandb_groups as wandb_groups


@dataclass
class FakeRun:
    """The attributes of wandb.apis.public.Run that the report reads."""

    name: str | None
    id: str
    state: str
    summary: dict[str, Any]
    config: dict[str, Any]
    group: str = "table2"
    job_type: str = "train"


@dataclass
class FakeApi:
    """Stands in for wandb.Api(): runs(path, filters) filtered by group, calls recorded."""

    all_runs: list[FakeRun]
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def runs(self, path: str, filters: dict) -> list[FakeRun]:
        self.calls.append((path, filters))
        return [r for r in self.all_runs if r.group == filters.get("group")]


def config(freeze: str, seed: int, extra_ratio: float) -> dict[str, Any]:
    """What ssah.tracking logs: the resolved config plus `hydra_choices`."""
    return {
        "seed": seed,
        "sweep_name": "table2",
        "freeze": {"units": freeze, "extra_ratio": extra_ratio},
        "paths": {"outputs": f"/scratch/job{seed}/outputs"},  # differs, never an axis
        "logger": {"project": "ssah", "offline": False},
        "hydra_choices": {
            "model": "llama2_7b_chat",
            "task": "alpaca",
            "freeze": freeze,
            "hydra/launcher": "basic",
        },
        "_wandb": {"cli_version": "0.31.0"},
    }


METRICS_A = {"safety/asr/direct/keyword": 0.5, "utility/accuracy": 0.4, "time/train_s": 12}
METRICS_B = {"safety/asr/direct/keyword": 0.1, "utility/accuracy": 0.45, "time/train_s": 30}


def fake_runs() -> list[FakeRun]:
    wandb_keys = {"_step": 3, "_runtime": 40.2, "_wandb": {"runtime": 40}}
    media = {"report": {"_type": "table-file", "path": "media/table.json"}}
    return [
        FakeRun("full-ft", "a1", "finished", {**METRICS_A, **wandb_keys}, config("none", 0, 0.06)),
        FakeRun("frozen", "b2", "finished", {**METRICS_B, **media}, config("scu_all_cu", 0, 0.0)),
        FakeRun("crashed", "c3", "crashed", {"utility/accuracy": 0.0}, config("none", 1, 0.06)),
        FakeRun("other", "d4", "finished", METRICS_A, config("none", 0, 0.06), group="table1"),
        FakeRun("rep", "e5", "finished", {"report/runs": 2}, {}, job_type="report"),
    ]


@pytest.fixture
def online(monkeypatch, tmp_path: Path) -> FakeApi:
    """Online W&B with a key, outputs under tmp_path, and the fake in place of wandb.Api()."""
    api = FakeApi(fake_runs())
    monkeypatch.setenv("SSAH_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("WANDB_API_KEY", "not-a-real-key")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb_groups, "_api", lambda: api)
    return api


def test_wandb_group_is_downloaded_as_a_sweep_and_reported(online: FakeApi, tmp_path, capsys):
    assert report.main(["wandb:me/ssah/table2", "~logger"]) == 0
    out = capsys.readouterr().out
    assert online.calls == [("me/ssah", {"group": "table2"})]
    root = tmp_path / "outputs" / "reports" / "wandb" / "table2"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["frozen", "full-ft"]
    assert [p.name for p in root.parent.iterdir()] == ["table2"]  # no temp dir left behind
    # metrics.json holds the summary's metrics, without W&B's own keys and media
    assert json.loads((root / "full-ft" / "metrics.json").read_text()) == METRICS_A
    assert json.loads((root / "frozen" / "metrics.json").read_text()) == METRICS_B
    assert "2 finished runs" in out and "1 not finished" in out and "1 report runs" in out
    assert f"-> {root / 'report.md'}" in out

    md = (root / "report.md").read_text()
    assert "# Report: table2" in md and "2 runs under" in md
    assert "| freeze=none |" in md and "| freeze=scu_all_cu |" in md
    # choices came back from hydra_choices: the paper's Table 2 row (Alpaca, full FT) matches
    assert "paper ASR direct %" in md and "| 5.3 |" in md
    assert (root / "report.csv").read_text().splitlines()[0].startswith("run,freeze,n,")


def test_overrides_rebuilt_from_configs():
    # freeze differs: freeze=... is the axis, freeze.* values follow from it; paths never count
    ov = wandb_groups.group_overrides([config("none", 0, 0.06), config("scu_all_cu", 1, 0.0)])
    assert ov == [["freeze=none", "seed=0"], ["freeze=scu_all_cu", "seed=1"]]
    # same choice, a value differs (the freeze_ratio sweep): the value is the axis
    ov = wandb_groups.group_overrides([config("scu_top_cu", 0, 0.02), config("scu_top_cu", 0, 0.3)])
    assert ov == [["freeze.extra_ratio=0.02"], ["freeze.extra_ratio=0.3"]]
    # runs that logged their overrides (ssah.tracking's hydra_overrides) are taken as logged
    logged = {**config("none", 0, 0.06), "hydra_overrides": ["freeze=none", "task=dolly"]}
    ov = wandb_groups.group_overrides([logged, config("scu_all_cu", 1, 0.0)])
    assert ov == [["freeze=none", "task=dolly"], ["freeze=scu_all_cu", "seed=1"]]


def test_repeated_run_names_get_their_id(online: FakeApi, tmp_path):
    for r in online.all_runs:
        r.name = "same"
    got = report.from_wandb_group("wandb:me/ssah/table2", tmp_path / "dl")
    assert got.runs == 2 and got.unfinished == 1 and got.reports == 1
    assert sorted(p.name for p in got.root.iterdir()) == ["same-a1", "same-b2"]


@pytest.mark.parametrize("mode", ["offline", "no key"])
def test_offline_or_no_key_is_one_clear_error(online: FakeApi, monkeypatch, tmp_path, capsys, mode):
    if mode == "offline":
        monkeypatch.setenv("WANDB_MODE", "offline")
    else:
        monkeypatch.delenv("WANDB_API_KEY")
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert report.main(["wandb:me/ssah/table2", "~logger"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "needs online W&B" in err[0]
    assert online.calls == []  # failed before any request
    assert not (tmp_path / "outputs" / "reports").exists()


def test_network_error_is_one_line_and_keeps_the_last_download(
    online, monkeypatch, tmp_path, capsys
):
    import wandb

    root = tmp_path / "outputs" / "reports" / "wandb" / "table2"
    (root / "old").mkdir(parents=True)
    (root / "old" / "metrics.json").write_text("{}")

    class Down:
        def runs(self, path: str, filters: dict):
            yield fake_runs()[0]
            raise wandb.errors.CommError("Could not connect to api.wandb.ai\n(retries exhausted)")

    monkeypatch.setattr(wandb_groups, "_api", Down)
    assert report.main(["wandb:me/ssah/table2", "~logger"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not read W&B group me/ssah/table2")
    assert "Could not connect to api.wandb.ai (retries exhausted)" in err[0]
    assert [p.name for p in root.parent.iterdir()] == ["table2"]
    assert [p.name for p in root.iterdir()] == ["old"]


def test_bad_spec_and_empty_group_are_clear_errors(online: FakeApi, tmp_path):
    with pytest.raises(report.SsahError, match="wandb:ENTITY/PROJECT/GROUP"):
        report.from_wandb_group("wandb:me/table2", tmp_path)
    with pytest.raises(report.SsahError, match="no finished runs"):
        report.from_wandb_group("wandb:me/ssah/nope", tmp_path)
    assert list(tmp_path.iterdir()) == []
