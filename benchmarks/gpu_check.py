"""One-call GPU check (run by ``benchmarks/gpu_check.sh``): prints ONE JSON document.

1. Posters, each figure paired with its ceilings from the same run: the REAL ML-1M posters
   (``../shared/data/ml-1m-posters``, else the git-ignored subset ``benchmarks/_posters/``
   that ``--prepare`` copies there: carry it to a GPU machine) replicated to >= 60,000
   items; for ViT-B/16 and EfficientNet-Lite0 (random init, throughput only; compute dtype
   bf16 on CUDA): end to end (the project's ``encode_images`` loop, minus the store write:
   loader workers decode at native size, resize + crop + normalise on the device, forward,
   vectors back), forward-only (model input already on the device), and decode-only (the
   same loader with all its workers, PIL at native size, no resize, no model).
2. Texts: a roberta-base-shaped and a MiniLM-L6-shaped model (random init; a byte-level BPE
   tokenizer trained there on the texts) over 87,585 texts (the ML-1M titles replicated when
   ``movies.dat`` is found, else synthetic ML-1M-style texts of the same length): end to end
   on the FIRST pass of a freshly loaded model (tokenising included) vs the warm forward pass
   alone over the same batches already on the device.
3. Training throughput on synthetic ML-25M-sized ratings (25M ratings, 162k users, 62k items,
   70% train) written as split shards: the trainer's ``train_epoch`` streaming from the shards
   vs resident tensors, same network (nmf) and batch size; epochs subsampled to ``--max-rows``
   and scaled to the 17.5M-row train part.

``--dry-run`` runs every code path with tiny models and sizes on the CPU (< 2 minutes).
polars and duckdb are not installed there (their wheels would not fit the 64 MiB that
travels); the modules used here never call them, so they are registered as modules that
raise ImportError on first use: any code path that did need them fails loudly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SUBSET = ROOT / "benchmarks" / "_posters"  # git-ignored; filled by --prepare
SUBSET_SIZE = 640  # about 10 MB of real posters: small enough to carry


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
    for _ in range(n or 3883):
        title = " ".join(rng.choice(words, rng.integers(1, 6)))
        genres = ", ".join(rng.choice(GENRES, rng.integers(1, 4), replace=False))
        texts.append(f"{title} ({rng.integers(1919, 2001)}). Genres: {genres}.")
    return texts, "synthetic ML-1M-style texts"


def poster_folder() -> tuple[Path | None, str]:
    """Where the real posters are: ../shared/data, else the prepared subset in the checkout."""
    for folder, what in ((SHARED_DATA / "ml-1m-posters", "../shared/data/ml-1m-posters"),
                         (SUBSET, "benchmarks/_posters (a subset of ml-1m-posters)")):
        if folder.is_dir() and any(folder.glob("*.jpg")):
            return folder, what
    return None, "none"


def prepare(n: int = SUBSET_SIZE) -> dict[str, Any]:
    """Copy the first ``n`` ML-1M posters (by movie id; the greyscale one too) to benchmarks/_posters."""
    src = SHARED_DATA / "ml-1m-posters"
    if not src.is_dir():
        raise SystemExit(f"{src} is absent: --prepare copies a subset of it into {SUBSET}")
    files = sorted(src.glob("*.jpg"), key=lambda p: int(p.stem))[:n]
    if (src / "1789.jpg").exists() and src / "1789.jpg" not in files:
        files[-1] = src / "1789.jpg"
    shutil.rmtree(SUBSET, ignore_errors=True)
    SUBSET.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, SUBSET / f.name)
    return {"prepared": str(SUBSET), "posters": len(files), "mb": round(sum(f.stat().st_size for f in files) / 2**20, 1)}


def make_posters(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` synthetic 185x278 progressive JPEGs: only when no real poster is at hand (said in the JSON)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((185, 278), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        p = folder / f"{i + 1}.jpg"
        Image.fromarray(img).save(p, quality=90, progressive=True)
        paths.append(p)
    return paths


def text_tokenizer(folder: Path, texts: list[str]):
    """A byte-level BPE (roberta-style) trained on ``texts``, saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sorted(set(texts)), trainers.BpeTrainer(vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=512)
    fast.save_pretrained(folder)
    return fast


def text_model_folder(folder: Path, shape: str, texts: list[str], tiny: bool) -> Path:
    """A random-init model of ``shape`` (roberta-base or MiniLM-L6) + the BPE tokenizer."""
    from transformers import AutoModel, BertConfig, RobertaConfig

    fast = text_tokenizer(folder, texts)
    if tiny:
        cfg = RobertaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                            vocab_size=len(fast), pad_token_id=fast.pad_token_id)
    elif shape == "roberta-base":
        cfg = RobertaConfig(pad_token_id=fast.pad_token_id)  # 12 layers, 768-d, 50,265-token embedding
    else:  # all-MiniLM-L6-v2's shape
        cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                         pad_token_id=fast.pad_token_id)
    AutoModel.from_config(cfg).save_pretrained(folder)
    return folder


def image_model_folder(folder: Path, arch: str) -> Path:
    import timm

    timm.models.save_for_hf(timm.create_model(arch, pretrained=False, num_classes=0), folder, safe_serialization=True)
    return folder


def _cuda_empty(runtime) -> None:
    import gc

    gc.collect()
    if runtime.device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _texts(args: argparse.Namespace) -> tuple[list[str], str]:
    """``args.texts`` texts: the ML-1M titles replicated, else synthetic ones of the same shape."""
    folder = args.catalogue or (SHARED_DATA / "ml-1m")
    base, origin = catalogue_texts(folder if (folder / "movies.dat").is_file() else None, 0)
    reps = math.ceil(args.texts / len(base))
    return (base * reps)[: args.texts], f"{origin}, {len(base):,} texts replicated to {args.texts:,}"


def text_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks import encode_measure as em
    from bonmf_pipe.pipeline.encode.loops import encode_texts
    from bonmf_pipe.pipeline.encode.registry import resolve_source
    from bonmf_pipe.pipeline.encode.settings import EncodeSettings, resolve_runtime
    from bonmf_pipe.pipeline.encode.text import PAD_MULTIPLE, TextEncoder, text_options

    texts, origin = _texts(args)
    todo = _inputs(texts)
    out: dict[str, Any] = {"texts": origin, "items": len(texts), "pad_multiple": PAD_MULTIPLE}
    for shape, normalize in (("roberta-base", None), ("MiniLM-L6", True)):
        settings = EncodeSettings(device=args.device, batch_size=args.text_batch, normalize=normalize)
        runtime = resolve_runtime(settings)
        folder = text_model_folder(tmp / f"text-{shape}", shape, texts, args.dry_run)
        src = resolve_source("text", str(folder))
        enc = TextEncoder(src, text_options(src, settings, runtime, None), runtime)
        batch = runtime.batch_size(settings, "text")
        em._sync(enc.device)
        t0 = time.perf_counter()  # first pass of a fresh model: every batch shape is new; tokenising included
        encode_texts(enc, todo, em.NullWriter(), batch, 4096, lambda d, e: None)
        e2e = len(texts) / (time.perf_counter() - t0)
        fwd = em.text_forward(enc, texts, batch)
        out[f"{shape} shape"] = {
            "model": f"{shape} shape, random init" + (" (dry run: tiny roberta)" if args.dry_run else ""),
            "batch_size": batch, "device": runtime.device, "dtype": runtime.dtype,
            "e2e_first_pass_per_s": e2e, "forward_warm_per_s": fwd["forward_per_s"],
            "ratio_e2e_vs_forward": e2e / fwd["forward_per_s"], "tokenize_per_s": fwd["tokenize_per_s"],
            "distinct_batch_shapes": fwd["distinct_shapes"],
            "ceiling_is": "warm forward pass alone over the same length-sorted batches, already padded on the device"}
        del enc
        _cuda_empty(runtime)
    return out


def image_check(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks import encode_measure as em
    from bonmf_pipe.pipeline.encode.image import ImageEncoder, image_options
    from bonmf_pipe.pipeline.encode.loops import encode_images
    from bonmf_pipe.pipeline.encode.registry import resolve_source
    from bonmf_pipe.pipeline.encode.settings import EncodeSettings, resolve_runtime

    folder, origin = poster_folder()
    unique = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))[: args.unique_posters] if folder else []
    if not unique:
        unique, origin = make_posters(tmp / "posters", 256), "SYNTHETIC 185x278 progressive JPEGs (no real posters found)"
    hashes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in unique}  # also warms the page cache
    reps = math.ceil(args.posters / len(unique))
    paths = [str(p) for p in unique] * reps
    hash_list = [hashes[p] for p in unique] * reps
    settings = EncodeSettings(device=args.device, batch_size=args.image_batch, num_workers=args.workers)
    runtime = resolve_runtime(settings)
    batch, workers = runtime.batch_size(settings, "image"), runtime.num_workers(settings)
    import pyarrow as pa

    todo = pa.table({"item_id": np.arange(1, len(paths) + 1), "content_hash": hash_list, "input": paths})
    dec, kept = em.image_decode(paths, hash_list, batch, workers, pin_memory=runtime.device == "cuda", keep=8)
    out: dict[str, Any] = {"posters": origin, "unique": len(unique), "items": len(paths), "batch_size": batch,
                           "workers": workers, "device": runtime.device, "dtype": runtime.dtype,
                           "decode_only_per_s": dec["decode_per_s"],
                           "decode_only_is": f"the loader alone: read + SHA-256 check + PIL decode at native size in "
                                             f"{workers} workers, packed one uint8 tensor per batch; no resize, no model"}
    for arch in args.image_models:
        src = resolve_source("image", str(image_model_folder(tmp / f"image-{arch}", arch)))
        enc = ImageEncoder(src, image_options(settings, runtime), runtime)
        t0 = time.perf_counter()
        failures = encode_images(enc, todo, em.NullWriter(), runtime, batch, workers, 4096, lambda d, e: None)
        e2e = (len(paths) - len(failures)) / (time.perf_counter() - t0)
        fwd = em.image_forward(enc, kept, len(paths))
        slower = min(fwd["forward_per_s"], dec["decode_per_s"])
        out[arch] = {"failed": len(failures), "e2e_per_s": e2e, "forward_only_per_s": fwd["forward_per_s"],
                     "ratio_e2e_vs_forward": e2e / fwd["forward_per_s"],
                     "ratio_e2e_vs_decode": e2e / dec["decode_per_s"],
                     "ratio_e2e_vs_slower_ceiling": e2e / slower,
                     "forward_only_is": "model forward over posters already decoded, resized and normalised on the device"}
        del enc
        _cuda_empty(runtime)
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
    from bonmf_pipe.runtime import resolve_device
    from bonmf_pipe.trainer.epoch import train_epoch
    from bonmf_pipe.trainer.setup import Context, new_model, new_optimizer
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
        device = resolve_device(s.device)
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
    p.add_argument("--prepare", action="store_true", help=f"copy {SUBSET_SIZE} real posters into {SUBSET} and stop")
    p.add_argument("--catalogue", type=Path, help="an ML-1M folder (movies.dat) for the texts")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip", default="", help="comma list: text, image, train")
    args = p.parse_args(argv)
    if args.prepare:
        print(json.dumps(prepare(), indent=1))
        return
    big = not args.dry_run
    args.texts = 87_585 if big else 320
    args.posters = 60_000 if big else 64
    args.unique_posters = 100_000 if big else 32
    args.text_batch, args.image_batch = (None, None) if big else (64, 16)
    args.workers = None if big else 2  # None: encode's default for the machine
    args.image_models = ("vit_base_patch16_224", "efficientnet_lite0") if big else ("vit_tiny_patch16_224", "efficientnet_lite0")
    args.ratings, args.users, args.items_train = (25_000_000, 162_000, 62_000) if big else (60_000, 1_620, 620)
    args.max_rows = 4_000_000 if big else 20_000
    args.train_batches = (512, 16_384) if big else (512,)
    if args.dry_run and args.device == "auto":
        args.device = "cpu"
    missing = _guard_missing()
    from benchmarks.common import machine_info

    result: dict[str, Any] = {"machine": _machine(machine_info, missing),
                              "dry_run": args.dry_run, "stubbed_missing_modules": missing,
                              "weights": "RANDOM-INITIALISED models of the real shapes: throughput only"}
    with tempfile.TemporaryDirectory(prefix="bonmf-gpu-check-") as d:
        tmp = Path(d)
        skip = set(filter(None, args.skip.split(",")))
        for name, fn in (("image", image_check), ("text", text_check), ("train", train_check)):
            if name in skip:
                continue
            t0 = time.perf_counter()
            try:
                result[name] = fn(args, tmp)
                result[name]["seconds"] = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - report and go on to the next check
                import traceback

                result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
