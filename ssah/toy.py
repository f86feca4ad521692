"""`python -m ssah.toy`: build (or find) the toy world and print where it is."""

from __future__ import annotations

from omegaconf import DictConfig

from ssah.cli import stage
from ssah.worlds.toy.world import ensure_toy


@stage("toy")
def main(cfg: DictConfig) -> None:
    world = ensure_toy(cfg.toy)
    print(f"toy world: {world.root}")


if __name__ == "__main__":
    main()
