"""``encode``: encode what is missing, per modality, into content-addressed feature shards.

Per modality: find the model's files (no loading) -> the encoder key from the key cache
-> anti-join the current inputs of this ``--shard i/N`` against that key's shards -> if
nothing is missing, stop (no model is loaded) -> else load the model, hash its weights
into the spec and key, and encode only the missing rows, committing a shard at a time.

With ``--name NAME --text-template TEMPLATE`` the one set written is the template set NAME
(``features/NAME/<key>``): the text model over each item's rendered template (see
``templates.py``); items whose text is empty are rejected, once per content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.features import current_inputs, feature_dir, feature_sets, item_partition
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.store import Store, settings_dict
from bonmf_pipe.pipeline.encode.keys import KeyCache, descriptor, encoder_key
from bonmf_pipe.pipeline.encode.loops import Failure, encode_images, encode_texts
from bonmf_pipe.pipeline.encode.registry import ModelSource, download_text_model, resolve_source
from bonmf_pipe.pipeline.encode.settings import EncodeSettings, Runtime, resolve_runtime
from bonmf_pipe.pipeline.encode.shards import STAGE, FeatureWriter, append_rejects, missing_inputs, reject_raw, rejected_inputs
from bonmf_pipe.pipeline.encode.templates import TEMPLATE_RULES, template_texts
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.runtime import resolve_device, world

UNITS = {"text": "texts", "image": "posters"}


@dataclass(frozen=True)
class EncoderEvent:
    """What ``forward_hook`` sees: a model ``load`` or one ``forward`` of ``items`` inputs."""

    kind: str  # load | forward
    modality: str
    items: int = 0


ForwardHook = Callable[[EncoderEvent], None]


@dataclass(frozen=True)
class ModalitySummary:
    modality: str
    model: str  # the name this run used
    encoder_key: str | None  # None when nothing was ever encoded for it
    dim: int | None
    items: int  # items of this shard with an input for the modality
    encoded: int  # vectors written by this run
    skipped: int  # already in the feature set (same item, same content hash)
    failed: int  # rejected by this run (see the rejects table)
    excluded: int  # rejected by an earlier run and not retried
    seconds: float  # wall time of this modality, finding and loading the model included
    model_loaded: bool  # False when nothing was missing: the key came from the key cache

    @property
    def items_per_s(self) -> float:
        """Vectors written per second of ``seconds`` (model loading included)."""
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class EncodeSummary:
    store: Path
    shard: tuple[int, int]
    device: str
    dtype: str
    modalities: tuple[ModalitySummary, ...]
    rejects_added: int
    seconds: float

    def of(self, modality: str) -> ModalitySummary:
        return next(m for m in self.modalities if m.modality == modality)


def encode(
    store: Store,
    settings: EncodeSettings,
    progress: ProgressCallback | None = None,
    *,
    forward_hook: ForwardHook | None = None,
) -> EncodeSummary:
    """Encode every current item text / poster of this shard that has no vector yet.

    Under torchrun (WORLD_SIZE > 1) this process's shard is (RANK, WORLD_SIZE): each rank
    encodes its own hash partition into the shared store (see ``torchrun_shard``).
    """
    settings = torchrun_shard(settings)
    start = time.perf_counter()
    report = Reporter(progress)
    runtime = resolve_runtime(settings)
    if settings.name is not None:
        check_template_set_name(store, settings.name)
        template = settings.text_template
    else:
        template = store.manifest("items").settings.get("text_template")
    summaries, rejects = [], 0
    with _torch_threads(settings.cpu_threads if runtime.device == "cpu" else None):
        for name, modality in settings.jobs:
            i, n = settings.shard
            what = f"encode --name {name}" if settings.name else f"encode --modality {modality}"
            # one encoder per feature set and shard at a time: a second one waits, then finds it all done
            with store.lock(f"encode-{name}-{i}of{n}", what=what, progress=progress):
                job = _ModalityJob(store, settings, runtime, modality, template, report, forward_hook, name)
                summary, failures = job.run()
            rejects += append_rejects(store, [_reject_row(name, f) for f in failures])
            summaries.append(summary)
            report.note(_note(summary), "warning" if summary.failed else "info")
    return EncodeSummary(
        store=store.root,
        shard=settings.shard,
        device=runtime.device,
        dtype=runtime.dtype,
        modalities=tuple(summaries),
        rejects_added=rejects,
        seconds=time.perf_counter() - start,
    )


def torchrun_shard(settings: EncodeSettings) -> EncodeSettings:
    """``settings`` with ``shard`` = (RANK, WORLD_SIZE) when torchrun started this process.

    The ranks need no process group: each anti-joins and encodes only the items of its own
    partition, under its own ``encode-<modality>-<i>of<N>`` lock, and commits its shards under
    the feature folder's lock, as ``--shard i/N`` processes started by any scheduler do.
    """
    w = world()
    if w.size == 1:
        return settings
    if settings.shard != (0, 1):
        i, n = settings.shard
        raise ConfigError(
            f"--shard {i}/{n} under torchrun: each of the {w.size} processes already takes its own partition "
            f"(rank/world size, this one {w.rank}/{w.size}). Drop --shard, or run --shard without torchrun."
        )
    device = resolve_device(settings.device)  # auto / cuda: this rank's GPU, cuda:LOCAL_RANK
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)  # so the encoders' "cuda" is that GPU, not GPU 0 for every rank
    return dataclasses.replace(settings, shard=(w.rank, w.size))


def check_template_set_name(store: Store, name: str) -> None:
    """A ConfigError when ``name`` already holds imported vectors (one name, one kind of set)."""
    imported = [fs.key for fs in feature_sets(store, name) if fs.template is None]
    if imported:
        raise ConfigError(
            f"--name {name}: the store's feature set '{name}' holds imported vectors ({', '.join(imported)}); "
            "give the template set another --name."
        )


def shard_inputs(store: Store, modality: str, shard: tuple[int, int]) -> pa.Table:
    """Current (item_id, content_hash, input) of the items in partition ``i`` of ``N``."""
    return _in_shard(current_inputs(store, modality), shard)


def _in_shard(table: pa.Table, shard: tuple[int, int]) -> pa.Table:
    i, n = shard
    if n > 1:
        table = table.filter(pa.array(item_partition(table.column("item_id"), n) == i))
    return table


class _ModalityJob:
    def __init__(self, store, settings, runtime, modality, template, report, hook, name=None):
        self.store: Store = store
        self.set_name: str = name or modality  # the feature set's folder: the modality or a template set's name
        self.is_template_set = self.set_name != modality
        self.empty: list[Failure] = []  # template sets: items whose text renders empty
        self.settings: EncodeSettings = settings
        self.runtime: Runtime = runtime
        self.modality: str = modality
        self.template: str | None = template
        self.report: Reporter = report
        self.hook: ForwardHook = hook or (lambda event: None)
        self.name = settings.model_for(modality)
        self.start = time.perf_counter()

    def run(self) -> tuple[ModalitySummary, list[Failure]]:
        source = resolve_source(self.modality, self.name)
        inputs, excluded = self._inputs()
        options = self._options(source)
        cache = KeyCache(self.store, self.set_name)
        desc = descriptor(source, options)
        key = cache.get(desc)
        todo = missing_inputs(self.store, self.set_name, key, inputs) if key else inputs
        if inputs.num_rows == 0 or (key and todo.num_rows == 0):
            return self._summary(key, inputs, 0, excluded, self.empty, loaded=False), self.empty
        if source.kind == "hub" and self.modality == "text":
            source = download_text_model(source)
            options = self._options(source)  # its sentence-transformers pooling config is known now
        encoder = self._load(source, options)
        self.hook(EncoderEvent("load", self.modality))
        new_key = encoder_key(encoder.spec)
        if desc is None:  # files known only now (downloaded by the loader)
            desc = descriptor(resolve_source(self.modality, self.name), options)
        cache.put(desc, new_key)
        if new_key != key:
            todo = missing_inputs(self.store, self.set_name, new_key, inputs)
        if todo.num_rows == 0:  # the files had changed but not the weights: same key, all there
            return self._summary(new_key, inputs, 0, excluded, self.empty, loaded=True), self.empty
        extra = {"text_template": self.template, "template_rules": TEMPLATE_RULES} if self.is_template_set else None
        writer = FeatureWriter(
            self.store, self.set_name, new_key, encoder.spec, encoder.dim, self.settings.store_dtype,
            settings_dict(self.settings), extra=extra,
        )
        failures = self._encode(encoder, todo, writer) + self.empty
        encoded = todo.num_rows - (len(failures) - len(self.empty))
        summary = self._summary(new_key, inputs, encoded, excluded, failures, loaded=True, skipped=inputs.num_rows - todo.num_rows)
        return summary, failures

    def _inputs(self) -> tuple[pa.Table, int]:
        """(inputs to encode, how many earlier rejects were left out); sets ``self.empty``."""
        if self.is_template_set:
            inputs, empty = (_in_shard(t, self.settings.shard) for t in template_texts(self.store, self.template))
        else:
            inputs, empty = shard_inputs(self.store, self.modality, self.settings.shard), None
        rejected = set() if self.settings.retry_rejected else rejected_inputs(self.store, self.set_name)
        excluded = 0
        if empty is not None:
            pairs = zip(empty.column("item_id").to_pylist(), empty.column("content_hash").to_pylist(), strict=True)
            new = [(i, h) for i, h in pairs if (i, h) not in rejected]
            excluded += empty.num_rows - len(new)
            reason = f"text template {self.template!r} renders empty for this item"
            self.empty = [Failure(i, h, "items", reason) for i, h in new]
        if not rejected:
            return inputs, excluded
        pairs = zip(inputs.column("item_id").to_pylist(), inputs.column("content_hash").to_pylist(), strict=True)
        keep = np.array([p not in rejected for p in pairs], dtype=bool)
        return inputs.filter(pa.array(keep)), excluded + int((~keep).sum())

    def _options(self, source: ModelSource) -> dict[str, Any]:
        if self.modality == "text":
            from bonmf_pipe.pipeline.encode.text import text_options

            options = text_options(source, self.settings, self.runtime, self.template)
            return {**options, "template_rules": TEMPLATE_RULES} if self.is_template_set else options
        from bonmf_pipe.pipeline.encode.image import image_options

        return image_options(self.settings, self.runtime)

    def _load(self, source: ModelSource, options: dict[str, Any]):
        if self.modality == "text":
            from bonmf_pipe.pipeline.encode.text import TextEncoder

            return TextEncoder(source, options, self.runtime)
        from bonmf_pipe.pipeline.encode.image import ImageEncoder

        return ImageEncoder(source, options, self.runtime)

    def _encode(self, encoder, todo: pa.Table, writer: FeatureWriter) -> list[Failure]:
        task = f"encode {self.set_name}"
        batch = self.runtime.batch_size(self.settings, self.modality)
        rows = self.settings.rows_per_shard

        def on_batch(done: int, encoded: int) -> None:
            if encoded:
                self.hook(EncoderEvent("forward", self.modality, encoded))
            self.report.advance(task, done)

        self.report.begin(task, total=todo.num_rows, unit=UNITS[self.modality])
        try:
            if self.modality == "text":
                return encode_texts(encoder, todo, writer, batch, rows, on_batch)
            workers = self.runtime.num_workers(self.settings)
            return encode_images(encoder, todo, writer, self.runtime, batch, workers, rows, on_batch)
        finally:
            self.report.end(task)

    def _summary(self, key, inputs, encoded, excluded, failures, *, loaded, skipped=None) -> ModalitySummary:
        dim = None
        if key:
            manifest = read_manifest(feature_dir(self.store, self.set_name, key))
            dim = int(manifest.extra.get("dim", 0)) if manifest else None
        return ModalitySummary(
            modality=self.set_name,
            model=self.name,
            encoder_key=key,
            dim=dim,
            items=inputs.num_rows,
            encoded=encoded,
            skipped=inputs.num_rows if skipped is None else skipped,
            failed=len(failures),
            excluded=excluded,
            seconds=time.perf_counter() - self.start,
            model_loaded=loaded,
        )


def _reject_row(modality: str, f: Failure) -> dict[str, Any]:
    return {"stage": STAGE, "source": f.source, "line": None, "raw": reject_raw(f.item_id, modality, f.content_hash), "reason": f.reason}


def _note(s: ModalitySummary) -> str:
    if not s.model_loaded:
        return f"{s.modality}: nothing new ({s.skipped:,} items already encoded, key {s.encoder_key}); no model loaded"
    text = f"{s.modality}: encoded {s.encoded:,}, skipped {s.skipped:,} already encoded, key {s.encoder_key}"
    return text + (f", {s.failed} failed (see the rejects table)" if s.failed else "")


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for this call only (restored afterwards)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
