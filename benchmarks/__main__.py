"""``python -m benchmarks [--suite ...] [--quick] [--smoke] [--path DIR] [--posters DIR] [--out DIR]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import accuracy, encode, ingest, read_path, scale, train
from benchmarks.common import RESULTS_DIR, WORK_DIR, machine_info, print_results, write_results

SUITES = ("ingest", "encode", "train", "train-read-path", "accuracy", "scale")


def _run(suite: str, size: str, work: Path, args: argparse.Namespace) -> dict:
    if suite == "ingest":
        return ingest.run(size, work)
    if suite == "encode":
        return encode.run(size, work)
    if suite == "train":
        return train.run(size, work, max_rows={"smoke": 0, "quick": 100_000, "full": 300_000}[size])
    if suite == "train-read-path":
        return read_path.run(size, work)
    if suite == "accuracy":
        kw = {}
        if args.path:
            kw = {"path": args.path, "posters": args.posters}
        return accuracy.run(size, work, **kw)
    return scale.run(size, work)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--suite", default="all", choices=("all", *SUITES),
                   help="all = ingest, encode, train, train-read-path, accuracy (+ scale with --scale); scale is skipped otherwise")
    p.add_argument("--quick", action="store_true", help="smaller sizes (accuracy: bonmf text+image only)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the code paths (tests use it; accuracy: 2 epochs, SVD++ 3 epochs)")
    p.add_argument("--scale", action="store_true", help="with --suite all: also the 25M-rating scale suite")
    p.add_argument("--path", type=Path, help="accuracy: any MovieLens folder (default ml-latest-small)")
    p.add_argument("--posters", type=Path, help="accuracy: its poster folder (default ml-1m-posters)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    p.add_argument("--work", type=Path, default=WORK_DIR, help="samples and stores (reused between runs)")
    args = p.parse_args(argv)
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    suites = [args.suite] if args.suite != "all" else [s for s in SUITES if s != "scale" or args.scale]
    info = machine_info()
    args.work.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        t0 = time.perf_counter()
        results = _run(suite, size, args.work, args)
        results["size"] = size
        results["suite_seconds"] = round(time.perf_counter() - t0, 1)
        path = write_results(suite, results, info, args.out)
        print_results(suite, results)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
