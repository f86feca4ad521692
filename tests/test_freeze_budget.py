"""Freeze specs with a budget (share of unit parameters) and a selection rule, and their random
matched control (experiments/freeze_budget). Synthetic units on a tiny Llama: no scorer."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from test_freeze import tiny as freeze_tiny

from ssah.config import compose
from ssah.errors import SsahError
from ssah.freeze import FreezeConfig, plan
from ssah.freeze import masks as M
from ssah.freeze.synthetic import synthetic_units
from ssah.scoring.unitsfile import read_units
from ssah.units import KINDS, UnitIndex

# test_freeze's tiny Llama (4 query heads over 2 kv heads: grouped-query attention, as in
# SmolLM2), three layers deep here
tiny = functools.partial(freeze_tiny, layers=3)


@pytest.fixture
def units(tmp_path):
    path = tmp_path / "units.safetensors"
    synthetic_units(tiny(), path, seed=5)
    return str(path)


def budget_spec(units: str, **kw) -> FreezeConfig:
    return FreezeConfig.from_cfg({"spec": "b", "mode": "freeze", "units": units, **kw})


def flat(index: UnitIndex, units: str, spec: FreezeConfig) -> torch.Tensor:
    uf = read_units(units)
    return index.flatten(M.select(index, spec, uf.category, uf.safety, uf.utility, units))


def keys(index: UnitIndex, units: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    uf = read_units(units)
    zs = index.flatten({k: M.zscore(v, 1) for k, v in uf.safety.items()})
    zu = index.flatten({k: M.zscore(v, 1) for k, v in uf.utility.items()})
    return index.flatten(uf.category), zs, zu


def expected_prefix(order: list[int], w: torch.Tensor, budget: float) -> torch.Tensor:
    want, used = torch.zeros(w.numel(), dtype=torch.bool), 0.0
    for j in order:
        if used + float(w[j]) > budget + 1e-6:
            break
        used += float(w[j])
        want[j] = True
    return want


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.2, 0.63])
def test_safety_order_is_scu_then_cu_by_safety_minus_utility(units, budget):
    model = tiny()
    index = UnitIndex(model)
    got = flat(index, units, budget_spec(units, budget=budget, selection="safety"))
    cat, zs, zu = keys(index, units)
    w = index.flat_weights()
    prio = {1: 0, 3: 1, 0: 2, 2: 3}  # SCU, CU, RU, UCU
    order = sorted(range(len(cat)), key=lambda j: (prio[int(cat[j])], -float(zs[j] - zu[j]), j))
    assert torch.equal(got, expected_prefix(order, w, budget * float(w.sum())))
    share = float(w[got].sum() / w.sum())
    assert budget - float(w.max() / w.sum()) <= share <= budget + 1e-9
    scu = cat == 1
    if share > float(w[scu].sum() / w.sum()):
        assert bool(got[scu].all())  # every SCU before any other unit
    else:
        assert not bool(got[~scu].any())


@pytest.mark.parametrize("selection, which", [("safety_score", "zs"), ("utility", "zu")])
def test_score_orders_freeze_the_top_of_their_key(units, selection, which):
    model = tiny()
    index = UnitIndex(model)
    got = flat(index, units, budget_spec(units, budget=0.2, selection=selection))
    _, zs, zu = keys(index, units)
    key = zs if which == "zs" else zu
    assert got.any() and key[got].min() >= key[~got].max()


def test_layers_selection_freezes_a_contiguous_run_of_whole_blocks(units):
    model = tiny(layers=3)
    index = UnitIndex(model)
    got = index.unflatten(flat(index, units, budget_spec(units, budget=0.5, selection="layers")))
    whole = [i for i in range(3) if all(bool(got[(i, k)].all()) for k in KINDS)]
    assert len(whole) == 1  # 0.5 of 3 equal blocks rounds down to one block
    assert sum(int(m.sum()) for m in got.values()) == sum(
        int(got[(whole[0], k)].numel()) for k in KINDS
    )
    got2 = index.unflatten(flat(index, units, budget_spec(units, budget=0.7, selection="layers")))
    blocks = [i for i in range(3) if bool(got2[(i, "mlp")].all())]
    assert len(blocks) == 2 and blocks[1] - blocks[0] == 1
    with pytest.raises(SsahError, match="smaller than one block"):
        flat(index, units, budget_spec(units, budget=0.1, selection="layers"))


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.2, 0.63])
@pytest.mark.parametrize("selection", ["safety", "utility"])
def test_random_matched_has_exactly_the_counts_and_split_of_its_target(
    units, tmp_path, budget, selection
):
    """Through the composed conf and the plan, as the train stage runs it."""
    node = compose(
        "train",
        ["freeze=budget_random", f"freeze.budget={budget}", f"freeze.selection={selection}"],
    ).freeze
    cfg = {**OmegaConf.to_container(node, resolve=True), "units": units}
    model = tiny()
    ref = plan({**cfg["match"], "units": units}, model, tmp_path / "ref").metrics
    got = plan(cfg, tiny(), tmp_path / "rnd").metrics
    for kind in KINDS:
        assert got[f"freeze/frozen_units/{kind}"] == ref[f"freeze/frozen_units/{kind}"]
        assert got[f"freeze/frozen_unit_params/{kind}"] == ref[f"freeze/frozen_unit_params/{kind}"]
    assert got["freeze/frozen_units"] == ref["freeze/frozen_units"] > 0
    assert got["freeze/frozen_unit_params_fraction"] == ref["freeze/frozen_unit_params_fraction"]
    # the same numbers re-derived from the mask files (contract 5)
    for d in ("ref", "rnd"):
        with safe_open(str(tmp_path / d / "freeze_mask.safetensors"), "pt") as f:
            n = {
                k: sum(int(f.get_tensor(t).sum()) for t in f.keys() if t.endswith(k)) for k in KINDS
            }
            meta = f.metadata()
        assert n == {k: int(ref[f"freeze/frozen_units/{k}"]) for k in KINDS}
        assert json.loads(meta["freeze_config"])["budget"] == budget


@pytest.mark.parametrize("budget", [0.2, 0.63, 0.9])
def test_kv_group_matching_makes_every_frozen_parameter_count_equal(units, tmp_path, budget):
    """Heads sharing a k/v head freeze its k/v rows only together: matching whole groups too
    makes the frozen parameters (k_proj/v_proj included) equal, not only the unit counts."""
    over = ["freeze=budget_random", f"freeze.budget={budget}", "freeze.match_kv_groups=true"]
    cfg = {**OmegaConf.to_container(compose("train", over).freeze, resolve=True), "units": units}
    ref = plan({**cfg["match"], "units": units}, tiny(), tmp_path / "ref").metrics
    for seed in (0, 1):
        got = plan({**cfg, "seed": seed}, tiny(), tmp_path / f"rnd{seed}").metrics
        assert got["freeze/frozen_params"] == ref["freeze/frozen_params"]
        for kind in KINDS:
            assert got[f"freeze/frozen_units/{kind}"] == ref[f"freeze/frozen_units/{kind}"]
    index = UnitIndex(tiny())
    target = index.unflatten(flat(index, units, budget_spec(units, budget=budget)))
    spec = budget_spec(units, mode="random", match={"mode": "freeze", "budget": budget},
                       match_kv_groups=True)  # fmt: skip
    got = M.random_matched(index, target, spec)
    for m in (target, got):
        assert sum(
            int(m[(i, "attn")].view(-1, index.group_size).all(1).sum()) for i in range(3)
        ) == (
            sum(int(target[(i, "attn")].view(-1, index.group_size).all(1).sum()) for i in range(3))
        )


def test_random_matched_is_seeded_and_differs_from_the_target(units):
    model = tiny()
    index = UnitIndex(model)
    target = index.unflatten(flat(index, units, budget_spec(units, budget=0.2)))

    def rnd(seed: int) -> dict:
        cfg = budget_spec(units, mode="random", match={"mode": "freeze", "budget": 0.2}, seed=seed)
        return M.random_matched(index, target, cfg)

    a, b, c = rnd(0), rnd(0), rnd(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], target[k]) for k in a)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"budget": 0.0}, "budget=0.0"),
        ({"budget": 1.5}, "budget=1.5"),
        ({"budget": "lots"}, "lots"),
        ({"budget": 0.1, "categories": ["SCU"]}, "replaces categories"),
        ({"budget": 0.1, "selection": "loudest"}, "loudest"),
    ],
)
def test_bad_budget_specs_name_the_value(units, bad, match):
    with pytest.raises(SsahError, match=match):
        budget_spec(units, **bad)


def test_category_specs_keep_their_mask_metadata(units, tmp_path):
    """Existing specs write the same freeze_config as before the budget keys existed."""
    plan({"spec": "scu", "mode": "freeze", "units": units, "categories": ["SCU"]}, tiny(), tmp_path)
    with safe_open(str(tmp_path / "freeze_mask.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["freeze_config"])
    assert "budget" not in meta and "selection" not in meta
