"""Evaluation split across the processes of a launcher (``torchrun -m unlearn evaluate ...``).

Work is dealt out round robin in *units*: the groups of rows a single process would put through
the same forward passes (a chunk of prompts decoded together, a batch of equal-length MIA
documents, a batch of MMLU prompts). Each row is therefore computed in exactly the batch it
would be in alone, so the gathered result equals one process's bit for bit whether or not
batching changes bits on the device, and every row is computed once: no rank pads its share
with repeated rows (accelerate's ``split_between_processes(apply_padding=True)``, which the
organisers used, does).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from unlearn import RunError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` evaluating processes (``rank`` 0 writes)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, units: Iterable[T], work: Callable[[T], dict[K, Any]]) -> dict[K, Any]:
        """``work(unit)`` for every ``world``-th unit from this rank's on, each result gathered
        onto every rank (keys must be unique). An error on any rank is raised on every rank, so
        none waits forever for a rank that stopped."""
        mine: dict[K, Any] = {}
        error: BaseException | None = None
        try:
            for n, unit in enumerate(units):
                if n % self.world == self.rank:
                    mine.update(work(unit))
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
        if self.world == 1:
            if error is not None:
                raise error
            return mine
        parts: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(parts, (mine, error))
        if error is not None:
            raise error
        for rank, (_, failed) in enumerate(parts):
            if failed is not None:
                raise RunError(f"evaluation rank {rank} failed: {type(failed).__name__}: {failed}")
        merged: dict[K, Any] = {}
        for part, _ in parts:
            merged.update(part)
        return merged

    def smallest(self, value: int) -> int:
        """The smallest ``value`` over the ranks (e.g. the batch size every rank can run exactly)."""
        if self.world == 1:
            return value
        parts: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(parts, value)
        return min(parts)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


SINGLE = Ranks()


def launched() -> Ranks:
    """The ranks a launcher started (``WORLD_SIZE``/``RANK`` set), joined into a process group
    (NCCL on GPUs, gloo on CPUs); one process alone is `SINGLE`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    dist = torch.distributed
    if not dist.is_initialized():
        gpu = torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def rank_device(device: Any, ranks: Ranks) -> torch.device:
    """This rank's device: `unlearn.engine.resolve_device` of ``device``, except that under several ranks
    on GPUs each takes its own (``LOCAL_RANK``, set by `launched`), so a fixed ``cuda:N`` is refused."""
    from unlearn import ConfigError
    from unlearn.engine import resolve_device

    target = resolve_device(device)
    if ranks.world > 1 and target.type == "cuda":
        if target.index is not None:
            raise ConfigError(f"device {device!r}: each rank takes its own GPU (LOCAL_RANK); use --device cuda")
        target = torch.device("cuda", torch.cuda.current_device())
    return target
