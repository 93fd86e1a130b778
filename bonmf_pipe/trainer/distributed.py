"""Training under ``torchrun``: the process group, the DistributedDataParallel wrapper, each
rank's share of a global batch, and the few collectives that keep the ranks in step.

What PyTorch's distributed documentation recommends, and nothing home-made: torchrun starts
the processes and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
``init_process_group`` reads them (``env://``); NCCL on CUDA, gloo on the CPU; one GPU per
process (``cuda:LOCAL_RANK``, see ``runtime.resolve_device``); DDP all-reduces (averages)
the gradients. Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op and a run
is bit for bit what it was before.

How a run splits its work. Resident mode: every rank walks the same seeded permutation of the
training rows (held as tensors) and cuts the same global batches of ``batch_size`` rows; rank r
trains on the r-th of ``world_size`` near-equal row ranges of each global batch. Streaming
mode: each rank reads only its own row groups of the split (every ``world_size``-th of the
seeded per-epoch order), shuffles them in its own buffer and cuts local batches of its share
of ``batch_size``; the ranks' row counts are all-reduced once per epoch, so every rank knows
how many steps the epoch has (a rank whose rows run out steps with empty batches, adding
nothing to the gradients, and no rank waits forever) and how many rows each global step
holds. Either way a rank's loss is its rows' sum scaled by ``world_size / rows in the global
batch``, so DDP's average of the ranks' gradients is the gradient of the global batch's mean.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError

# How long a rank waits for the others at a collective before giving up (a crashed peer).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass
class Dist:
    """This process's rank in the run's process group (rank 0 of 1 without torchrun)."""

    world: runtime.World = field(default_factory=runtime.World)
    backend: str | None = None  # nccl | gloo; None for one process
    device: torch.device | None = None  # where collectives' tensors live (cuda for NCCL)

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def size(self) -> int:
        return self.world.size

    @property
    def is_main(self) -> bool:
        return self.world.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None

    def describe(self) -> dict[str, Any]:
        """What config.json records: world size and backend (None for one process)."""
        return {"world_size": self.size, "backend": self.backend}

    # -- the model -------------------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` inside DistributedDataParallel (the model itself for one process).

        The embeddings are dense (``nn.Embedding`` without ``sparse=True``), so DDP all-reduces
        them like every other gradient; weights and optimiser state stay those of ``model``.
        """
        if not self.active:
            return model
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        # every parameter takes part in each forward, so no unused-parameter search is needed
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    # -- each rank's share of a global batch -------------------------------------------------------

    def share(self, n: int) -> tuple[int, int]:
        """The [start, stop) rows of a global batch of ``n`` rows that this rank trains on:
        the r-th of ``world_size`` near-equal ranges (the first ``n % world_size`` one row longer)."""
        q, extra = divmod(n, self.size)
        start = self.rank * q + min(self.rank, extra)
        return start, start + q + (1 if self.rank < extra else 0)

    def sizes(self, n: int) -> list[int]:
        """Every rank's number of rows of ``n`` (the lengths of the ``share`` ranges, by rank)."""
        q, extra = divmod(n, self.size)
        return [q + (1 if r < extra else 0) for r in range(self.size)]

    # -- collectives ------------------------------------------------------------------------------

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64); ``values`` for one process."""
        if not self.active:
            return list(values)
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t.tolist()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object: a run id, a decision)."""
        if not self.active:
            return value
        import torch.distributed as td

        box = [value]
        td.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            td.barrier(device_ids=[self.device.index]) if self.backend == "nccl" else td.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (say, writing a split), the others after it has finished."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[Dist]:
    """The torchrun process group for one run (created here unless the caller already made one,
    then left as found); a one-process ``Dist`` without torchrun."""
    w = runtime.world()
    if w.size == 1:
        yield Dist(w)
        return
    import torch.distributed as td

    if not td.is_available():
        raise ConfigError("this torch build has no torch.distributed: run one process (without torchrun).")
    backend = "nccl" if device.type == "cuda" else "gloo"
    coll_device = device if device.type == "cuda" else torch.device("cpu")
    owned = not td.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            td.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
        except ValueError as exc:  # MASTER_ADDR / MASTER_PORT missing: not started by torchrun
            raise ConfigError(
                f"WORLD_SIZE={w.size} but the process group cannot start ({exc}). Start the processes with "
                "torchrun (e.g. torchrun --standalone --nproc-per-node 2 -m bonmf_pipe.cli train ...), "
                "or unset WORLD_SIZE to run one process."
            ) from None
    else:
        backend = td.get_backend()
        if td.get_world_size() != w.size:
            raise ConfigError(f"the process group has {td.get_world_size()} processes but WORLD_SIZE is {w.size}.")
    dist = Dist(w, backend, coll_device)
    yield dist  # on an exception no clean-up: the others may sit in a collective; torchrun stops them
    if owned:  # every rank done with its collectives, then the group goes (PyTorch's shutdown advice)
        gc.collect()  # the DDP wrapper (a reference cycle) goes before its group, not at interpreter exit
        dist.barrier()
        td.destroy_process_group()
