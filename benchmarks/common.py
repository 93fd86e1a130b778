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
WORK_DIR = Path(__file__).parent / "_work"  # git-ignored: samples and stores the suites build
# The real MovieLens data beside the checkout (../shared/data), never inside it.
SHARED_DATA = Path(os.environ.get("BONMF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def data_label(path: Path) -> str:
    """How a results file names an input: ``../shared/data/...`` for the shared data, never an
    absolute path of the machine that ran the benchmark."""
    try:
        return str(Path("../shared/data") / Path(path).resolve().relative_to(SHARED_DATA.resolve()))
    except ValueError:
        return Path(path).name
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
    """Peak resident memory of this process and of its waited-for children, in MB.

    On Linux ``ru_maxrss`` of an exec'd child starts at its parent's peak (the kernel carries
    the old address space's high-water mark over exec), so the process's own peak is read
    from ``VmHWM`` in /proc/self/status, which belongs to the new address space only.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1])  # kB, like ru_maxrss on Linux
    except OSError:
        pass
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


def paired(value: float, ceiling: float, unit: str, ceiling_is: str) -> dict[str, Any]:
    """A speed figure with the ceiling measured in the same run and their ratio."""
    return {
        "value": round(float(value), 3),
        "ceiling": round(float(ceiling), 3),
        "ratio": round(float(value) / float(ceiling), 4) if ceiling > 0 else None,
        "unit": unit,
        "ceiling_is": ceiling_is,
    }


def print_results(suite: str, results: dict[str, Any]) -> None:
    """A rich table: every paired figure (value, ceiling, ratio) and every plain number."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"benchmarks: {suite}")
    for col in ("figure", "value", "ceiling", "ratio", "ceiling is"):
        table.add_column(col)
    for name, v in _flatten(results):
        if isinstance(v, dict) and "ratio" in v:
            ratio = f"{v['ratio']:.0%}" if v["ratio"] is not None else "-"
            table.add_row(name, f"{v['value']:,.1f} {v['unit']}", f"{v['ceiling']:,.1f}", ratio, v["ceiling_is"])
        else:
            table.add_row(name, f"{v:,.3f}" if isinstance(v, float) else str(v), "", "", "")
    Console().print(table)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and "ratio" not in v:
            out += _flatten(v, name + ".")
        elif not isinstance(v, (list, dict)) or "ratio" in v:
            out.append((name, v))
    return out


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
