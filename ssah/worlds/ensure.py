"""Build, at the door, the worlds a job's resolved config points into.

Resolvers only compute paths; this is the one place that turns "the config names a path in
a world" into "the world exists". Stages call it before any model or data loads; the sweep
callback calls it once before parallel jobs start. It asks every world module (ssah.worlds'
own, found by walking the package, and the `world.module` the job names), not a list of names.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from omegaconf import DictConfig, OmegaConf

import ssah.worlds
from ssah.errors import SsahError
from ssah.worlds.base import INTERFACE
from ssah.worlds.resolvers import register_world_resolvers


def is_world(module: ModuleType) -> bool:
    return all(callable(getattr(module, f, None)) for f in INTERFACE)


def world_module(name: str) -> ModuleType:
    """The world module `name` (e.g. conf/world/<w>.yaml's `module:`), checked."""
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise SsahError(f"world.module={name}: cannot import it ({e}); fix conf/world/.") from None
    if not is_world(module):
        missing = [f for f in INTERFACE if not callable(getattr(module, f, None))]
        raise SsahError(f"world.module={name}: lacks {missing} (see ssah/worlds/base.py).")
    return module


def known_worlds(cfg: DictConfig | None = None) -> list[ModuleType]:
    """ssah's own world modules (each worlds subpackage's `plan`, or a world module) and the
    one the config names."""
    names = []
    for info in pkgutil.iter_modules(ssah.worlds.__path__):
        base = f"ssah.worlds.{info.name}"
        names.append(f"{base}.plan" if info.ispkg else base)
    named = OmegaConf.select(cfg, "world.module") if cfg is not None else None
    if named:
        names.append(str(named))
    out = []
    for n in dict.fromkeys(names):
        try:
            m = importlib.import_module(n)
        except ImportError:
            continue  # a helper module, not a world
        if is_world(m):
            out.append(m)
    return out


def ensure_worlds(cfg: DictConfig) -> None:
    """Build every world `cfg` reads from and that is not built yet (reading its world paths
    needs their resolvers, also where no stage door registered them: benchmarks, tests)."""
    register_world_resolvers()
    for module in known_worlds(cfg):
        missing = module.needed(cfg)
        if missing:
            module.ensure(cfg, missing)
