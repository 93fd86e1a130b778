"""Shared benchmark plumbing: machine description, child-process measurement, results files."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"
PACKAGES = ("bonmf-pipe", "torch", "transformers", "timm", "pyarrow", "polars", "duckdb", "numpy", "scikit-surprise")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup just means no GPU figure
        return None


def machine_info() -> dict[str, Any]:
    import psutil

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def machine_slug(info: dict[str, Any]) -> str:
    if info.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    return f"cpu{info['cpu_count']}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its waited-for children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def run_isolated(target: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh Python process; return its result dict
    with ``peak_rss_mb`` of that process (so one measurement never inflates another's)."""
    cmd = [sys.executable, "-m", "benchmarks.common", target, json.dumps(kwargs, default=str)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step {target} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def write_results(suite: str, results: dict[str, Any], info: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite}-{machine_slug(info)}.json"
    payload = {"suite": suite, "machine": info, "results": results}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _child_main() -> None:
    target, kwargs = sys.argv[1], json.loads(sys.argv[2])
    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    _child_main()
