"""The paper's plan on the smollm2 world (what `make real` runs), planned without building
anything: every row composes and validates, rows wait for what they read, and a bad override
is refused before any row runs, naming the row."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssah.config import compose
from ssah.errors import SsahError
from ssah.plan.runner import make_plan
from ssah.reporting.format import rate


def test_rate_shows_value_interval_and_n() -> None:
    m = {"k": 0.25, "k/ci_low": 0.1, "k/ci_high": 0.5, "k/n": 20}
    assert rate(m, "k") == "25.0 [10.0, 50.0] n=20"
    assert rate({}, "k") == "-"
    assert rate({"k": float("nan")}, "k") == "nan" or rate({"k": float("nan")}, "k") == "-"


def test_smollm2_plan_waits_for_what_each_row_reads(outputs_dir: Path) -> None:
    p = make_plan(compose("plan", ["world=smollm2"]), "g", None)
    jobs = {j.name: j for j in p.jobs}
    names = list(jobs)
    assert names[0] == "world_aligned"  # the alignment is a job; rows on the base run beside it
    assert names[1] == "seed0/score_aligned"  # most rows wait for the units
    assert names.index("seed0/ft_benign_scu_all_cu") < names.index("seed0/base")
    assert jobs["seed0/prune_scu"].after == ("world_aligned", "seed0/score_aligned")
    assert jobs["seed0/base"].after == ()  # reads only the base model
    assert jobs["seed0/align_ru_only"].after == ("seed0/score_base_utility_only",)
    assert set(jobs["seed0/transfer_aligned_to_ft"].after) >= {
        "seed0/score_aligned",
        "seed0/score_ft",
    }
    assert "seed0/prune_dense" not in jobs and "seed0/align_full" not in jobs  # the aligned row
    assert "seed0/ft_benign_lora" not in jobs
    rows = {r.row.name: r for r in p.rows}
    units = rows["score_aligned"].dir / "units.safetensors"
    assert f"units={units}" in rows["prune_scu"].args
    ru = rows["align_ru_only"].args
    assert "model=smollm2_135m" in ru and _world_steps() in ru and "task=smollm2_align" in ru
    assert ru.index("model=smollm2_135m") > ru.index("model=smollm2_135m_aligned")  # last wins
    assert "eval.harmful.limit=100" in rows["aligned"].args


def test_a_bad_override_is_refused_before_any_row_runs(outputs_dir: Path) -> None:
    with pytest.raises(
        SsahError, match=r"^row \w+ \(seed0: python -m ssah\.train \.\.\.\): .*max_steps"
    ):
        make_plan(
            compose("plan", ["world=smollm2", "ft_steps=abc", "tables.freezing=true"]), "g", None
        )


def test_the_plans_world_recipe_reaches_every_row() -> None:
    """world.align.overrides on the plan's command line must change the model the rows read
    (it once changed only the world's build job: rows fine-tuned the default aligned model)."""
    from omegaconf import OmegaConf

    from ssah.config import compose
    from ssah.worlds.smollm2.paths import locate
    from ssah.worlds.smollm2.plan import recipe_overrides

    w = OmegaConf.to_container(OmegaConf.load("conf/world/smollm2.yaml"), resolve=False)
    default = compose("train", ["+world=smollm2", *recipe_overrides(w)])
    w["align"]["overrides"] = [*w["align"]["overrides"], "trainer=cpu_bf16", '+task.x="a b"']
    w["data"]["lookalike_fractions"] = [0.4, 0.2]
    fast = compose("train", ["+world=smollm2", *recipe_overrides(w)])
    assert OmegaConf.to_container(fast.world.align) == w["align"]
    assert list(fast.world.data.lookalike_fractions) == [0.4, 0.2]
    a = OmegaConf.to_container(default.world, resolve=True)
    b = OmegaConf.to_container(fast.world, resolve=True)
    assert locate(a).dir("aligned") != locate(b).dir("aligned")
    assert locate(a).dir("base") == locate(b).dir("base")
    assert "@{world_recipe}" in OmegaConf.load("conf/world/smollm2.yaml").plan.vars.world_overrides


def _world_steps() -> str:
    """The world recipe's alignment steps override (what Table 4's RU-only row trains)."""
    from omegaconf import OmegaConf

    from ssah.io import CONF_DIR

    align = OmegaConf.load(Path(CONF_DIR) / "world" / "smollm2.yaml").align.overrides
    return next(str(o) for o in align if str(o).startswith("trainer.max_steps="))
