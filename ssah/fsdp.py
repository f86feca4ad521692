"""FSDP2 glue: shard a HF model over the data-parallel mesh, see each rank's shard of a
parameter, and gather the full model back onto rank 0 after training.

Under FSDP2 (Lightning's ModelParallelStrategy) every parameter is a DTensor sharded on
dim 0: rank r holds rows [offset, offset + n) of it. The freeze callback works on that
local shard only (rows it owns for row slices; its rows x the frozen columns for column
slices), which is exact because optimizer steps are local to each shard too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ssah.errors import SsahError


def is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor this rank stores (a DTensor's local shard; a plain tensor itself)."""
    if is_dtensor(t):
        with torch.no_grad():
            return t.to_local()
    return t


def row_range(p: torch.Tensor, name: str) -> tuple[int, int]:
    """(global offset, local rows) of `p` along dim 0 on this rank."""
    if not is_dtensor(p):
        return 0, p.shape[0]
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for pl_ in p.placements:
        if not (isinstance(pl_, Replicate) or (isinstance(pl_, Shard) and pl_.dim == 0)):
            raise SsahError(
                f"parameter {name} is sharded as {p.placements}; freezing supports FSDP2 "
                "sharding on dim 0 only (no tensor parallelism: trainer.strategy.tensor_parallel_size=1)."
            )
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return int(offset[0]), int(shape[0])


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """Transformer blocks (HF names them *DecoderLayer), the unit of FSDP2 sharding."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def shard(model: nn.Module, mesh: Any) -> None:
    """fully_shard every decoder layer, then the root (idempotent)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return
    blocks = decoder_layers(model)
    if not blocks:
        raise SsahError(f"{type(model).__name__} has no *DecoderLayer blocks to shard with FSDP2.")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def is_sharded(model: nn.Module) -> bool:
    return any(is_dtensor(p) for p in model.parameters())


def gather_full(model: nn.Module, rebuild: Callable[[], nn.Module], rank: int) -> nn.Module:
    """After FSDP2 training: the full state dict, gathered by all ranks, loaded on rank 0 into a
    fresh unsharded copy of the model (other ranks get `model` back). No-op when not sharded."""
    if not is_sharded(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=opts)  # collective: every rank calls it
    if rank != 0:
        return model
    fresh = rebuild()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    tied = {n for n in missing if n.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise SsahError(
            f"gathered FSDP state does not fit the model: missing {missing}, "
            f"unexpected {unexpected}"
        )
    return fresh
