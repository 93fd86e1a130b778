"""Where and how torch runs: device, compute dtype, intra-op threads, determinism, and the
seeds every random draw of a run derives from.

One module for the stages that run models (encode, train), so ``--device`` means the same
everywhere and a run records exactly what it ran with. Seeds follow LensKit's scheme: one
root seed, and an independent child seed per purpose (``derive(root, "epoch", 3)``) from
numpy's ``SeedSequence``, so changing one consumer (say the number of epochs) never shifts
the random numbers of another (the initial weights).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np

from bonmf_pipe.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DTYPES = ("auto", "fp32", "fp16", "bf16")
# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); set before its first use.
CUBLAS_WORKSPACE = ":4096:8"
# Libraries whose versions change numbers; recorded with every run.
VERSIONED = ("torch", "numpy", "pyarrow", "duckdb", "polars", "safetensors")

# cuBLAS reads its workspace setting when a process first uses it, which may be before a
# run starts (encode in the same process): fix it as soon as this module is imported.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def use_system_allocator() -> None:
    """Arrow allocates through the C library's malloc, not its bundled mimalloc, unless the user
    chose a pool (``ARROW_DEFAULT_MEMORY_POOL``, which ``bonmf_pipe/__init__.py`` sets to
    ``system`` otherwise, for Arrow's C++ code: its scans and Parquet readers do not use the pool
    pyarrow is told about). mimalloc keeps what a thread frees for that thread to reuse: a
    train at ML-25M size held 50-100 MB of freed scan buffers to its end (train at 25 M ratings:
    peak 1,344 -> 1,285 MB, then -60 MB more once the C++ side used malloc too; evaluate -100
    MB); Arrow's jemalloc kept ~85 MB the same way. Done once, when this module is first
    imported: buffers already allocated stay with their pool."""
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") == "system":  # pyarrow may have been imported first
        pa.set_memory_pool(pa.system_memory_pool())


use_system_allocator()


def trim_heap() -> None:
    """Hand the free pages inside the C heap back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). malloc returns a freed block to the system only from the top of its heap, so the
    buffers a stage frees between longer-lived ones stay resident; the trainer calls this once
    per shuffle buffer and before its evaluation, the evaluation every few score batches (a few
    milliseconds each; at ML-25M size up to 100 MB less resident)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    return getattr(ctypes.CDLL(None), "malloc_trim", None)


# -- the torchrun world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """This process's place among the processes ``torchrun`` started (1 process without it)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes run folders and reports progress."""
        return self.rank == 0


def world() -> World:
    """Rank, world size and local rank from the environment torchrun sets (RANK, WORLD_SIZE,
    LOCAL_RANK); one process of rank 0 when they are absent."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "RANK / WORLD_SIZE / LOCAL_RANK must be integers (torchrun sets them); unset them to run one process."
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} / WORLD_SIZE {size}: need 0 <= RANK < WORLD_SIZE; start the processes with torchrun.")
    return World(rank, size, local)


# -- device and dtype --------------------------------------------------------------------------


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """``auto`` (cuda when torch sees one, else cpu), ``cpu``, ``cuda`` or ``cuda:N``.

    Under torchrun (WORLD_SIZE > 1), ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``: one GPU
    per process, as torchrun's documentation recommends.
    """
    import torch

    w = world()
    if name in ("auto", "cuda") and w.size > 1 and torch.cuda.is_available():
        if w.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started local rank {w.local_rank} but this host has {torch.cuda.device_count()} GPU(s): "
                f"use --nproc-per-node {torch.cuda.device_count()} or fewer (one process per GPU), or {option} cpu."
            )
        name = f"cuda:{w.local_rank}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"{option} {name!r}: write cuda:N with N a GPU number, e.g. cuda:0.")
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name}: torch sees no CUDA device here; use {option} cpu or auto.")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered from 0; pick one of them or use {option} cuda."
            )
        return torch.device(name)
    raise ConfigError(f"{option} {name!r} is not one of {DEVICE_CHOICES}.")


def check_device_name(name: str, option: str = "--device") -> None:
    """Validate the spelling of a device name without asking torch (for settings dataclasses)."""
    index = name.partition(":")[2]
    if not (name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and index.isdigit())):
        raise ConfigError(f"{option} {name!r} is not one of {DEVICE_CHOICES}.")


def resolve_dtype(name: str, device: torch.device | str, option: str = "--dtype") -> str:
    """``auto`` -> bf16 on cuda, fp32 elsewhere; otherwise one of fp32, fp16, bf16."""
    if name not in DTYPES:
        raise ConfigError(f"{option} {name!r} is not one of {', '.join(DTYPES)}.")
    kind = device if isinstance(device, str) else device.type
    if name == "auto":
        return "bf16" if kind.startswith("cuda") else "fp32"
    return name


# -- threads and determinism -------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The intra-op thread count used when a setting leaves it open: 1.

    The trainer's operations are small (embedding lookups and a narrow MLP per batch of a
    few hundred ratings), so extra threads buy little, and on a busy machine they cost a
    lot: on the shared 2-core development machine (load ~12) three epochs of bonmf on
    ml-latest-small took 16 s with 1 thread and 195 s with 2. Ask for more with ``threads``.
    """
    return 1


def set_threads(threads: int) -> int:
    """Fix torch's intra-op thread count (results of reductions may depend on it)."""
    import torch

    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads}).")
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic algorithms on, cuBLAS workspace fixed and ``threads`` intra-op threads,
    for the duration of the block; the previous settings come back afterwards."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    threads_before = torch.get_num_threads()
    cudnn_before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    _use_deterministic(True)
    # torch then fills every new empty tensor with NaN (a guard for ops that read memory they
    # never wrote); correct code gives the same bits without it, and the fill cost 60% of a CPU
    # training step (embedding gradients, fused AdamW buffers)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    set_threads(threads)
    try:
        yield
    finally:
        _use_deterministic(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_before
        torch.utils.deterministic.fill_uninitialized_memory = fill_before
        torch.set_num_threads(threads_before)


def _use_deterministic(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms`` without the import of ``torch._inductor.config``
    it makes (2 s and ~150 MB of resident memory with the CUDA build) unless inductor is
    already loaded: the switch itself lives in torch's core, and inductor, which keeps its own
    copy, is only ever loaded by ``torch.compile`` (never by bonmf-pipe)."""
    import torch

    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


# -- seeds --------------------------------------------------------------------------------------


def _key(part: str | int) -> int:
    if isinstance(part, bool) or not isinstance(part, (int, str)):
        raise TypeError(f"seed keys are str or int, not {type(part).__name__}")
    if isinstance(part, int):
        if part < 0:
            raise ValueError("integer seed keys must be non-negative")
        return part
    return int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "little")


def derive(root: int, *keys: str | int) -> int:
    """An independent 63-bit seed for one purpose of a run seeded with ``root``.

    ``derive(42, "epoch", 3)`` is the SeedSequence child of entropy 42 at spawn key
    (hash("epoch"), 3): stable across processes, platforms and numpy versions, and
    statistically independent of every other key's seed.
    """
    if root < 0:
        raise ConfigError(f"--seed must be non-negative (got {root}).")
    seq = np.random.SeedSequence(entropy=root, spawn_key=tuple(_key(k) for k in keys))
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def numpy_rng(root: int, *keys: str | int) -> np.random.Generator:
    """A numpy Generator seeded with ``derive(root, *keys)``."""
    return np.random.default_rng(derive(root, *keys))


def torch_generator(root: int, *keys: str | int) -> torch.Generator:
    """A CPU torch Generator seeded with ``derive(root, *keys)``."""
    import torch

    return torch.Generator().manual_seed(derive(root, *keys))


def seed_torch(root: int, *keys: str | int) -> None:
    """Seed torch's global generators (CPU and every CUDA device) with ``derive(root, *keys)``."""
    import torch

    torch.manual_seed(derive(root, *keys))


# -- what a run records --------------------------------------------------------------------------


def library_versions() -> dict[str, str | None]:
    """Python and the versions of the libraries whose numbers a run depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe(device: torch.device, threads: int) -> dict[str, object]:
    """Where a run ran: device, its name, threads, CPU, and the determinism switches."""
    import torch

    info: dict[str, object] = {
        "device": str(device),
        "threads": threads,
        "cores": available_cores(),
        "cpu": platform.processor() or platform.machine(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
