"""Encode: end-to-end items/s of ``encode`` over the ML-1M catalogue texts and posters, against
the encoder's warm forward pass alone (inputs already on the device) and, for posters, the
loader's decoding alone (PIL at native size in the workers ``encode`` uses, no resize, no
model), all with the same device, batch size and dtype; and the wall time of a cached re-run
(a second ``encode`` with nothing new).

The e2e rate counts from the model-load event to the end of the modality (loading excluded;
tokenizing, decoding, resizing, the forward pass and writing shards included). The ceiling
for texts is the forward pass; for posters the slower of forward-only and decode-only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import SHARED_DATA, data_label, paired, run_isolated

ML1M = SHARED_DATA / "ml-1m"
ML1M_POSTERS = SHARED_DATA / "ml-1m-posters"
SIZES = {"smoke": 40, "quick": 300, "full": 0}  # items of the ML-1M catalogue; 0 = all


def subset_folder(src: Path, posters: Path, items: int, dest: Path) -> tuple[Path, Path]:
    """The first ``items`` movies of an ML-1M folder (and links to their posters) in ``dest``
    (a temporary folder outside the project; the real data is only read)."""
    data, pics = dest / "ml-1m", dest / "posters"
    data.mkdir(parents=True)
    pics.mkdir()
    lines = (src / "movies.dat").read_bytes().splitlines(keepends=True)[:items]
    (data / "movies.dat").write_bytes(b"".join(lines))
    for line in lines:
        movie = line.split(b"::", 1)[0].decode()
        for ext in (".jpg", ".png", ".webp"):
            if (posters / f"{movie}{ext}").exists():
                (pics / f"{movie}{ext}").symlink_to(posters / f"{movie}{ext}")
    return data, pics


def ingest_step(path: str, posters: str, store: str) -> dict[str, Any]:
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

    shutil.rmtree(store, ignore_errors=True)
    s = ingest(Store.open(store, create=True), IngestSettings(path=Path(path), posters=Path(posters)))
    return {"items": s.items, "posters": s.posters_matched}


def _settings(modalities: tuple[str, ...], batch_size: int | None, device: str):
    from bonmf_pipe.pipeline.encode import EncodeSettings

    return EncodeSettings(modalities=modalities, batch_size=batch_size, device=device)


def e2e_step(store: str, modality: str, batch_size: int | None = None, device: str = "auto") -> dict[str, Any]:
    """One ``encode`` of ``modality``; the rate from the model load to the end."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import encode

    loaded = []
    t0 = time.perf_counter()
    summary = encode(Store.open(store), _settings((modality,), batch_size, device),
                     forward_hook=lambda e: loaded.append(time.perf_counter()) if e.kind == "load" else None)
    end = time.perf_counter()
    m = summary.of(modality)
    seconds = end - (loaded[0] if loaded else t0)
    return {"encoded": m.encoded, "seconds": seconds, "wall_seconds": end - t0, "per_s": m.encoded / seconds,
            "device": summary.device, "dtype": summary.dtype, "model": m.model}


def ceiling_step(store: str, modality: str, batch_size: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Forward-only (and, for posters, decode-only) rates with the encoder ``encode`` loads."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.features import current_inputs
    from bonmf_pipe.pipeline.encode.registry import resolve_source
    from bonmf_pipe.pipeline.encode.settings import resolve_runtime

    from benchmarks import encode_measure as em

    st = Store.open(store)
    settings = _settings((modality,), batch_size, device)
    runtime = resolve_runtime(settings)
    source = resolve_source(modality, settings.model_for(modality))
    inputs = current_inputs(st, modality)
    batch = runtime.batch_size(settings, modality)
    if modality == "text":
        from bonmf_pipe.pipeline.encode.text import TextEncoder, text_options

        template = st.manifest("items").settings.get("text_template")
        enc = TextEncoder(source, text_options(source, settings, runtime, template), runtime)
        return {**em.text_forward(enc, inputs.column("input").to_pylist(), batch), "batch_size": batch}
    from bonmf_pipe.pipeline.encode.image import ImageEncoder, image_options

    enc = ImageEncoder(source, image_options(settings, runtime), runtime)
    workers = runtime.num_workers(settings)
    dec, kept = em.image_decode(inputs.column("input").to_pylist(), inputs.column("content_hash").to_pylist(), batch,
                                workers, pin_memory=runtime.device == "cuda", keep=8)
    return {**dec, **em.image_forward(enc, kept, inputs.num_rows), "batch_size": batch}


def cached_step(store: str, device: str = "auto") -> dict[str, Any]:
    """A second ``encode`` (texts and posters) with nothing new: wall time, models loaded."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import encode

    t0 = time.perf_counter()
    summary = encode(Store.open(store), _settings(("text", "image"), None, device))
    return {"seconds": time.perf_counter() - t0, "models_loaded": sum(m.model_loaded for m in summary.modalities),
            "skipped": sum(m.skipped for m in summary.modalities)}


def run(size: str, work: Path, path: Path = ML1M, posters: Path = ML1M_POSTERS) -> dict[str, Any]:
    items = SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix="bonmf-bench-encode-"))
    try:
        data, pics = (path, posters) if not items else subset_folder(path, posters, items, tmp)
        store = str(work / f"store-encode-{items or 'all'}")
        ing = run_isolated("benchmarks.encode:ingest_step", path=str(data), posters=str(pics), store=store)
        out: dict[str, Any] = {"settings": {"catalogue": data_label(path), "items": ing["items"], "posters": ing["posters"],
                                            "preset": "offline"},
                               "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
        for modality in ("text", "image"):
            e2e = run_isolated("benchmarks.encode:e2e_step", store=store, modality=modality)
            ceil = run_isolated("benchmarks.encode:ceiling_step", store=store, modality=modality)
            fig = {"model": e2e["model"], "device": e2e["device"], "dtype": e2e["dtype"],
                   "batch_size": ceil["batch_size"], "items": e2e["encoded"], "peak_rss_mb": e2e["peak_rss_mb"]}
            fig["vs_forward"] = paired(e2e["per_s"], ceil["forward_per_s"], "items/s",
                                     "encoder forward pass alone, inputs already on the device, warm")
            if modality == "image":
                fig["loader_workers"] = ceil["workers"]
                fig["vs_decode"] = paired(e2e["per_s"], ceil["decode_per_s"], "items/s",
                                          "poster read + hash check + PIL decode at native size in the loader "
                                          "workers, alone (no resize, no model)")
                slower = min(ceil["forward_per_s"], ceil["decode_per_s"])
                fig["vs_slower_ceiling"] = paired(e2e["per_s"], slower, "items/s", "slower of forward-only and decode-only")
            else:
                fig["tokenize_per_s"] = round(ceil["tokenize_per_s"], 1)
                fig["distinct_batch_shapes"] = ceil["distinct_shapes"]
            out[modality] = fig
        cached = run_isolated("benchmarks.encode:cached_step", store=store)
        out["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        out["cached_rerun"] = {"seconds": round(cached["seconds"], 2), "models_loaded": cached["models_loaded"],
                               "items_skipped": cached["skipped"]}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
