"""One-call GPU check (run by ``benchmarks/gpu_check.sh``): prints ONE JSON document.

1. Encode throughput with paper-SIZED encoders: a roberta-base-shaped text model
   (``RobertaConfig()``: 12 layers, 768-d) and ``vit_base_patch16_224``, both RANDOM-INITIALISED
   (no weights can be downloaded there): throughput only, the vectors mean nothing. The text
   tokenizer is a byte-level BPE trained there on the texts. Texts: an ML-1M catalogue folder
   given with ``--catalogue`` (movies.dat), else 3,883 synthetic ML-1M-style texts; posters:
   185x278 JPEGs generated there. Each modality: the project's encode loop end to end (minus
   the store write) vs the forward pass alone and the decode path alone (same device, batch
   size and dtype).
2. Training throughput on synthetic ML-25M-sized ratings (25M ratings, 162k users, 62k items,
   70% train) written as split shards: the project's ``train_epoch`` streaming from the shards
   vs resident tensors, same network (nmf) and batch size; epochs subsampled to ``--max-rows``
   and scaled to the 17.5M-row train part.

polars and duckdb are not installed there (their wheels would not fit the 64 MiB that
travels); the modules used here never call them, so they are registered as modules that
raise ImportError on first use: any code path that did need them fails loudly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np


class _Missing(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(f"{self.__name__} is not installed on this machine (gpu_check needed {self.__name__}.{attr})")


def _guard_missing(names: tuple[str, ...] = ("polars", "duckdb")) -> list[str]:
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = _Missing(name)
            missing.append(name)
    return missing


GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def catalogue_texts(folder: Path | None, n: int, seed: int = 0) -> tuple[list[str], str]:
    """Item texts in the ingest template's shape (title (year). Genres: a, b.)."""
    if folder and (folder / "movies.dat").is_file():
        texts = []
        for line in (folder / "movies.dat").read_bytes().decode("latin-1").splitlines()[:n or None]:
            _, title, genres = line.split("::")
            texts.append(f"{title}. Genres: {genres.replace('|', ', ')}.")
        return texts, f"{folder}/movies.dat"
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(3, 9))).title() for _ in range(4000)]
    texts = []
    for _ in range(n):
        title = " ".join(rng.choice(words, rng.integers(1, 6)))
        genres = ", ".join(rng.choice(GENRES, rng.integers(1, 4), replace=False))
        texts.append(f"{title} ({rng.integers(1919, 2001)}). Genres: {genres}.")
    return texts, "synthetic ML-1M-style texts"


def make_posters(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 185x278 JPEGs (smooth colour fields plus noise, like scanned posters)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((185, 278), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        p = folder / f"{i + 1}.jpg"
        Image.fromarray(img).save(p, quality=90)
        paths.append(p)
    return paths


def text_model_folder(folder: Path, texts: list[str], tiny: bool) -> Path:
    """A roberta-base-shaped model (random init) + a BPE tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModel, PreTrainedTokenizerFast, RobertaConfig

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=512)
    cfg = RobertaConfig() if not tiny else RobertaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=128)
    AutoModel.from_config(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def image_model_folder(folder: Path, tiny: bool) -> Path:
    import timm

    arch = "vit_base_patch16_224" if not tiny else "vit_tiny_patch16_224"
    timm.models.save_for_hf(timm.create_model(arch, pretrained=False, num_classes=0), folder, safe_serialization=True)
    return folder


def encode_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from benchmarks import encode_measure as em
    from bonmf_pipe.pipeline.encode.image import ImageEncoder, image_options
    from bonmf_pipe.pipeline.encode.loops import encode_images, encode_texts
    from bonmf_pipe.pipeline.encode.registry import resolve_source
    from bonmf_pipe.pipeline.encode.settings import EncodeSettings, resolve_runtime
    from bonmf_pipe.pipeline.encode.text import TextEncoder, text_options

    out: dict[str, Any] = {"weights": "RANDOM-INITIALISED (paper-sized shapes): throughput only"}
    settings = EncodeSettings(device=args.device, batch_size=args.encode_batch)
    runtime = resolve_runtime(settings)
    texts, origin = catalogue_texts(args.catalogue, args.items)
    folder = text_model_folder(tmp / "roberta-base-shaped", texts, args.dry_run)
    src = resolve_source("text", str(folder))
    enc = TextEncoder(src, text_options(src, settings, runtime, None), runtime)
    batch = runtime.batch_size(settings, "text")
    todo = _inputs(texts)
    em.text_forward(enc, texts[:batch], batch)  # warm-up (kernels, autotune)
    t0 = time.perf_counter()
    writer = em.NullWriter()
    encode_texts(enc, todo, writer, batch, 4096, lambda d, e: None)
    e2e = len(texts) / (time.perf_counter() - t0)
    fwd = em.text_forward(enc, texts, batch)
    out["text"] = {"model": "roberta-base shape" if not args.dry_run else "tiny roberta (dry run)", "texts": origin,
                   "items": len(texts), "batch_size": batch, "device": runtime.device, "dtype": runtime.dtype,
                   "e2e_per_s": e2e, "forward_per_s": fwd["forward_per_s"], "ratio_vs_forward": e2e / fwd["forward_per_s"]}
    del enc
    torch.cuda.empty_cache() if runtime.device == "cuda" else None

    paths = [str(p) for p in make_posters(tmp / "posters", args.items)]
    import hashlib

    hashes = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    src = resolve_source("image", str(image_model_folder(tmp / "vit-base-shaped", args.dry_run)))
    enc = ImageEncoder(src, image_options(settings, runtime), runtime)
    batch = runtime.batch_size(settings, "image")
    workers = runtime.num_workers(settings)
    _, warm = em.image_decode(enc, runtime, paths[:batch], hashes[:batch], batch, workers)
    em.image_forward(enc, warm, batch)
    import pyarrow as pa

    todo = pa.table({"item_id": np.arange(1, len(paths) + 1), "content_hash": hashes, "input": paths})
    t0 = time.perf_counter()
    failures = encode_images(enc, todo, em.NullWriter(), runtime, batch, workers, 4096, lambda d, e: None)
    e2e = (len(paths) - len(failures)) / (time.perf_counter() - t0)
    dec, pixels = em.image_decode(enc, runtime, paths, hashes, batch, workers)
    fwd = em.image_forward(enc, pixels, batch)
    slower = min(dec["decode_per_s"], fwd["forward_per_s"])
    out["image"] = {"model": "vit_base_patch16_224" if not args.dry_run else "vit_tiny_patch16_224 (dry run)",
                    "items": len(paths), "failed": len(failures), "batch_size": batch, "workers": workers,
                    "backend": runtime.image_backend, "device": runtime.device, "dtype": runtime.dtype,
                    "e2e_per_s": e2e, "forward_per_s": fwd["forward_per_s"], "decode_per_s": dec["decode_per_s"],
                    "ratio_vs_slower_ceiling": e2e / slower}
    return out


def _inputs(texts: list[str]):
    import pyarrow as pa

    return pa.table({"item_id": np.arange(1, len(texts) + 1), "content_hash": [str(i) for i in range(len(texts))],
                     "input": texts})


def write_split(folder: Path, ratings: int, users: int, items: int, seed: int = 42) -> dict[str, Any]:
    """Synthetic split shards (SPLIT_SCHEMA, 70% train), written in 2M-row files of 64k-row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bonmf_pipe.trainer.splits import SPLIT_SCHEMA

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_train, block = 0, 2_000_000
    for f, start in enumerate(range(0, ratings, block)):
        n = min(block, ratings - start)
        part = np.where(rng.random(n) < 0.7, "train", "test")
        n_train += int((part == "train").sum())
        t = pa.table({"user_id": rng.integers(1, users + 1, n), "item_id": (rng.zipf(1.3, n) % items) + 1,
                      "rating": (rng.integers(1, 11, n) / 2).astype(np.float32), "timestamp": np.zeros(n, np.int64),
                      "part": part}, schema=SPLIT_SCHEMA)
        pq.write_table(t.sort_by("part"), folder / f"part-{f:04d}.parquet", row_group_size=64 * 1024)
    return {"n_train": n_train}


def train_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import pyarrow.dataset as pads
    import torch

    from bonmf_pipe.progress import Reporter
    from bonmf_pipe.trainer import data
    from bonmf_pipe.trainer.loop import Context, new_model, new_optimizer, pick_device, train_epoch
    from bonmf_pipe.trainer.settings import TrainSettings

    t0 = time.perf_counter()
    info = write_split(tmp / "split", args.ratings, args.users, args.items_train)
    gen_s = time.perf_counter() - t0
    dataset = pads.dataset(tmp / "split", format="parquet")
    ids = np.arange(1, args.items_train + 1)
    maps = data.IdMaps(np.arange(1, args.users + 1), ids, ids.copy())
    out: dict[str, Any] = {"ratings": args.ratings, "users": args.users, "items": args.items_train, "n_train": info["n_train"],
                           "generate_seconds": gen_s, "model": "nmf", "by_batch_size": {}}
    for batch in args.train_batches:
        s = TrainSettings(model="nmf", batch_size=batch, device=args.device).effective()
        device = pick_device(s.device)
        ctx = Context(None, s, device, "synthetic", dataset, maps, {}, info["n_train"], 0, 3.0, 0.5, 5.0, "streaming")
        rates = {}
        for mode in ("resident", "streaming"):
            ctx.mode = mode
            if mode == "resident":
                ctx.resident = {"train": _resident(ctx, data, args.max_rows)}
            else:
                ctx.resident = {}
            model = new_model(ctx)
            opt = new_optimizer(model, s)
            rates[mode] = _epoch(ctx, model, opt, train_epoch, Reporter, args.max_rows, torch)
            ctx.resident = {}
        out["by_batch_size"][str(batch)] = {
            "streaming_per_s": rates["streaming"]["per_s"], "resident_per_s": rates["resident"]["per_s"],
            "ratio_streaming_vs_resident": rates["streaming"]["per_s"] / rates["resident"]["per_s"],
            "rows_timed": rates["streaming"]["rows"],
            "epoch_seconds_streaming_scaled": info["n_train"] / rates["streaming"]["per_s"],
            "epoch_seconds_resident_scaled": info["n_train"] / rates["resident"]["per_s"]}
    return out


def _resident(ctx, data, max_rows: int):
    import torch

    chunks, n = [], 0
    for t in data.stream_part(ctx.dataset, "train", None, 1 << 20):
        chunks.append(data.to_indices(ctx.maps, t))
        n += t.num_rows
        if n >= max_rows:
            break
    return tuple(torch.from_numpy(np.concatenate(c)[:max_rows]).to(ctx.device) for c in zip(*chunks))


class _Enough(Exception):
    pass


def _epoch(ctx, model, opt, train_epoch, Reporter, max_rows: int, torch) -> dict[str, float]:
    done = [0]

    def count(e) -> None:
        if e.kind == "advance":
            done[0] += e.advance
            if done[0] >= max_rows:
                raise _Enough

    t0 = time.perf_counter()
    try:
        train_epoch(ctx, model, opt, 1, Reporter(count), "epoch")
    except _Enough:
        pass
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return {"rows": done[0], "per_s": done[0] / (time.perf_counter() - t0)}


def _machine(machine_info, missing: list[str]) -> dict[str, Any]:
    try:
        return machine_info()
    except ImportError:  # psutil missing: the rest of the description is still useful
        import platform

        import torch

        return {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "python": platform.python_version(), "torch": torch.__version__, "missing": missing}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes and tiny models on the CPU: proves the code path")
    p.add_argument("--catalogue", type=Path, help="an ML-1M folder (movies.dat) for the texts")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip", default="", help="comma list: encode, train")
    args = p.parse_args(argv)
    big = not args.dry_run
    args.items = 3883 if big else 48
    args.encode_batch = None if big else 16
    args.ratings, args.users, args.items_train = (25_000_000, 162_000, 62_000) if big else (60_000, 1_620, 620)
    args.max_rows = 4_000_000 if big else 20_000
    args.train_batches = (512, 16_384) if big else (512,)
    if args.dry_run and args.device == "auto":
        args.device = "cpu"
    missing = _guard_missing()
    from benchmarks.common import machine_info

    result: dict[str, Any] = {"machine": _machine(machine_info, missing),
                              "dry_run": args.dry_run, "stubbed_missing_modules": missing}
    with tempfile.TemporaryDirectory(prefix="bonmf-gpu-check-") as d:
        tmp = Path(d)
        skip = set(filter(None, args.skip.split(",")))
        for name, fn in (("encode", encode_check), ("train", train_check)):
            if name in skip:
                continue
            t0 = time.perf_counter()
            try:
                result[name] = fn(args, tmp)
                result[name]["seconds"] = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - report and go on to the next check
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
