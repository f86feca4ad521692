"""Every option of every config group composes, and every `_target_` (and every dataclass-backed
group) has keys that bind to its target's signature (torchtune's habit)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from ssah.config import compose

CONF = Path(__file__).resolve().parents[1] / "conf"
SKIP_GROUPS = {"hydra", "local", "paths"}
RESERVED = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _primary_configs() -> list[str]:
    return sorted(p.stem for p in CONF.glob("*.yaml"))


def _groups_of(stage: str) -> list[str]:
    raw = OmegaConf.load(CONF / f"{stage}.yaml")
    groups = []
    for entry in raw.get("defaults", []):
        if isinstance(entry, DictConfig | dict):
            key = next(iter(entry))
            name = str(key).removeprefix("override ").split("@")[0]
            if name not in SKIP_GROUPS and (CONF / name).is_dir():
                groups.append(str(key))
    return groups


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for stage in _primary_configs():
        for key in _groups_of(stage):
            group = key.split("@")[0]
            for opt in sorted((CONF / group).glob("*.yaml")):
                cases.append((stage, key, opt.stem))
            for sub in sorted(p for p in (CONF / group).iterdir() if p.is_dir()):
                for opt in sorted(sub.glob("*.yaml")):
                    cases.append((stage, f"{group}/{sub.name}", opt.stem))
    return cases


def _target_nodes(node, path="") -> list[tuple[str, DictConfig]]:
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path, node))
        for k in node:
            found += _target_nodes(node._get_node(k), f"{path}.{k}")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):  # by node: never resolve (a ${toy:...} would build a world)
            found += _target_nodes(node._get_node(i), f"{path}[{i}]")
    return found


@pytest.fixture
def no_toy_build(monkeypatch):
    """Composing must never resolve ${toy:...} (that would build a toy world)."""

    def refuse(*args, **kwargs):
        raise AssertionError("composing a config resolved ${toy:...}")

    monkeypatch.setattr("ssah.worlds.toy.world.ensure_toy", refuse)


@pytest.mark.parametrize(("stage", "group", "option"), _cases())
def test_option_composes_and_targets_bind(outputs_dir, no_toy_build, stage, group, option):
    cfg = compose(stage, [f"{group}={option}"])
    for path, node in _target_nodes(cfg):
        target = get_object(node._target_)
        sig = inspect.signature(target)
        keys = {k: None for k in node if k not in RESERVED}
        try:
            sig.bind_partial(**keys)
        except TypeError as e:
            pytest.fail(f"{stage} {group}={option}: {path} does not bind to {node._target_}: {e}")


DATACLASS_GROUPS = {
    "model": "ssah.models.ModelConfig",
    "task": "ssah.data.datamodule.TaskConfig",
    "optim": "ssah.module.OptimConfig",
    "freeze": "ssah.freeze.spec.FreezeConfig",
}


@pytest.mark.parametrize("group", sorted(DATACLASS_GROUPS))
def test_dataclass_groups_bind(group):
    fields = {f.name for f in dataclasses.fields(get_object(DATACLASS_GROUPS[group]))}
    for opt in sorted((CONF / group).glob("*.yaml")):
        keys = set(OmegaConf.load(opt)) - {"defaults"}
        assert keys <= fields, f"{group}/{opt.name}: unknown keys {keys - fields}"
