"""Start-up of the command line: wall time and peak RSS of commands that need no torch.

Each probe is a fresh interpreter (``python -c``) timed from the parent, repeats interleaved so
a busy machine slows every probe alike; the figures are medians. Paired in the same run with
the floor (an interpreter that does nothing) and with ``import torch`` alone, which is what
every command paid before the CLI stopped importing it.

    .venv/bin/python -m benchmarks.startup [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine_info, write_results

# Runs its argument as a CLI command line (or a statement), then prints the process's peak RSS.
_PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
try:
    if argv and argv[0] == "-c":
        exec(argv[1])
    else:
        from bonmf_pipe.cli import app
        app(argv, prog_name="bonmf-pipe", standalone_mode=False)
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print("PEAK_KB", hwm, "TORCH", "torch" in sys.modules, file=sys.stderr)
"""


def _probe(argv: list[str]) -> tuple[float, float, bool]:
    """(wall seconds, peak RSS MB, torch imported) of one fresh process running ``argv``."""
    import json

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{proc.stderr[-2000:]}")
    line = [x for x in proc.stderr.splitlines() if x.startswith("PEAK_KB")][-1].split()
    return seconds, int(line[1]) / 1024, line[3] == "True"


def run(repeats: int = 7) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sample, store = Path(tmp) / "sample", Path(tmp) / "store"
        for argv in (["sample", "--out", str(sample), "--users", "30", "--items", "40", "--ratings", "500"],
                     ["ingest", "--path", str(sample), "--store", str(store)]):
            _probe(argv)
        probes = {
            "python (nothing imported)": ["-c", "pass"],
            "import torch": ["-c", "import torch"],
            "bonmf-pipe --help": ["--help"],
            "bonmf-pipe info": ["info", "--store", str(store)],
            "bonmf-pipe sql": ["sql", "SELECT count(*) FROM ratings", "--store", str(store)],
        }
        runs: dict[str, list[tuple[float, float, bool]]] = {k: [] for k in probes}
        for _ in range(repeats):
            for name, argv in probes.items():
                runs[name].append(_probe(argv))
    out = {name: {"median_s": round(statistics.median(r[0] for r in rs), 3),
                  "min_s": round(min(r[0] for r in rs), 3),
                  "peak_rss_mb": round(statistics.median(r[1] for r in rs), 1),
                  "imports_torch": any(r[2] for r in rs)} for name, rs in runs.items()}
    floor, torch_s = out["python (nothing imported)"]["median_s"], out["import torch"]["median_s"]
    for name in ("bonmf-pipe --help", "bonmf-pipe info", "bonmf-pipe sql"):
        out[name]["over_python_floor_s"] = round(out[name]["median_s"] - floor, 3)
        out[name]["ratio_to_import_torch"] = round(out[name]["median_s"] / torch_s, 3)
    return {"repeats": repeats, "probes": out,
            "note": "fresh interpreter per probe, repeats interleaved, medians; 'import torch' is what every "
                    "command paid before the CLI stopped importing it"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    results = run(args.repeats)
    path = write_results("startup", results, machine_info(), args.out)
    for name, r in results["probes"].items():
        print(f"{name:28s} {r['median_s']:6.2f} s  {r['peak_rss_mb']:7.1f} MB  torch={r['imports_torch']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
