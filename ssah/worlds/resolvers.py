"""The resolvers that name a path in a world: pure arithmetic from config values to paths.

None of them builds anything heavy: `${toy:aligned}` is where the toy world is (the stage door
builds it, `ssah.worlds.ensure`); `${standin:...}` is the content-keyed dir of a tiny stand-in
checkpoint, created by `ssah.standin` in seconds the first time it is named. They live here,
with the worlds, and not in `ssah.resolvers` (which `ssah.config` registers), so that composing
a config never reaches up into the worlds: the stage door registers these, and so does a
process that resolves world paths without passing the door (`register_world_resolvers`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssah.errors import SsahError
from ssah.resolvers import register_resolvers


def toy_path(which: str, *, _root_: DictConfig) -> str:
    """`${toy:aligned|base|data|tokenizer|root}`: a path in the toy world of `toy:`."""
    from ssah.worlds.toy.cache import locate

    return str(locate(_root_.toy).path(which))


def smollm2_path(which: str, *, _root_: DictConfig) -> str:
    """`${smollm2:base|data|aligned|prefill|root}`: a path in the smollm2 world (conf/world/smollm2.yaml,
    or the job's `world:` node)."""
    from ssah.worlds.smollm2.paths import config_of, locate

    return str(locate(config_of(_root_)).path(which))


def standin_model(spec: DictConfig, *, _root_: DictConfig) -> str:
    """`${standin:${model.standin}}`: a tiny random-init checkpoint of that architecture."""
    from ssah.standin import build_model

    if spec is None:
        raise SsahError("this model config has no `standin:` architecture; a dry run needs one.")
    plain = OmegaConf.to_container(spec, resolve=True)
    return str(build_model(plain, Path(_root_.paths.standins)))  # type: ignore[arg-type]


def standin_data(*, _root_: DictConfig) -> str:
    """`${standin_data:}`: one small JSONL that every dataset config can read."""
    from ssah.standin import build_data

    return str(build_data(Path(_root_.paths.standins)))


WORLD_RESOLVERS: dict[str, Callable[..., Any]] = {
    "toy": toy_path,
    "smollm2": smollm2_path,
    "standin": standin_model,
    "standin_data": standin_data,
}


def register_world_resolvers() -> None:
    """Every ssah resolver, the world-free ones and these, once per process."""
    register_resolvers(WORLD_RESOLVERS)
