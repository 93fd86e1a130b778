"""runtime: device and dtype resolution, determinism switches, derived seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError


def test_derived_seeds_are_stable_independent_and_keyed():
    a = runtime.derive(42, "epoch", 1)
    assert a == runtime.derive(42, "epoch", 1)  # same keys, same seed, in any process
    seeds = {runtime.derive(42, "epoch", n) for n in range(1, 50)}
    seeds |= {runtime.derive(42, "init"), runtime.derive(42, "dropout", 1), runtime.derive(43, "epoch", 1)}
    assert len(seeds) == 52  # every purpose and epoch gets its own
    assert all(0 <= s < 2**63 for s in seeds)
    # the definition: numpy's SeedSequence child of the root at the keys' spawn key
    expected = np.random.SeedSequence(42, spawn_key=(runtime._key("epoch"), 1)).generate_state(1, np.uint64)[0] >> 1
    assert a == int(expected)
    assert runtime.numpy_rng(42, "x").random() == runtime.numpy_rng(42, "x").random()
    assert torch.equal(torch.rand(3, generator=runtime.torch_generator(7, "y")),
                       torch.rand(3, generator=runtime.torch_generator(7, "y")))
    with pytest.raises(ConfigError, match="--seed must be non-negative"):
        runtime.derive(-1, "epoch")


def test_devices_resolve_or_say_what_to_use(monkeypatch):
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda: torch sees no CUDA device here; use --device cpu or auto"):
        runtime.resolve_device("cuda")
    with pytest.raises(ConfigError, match="cuda:N"):
        runtime.resolve_device("cuda:x")
    with pytest.raises(ConfigError, match="'tpu' is not one of auto, cpu, cuda or cuda:N"):
        runtime.resolve_device("tpu")
    with pytest.raises(ConfigError, match="'tpu'"):
        runtime.check_device_name("tpu")
    runtime.check_device_name("cuda:1")  # spelling only: no torch call


def test_dtypes_resolve_per_device():
    assert runtime.resolve_dtype("auto", "cpu") == "fp32"
    assert runtime.resolve_dtype("auto", torch.device("cuda", 0)) == "bf16"
    assert runtime.resolve_dtype("fp16", "cpu") == "fp16"
    with pytest.raises(ConfigError, match="--dtype 'int4' is not one of auto, fp32, fp16, bf16"):
        runtime.resolve_dtype("int4", "cpu")


def test_deterministic_block_sets_and_restores_the_switches():
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    with runtime.deterministic(1):
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
        info = runtime.describe(torch.device("cpu"), 1)
        assert info["deterministic_algorithms"] is True and info["threads"] == 1
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before
    assert runtime.default_threads() == 1
    with pytest.raises(ConfigError, match="--threads must be at least 1"):
        runtime.set_threads(0)


def test_library_versions_name_what_changes_numbers():
    versions = runtime.library_versions()
    assert {"python", "torch", "numpy", "pyarrow", "duckdb", "polars"} <= set(versions)
    assert versions["torch"] and versions["numpy"]


def test_deterministic_block_leaves_inductor_unloaded_and_follows_it_when_loaded():
    """The switch is torch's own; importing inductor for it (as torch.use_deterministic_algorithms
    does) would cost every train 2 s and ~150 MB of resident memory. A fresh interpreter, since
    another test may have loaded inductor into this one."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from bonmf_pipe import runtime\n"
        "with runtime.deterministic(1):\n"
        "    assert torch.are_deterministic_algorithms_enabled()\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "assert 'torch._inductor.config' not in sys.modules, 'inductor was imported'\n"
        "import torch._inductor.config as inductor\n"
        "with runtime.deterministic(1):\n"
        "    assert inductor.deterministic and torch.are_deterministic_algorithms_enabled()\n"
        "assert not inductor.deterministic\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_arrow_allocates_through_malloc_unless_the_user_chose_a_pool():
    import subprocess
    import sys

    code = "import pyarrow as pa, bonmf_pipe.runtime; print(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**env, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"})
    assert ours.stdout.strip() == "system", ours.stderr[-2000:]
    assert chosen.stdout.strip() == "jemalloc", chosen.stderr[-2000:]
