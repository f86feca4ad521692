"""A training sampler that a resumed run can continue exactly where the killed one stopped.

Epoch e's order depends only on (seed, e): it is the order `DataLoader(shuffle=True,
generator=Generator().manual_seed(seed))` gives in its e-th epoch of Lightning training (the
same random draws, replayed), so single-process runs see the data exactly as before.
Under DDP/FSDP every rank takes every world-th index of that order (Lightning's own
DistributedSampler is switched off with `trainer.use_distributed_sampler: false`, which would
otherwise replace this sampler). `state_dict` counts the indices served in the current epoch;
after `load_state_dict` the next pass skips them, so no example is seen twice or missed.

Length grouping (`TaskConfig.group_by_length`): every batch pads to its longest example, so a
batch of one long and seven short examples spends most of its compute on padding. With
`lengths` given, each rank's order is cut into chunks of `GROUP_BATCHES` batches, each chunk
sorted by length (longest first) and cut into batches, and the chunk's batches shuffled (seeded
by seed and epoch); a chunk's partial last batch goes to the end of the epoch, so the
DataLoader's batches are exactly these groups. Still a function of (seed, epoch): resuming works
unchanged. It changes which examples share a batch, hence the results: off by default.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

GROUP_BATCHES = 50  # batches per sorted chunk (Hugging Face's length grouping uses up to 50)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Epoch `epoch`'s permutation of range(n), as a seeded shuffling DataLoader draws it
    under Lightning.

    Per epoch the DataLoader's new iterator takes one int64 (its workers' base seed) from the
    generator, then RandomSampler one randperm. Lightning knows the loader's length and stops
    at the last batch, so RandomSampler never reaches its second (empty-slice) randperm.
    """
    g = torch.Generator().manual_seed(seed)
    for _ in range(epoch):
        torch.empty((), dtype=torch.int64).random_(generator=g)
        torch.randperm(n, generator=g)
    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(n, generator=g).tolist()


def group_by_length(
    order: list[int], lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[int]:
    """`order` rearranged so that consecutive runs of `batch_size` have similar lengths.

    Chunks of GROUP_BATCHES batches keep the shuffle's randomness at the scale of the epoch;
    inside a chunk, sorting makes neighbours alike and a seeded shuffle of the chunk's batches
    keeps long and short batches mixed in time. Partial batches (one per chunk at most: only
    the last chunk can be short) go last, where drop_last removes them as before.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    size = batch_size * GROUP_BATCHES
    full: list[list[int]] = []
    rest: list[int] = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lambda i: -lengths[i])  # stable
        cut = len(chunk) - len(chunk) % batch_size
        batches = [chunk[j : j + batch_size] for j in range(0, cut, batch_size)]
        full += [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]
        rest += chunk[cut:]
    return [i for b in full for i in b] + rest


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch shuffle, sharded over ranks, resumable mid-epoch; with `lengths`,
    grouped into batches of similar length (see group_by_length)."""

    def __init__(
        self,
        n: int,
        seed: int,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
    ) -> None:
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths has {len(lengths)} entries for {n} examples")
        self.n = n
        self.seed = seed
        self.lengths = lengths
        self.batch_size = batch_size
        self.epoch = 0
        self.served = 0  # indices yielded in the current epoch
        self._skip = 0  # indices to skip on the next pass (set by load_state_dict)

    def __len__(self) -> int:
        return self.n // _rank_world()[1]

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start; a new epoch forgets a pending skip."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rank, world = _rank_world()
        order = epoch_order(self.n, self.seed, self.epoch)
        mine = order[: len(self) * world][rank::world]
        if self.lengths is not None:
            mine = group_by_length(mine, self.lengths, self.batch_size, self.seed, self.epoch)
        skip, self._skip = self._skip, 0
        self.served = skip
        for i in mine[skip:]:
            self.served += 1
            yield i

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "served": self.served, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("n"), state.get("seed")) != (self.n, self.seed):
            from ssah.errors import SsahError

            raise SsahError(
                f"checkpoint was trained on {state.get('n')} examples with seed "
                f"{state.get('seed')}, this run has {self.n} with seed {self.seed}; resume "
                "with the same task and seed, or start fresh (checkpoint.resume=false)."
            )
        self.epoch = int(state["epoch"])
        self._skip = int(state["served"])
        self.served = self._skip
