"""A plan row runs the config the planner composed, validated and keyed, handed over whole
(issue 28, "compose once"): its job carries that config, not override strings, and the row's
process takes it over without composing again."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssah.config import compose, take_over
from ssah.plan.store import content_key


def _plan(tmp_path: Path, *extra: str):
    return compose(
        "plan",
        [
            "world=toy",
            "world.plan.vars.toy=tiny",
            "seeds=[0]",
            "ft_steps=2",
            f"results={tmp_path / 'results'}",
            *extra,
        ],
    )


def _row_jobs(p):
    from ssah.plan.row import run_row

    return {j.name: j for j in p.jobs if j.fn is run_row}


@pytest.mark.slow
def test_a_rows_job_carries_the_planners_config_and_the_row_takes_it_over(
    tmp_path: Path,
) -> None:
    """Every row job carries its composed config (plain data that pickles); taken over in
    another Hydra state it is the planner's config: the same config.yaml, the same key, and
    `${hydra:job.name}` (the W&B logger's job_type) still names the row's stage."""
    from ssah.plan.runner import make_plan

    p = make_plan(_plan(tmp_path, "stage_logger=wandb"), "g", None)
    rows = {f"{r.instance}/{r.row.name}": r for r in p.rows}
    jobs = _row_jobs(p)
    assert len(jobs) > 10
    for name, job in jobs.items():
        stage, handed, out, meta = job.args
        r = rows[name]
        assert handed is r.config and set(handed) == {"config", "hydra"}
        assert meta["overrides"] and all(isinstance(a, str) for a in meta["overrides"])
        composed = compose(stage, r.args)  # what the row composed before: the same config
        compose("toy", [])  # another Hydra state, as in a fresh worker, which also lacks
        OmegaConf.clear_resolver("hydra")  # Hydra's own resolvers until something composes
        cfg = take_over(pickle.loads(pickle.dumps(handed)))
        assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(composed), name
        assert OmegaConf.is_struct(cfg) and content_key(stage, cfg, tmp_path / "results") == r.key
        if "logger" in cfg and cfg.logger is not None and "job_type" in cfg.logger:
            assert cfg.logger.job_type == stage, name


@pytest.mark.slow
def test_a_row_runs_without_composing_and_writes_the_planners_config(
    tiny_toy, outputs_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """A toy row run in this process with every way to compose broken: it runs, and its
    config.yaml is the config the planner keyed it by."""
    import ssah.config
    from ssah.plan.row import run_row
    from ssah.plan.runner import make_plan

    p = make_plan(_plan(tmp_path, "rows=[aligned]", "stage_logger=csv"), "g", None)
    (job,) = _row_jobs(p).values()
    stage, handed, out, meta = job.args
    planned = OmegaConf.to_yaml(compose(stage, p.rows[0].args))

    def no_compose(*a, **k):
        raise AssertionError("a plan row composed its config again")

    monkeypatch.setattr(ssah.config, "compose", no_compose)
    monkeypatch.setattr(ssah.config, "hydra_compose", no_compose)
    metrics = run_row(stage, handed, out, meta)
    assert "safety/asr/direct/keyword" in metrics
    assert (Path(out) / "config.yaml").read_text() == planned
    assert (Path(out) / "meta.json").is_file() and Path(out).name == f"aligned-{p.rows[0].key}"
