"""Settings of the encode stage, presets, and what ``auto`` resolves to on this machine."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.features import MODALITIES, RESERVED_NAMES, is_feature_name, template_fields

# Encoders by preset: (text model, image model). Names are registry names, Hugging Face
# ids or timm names (see registry.py); local paths work wherever a name does.
PRESETS: dict[str, tuple[str, str]] = {
    "offline": ("offline-minilm", "offline-efficientnet-lite0"),
    "paper": ("roberta-base", "vit_base_patch16_224"),
}
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "fp16", "bf16")
STORE_DTYPES = ("float16", "float32")
POOLINGS = ("mean", "cls")
IMAGE_BACKENDS = ("auto", "pil")
# Default batch sizes by (device, modality).
BATCH_SIZES = {("cpu", "text"): 64, ("cpu", "image"): 32, ("cuda", "text"): 512, ("cuda", "image"): 256}


@dataclass(frozen=True)
class EncodeSettings:
    """How to encode item texts and posters into feature shards."""

    modalities: tuple[str, ...] = ("text", "image")
    """Which feature sets to build: text, image or both."""
    text_model: str | None = None
    """Text encoder: a registry name, a Hugging Face id or a local folder; None: the preset's."""
    image_model: str | None = None
    """Image encoder: a registry name, a timm name or a local folder; None: the preset's."""
    preset: str = "offline"
    """offline (MiniLM-L6 + EfficientNet-Lite0, shipped as packages, no network) or paper
    (roberta-base + vit_base_patch16_224: Hugging Face cache, hub or local copies)."""
    batch_size: int | None = None
    """Items per forward pass; None: 64 texts / 32 posters on CPU, 512 / 256 on CUDA."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    dtype: str = "auto"
    """Compute dtype: auto (bf16 on cuda, fp32 on cpu), fp32, fp16 or bf16 (autocast). Part
    of the encoder key."""
    store_dtype: str = "float16"
    """Vectors are stored as float16 or float32. Part of the encoder key."""
    shard: tuple[int, int] = (0, 1)
    """(i, N): encode only the items whose ``item_partition(id, N)`` is i (``--shard i/N``)."""
    rows_per_shard: int = 4096
    """Vectors per Parquet shard; each shard is committed to the manifest when written."""
    num_workers: int | None = None
    """DataLoader worker processes that read and decode posters; None: by CPU count (0 on
    machines with 2 cores or fewer)."""
    text_pooling: str | None = None
    """mean (over the attention mask) or cls; None: the model's sentence-transformers
    pooling config when it has one (mean for the offline MiniLM), else mean."""
    normalize: bool | None = None
    """L2-normalise vectors; None: the model's default (True for text models with a
    sentence-transformers Normalize module such as the offline MiniLM, else False)."""
    max_length: int = 128
    """Texts are truncated to this many tokens."""
    image_backend: str = "auto"
    """How posters become pixels; auto and pil are the same and the only way: PIL decodes
    at native size in the loader workers, the model's resize/crop/normalisation runs on the
    compute device. (The former ``tensor`` backend is gone: nvJPEG refuses progressive JPEGs,
    nearly all real posters, and its fallback decoded in the main process.)"""
    cpu_threads: int | None = None
    """torch intra-op threads while this call encodes on CPU (restored afterwards); None:
    leave torch's setting alone."""
    retry_rejected: bool = False
    """Retry posters (and template texts) that an earlier encode rejected (by default they are
    skipped until ingest sees a new file, or the item's fields change)."""
    name: str | None = None
    """Write the named text feature set NAME instead of the text / image sets: the text model
    over ``text_template`` (both required together), stored in ``features/NAME/<key>`` with its
    own key, manifest and SQL view ``NAME_features``; train it with ``--features text,image,NAME``.
    Lower-case letters, digits and '_', not text, image, all, auto or none. --modality is not
    used: the set is always text."""
    text_template: str | None = None
    """With --name: the template of that set's texts, over items columns ({title}, {year},
    {genres}, {tags}, {text}, {imdb_id}, ...; lists ", "-joined), e.g. "{tags}" or
    "{title}. Tags: {tags}.". A sentence with an empty field is dropped; an item whose text
    comes out empty is rejected (no vector). Part of the key."""

    def __post_init__(self) -> None:
        self._check_template_set()
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ConfigError(f"--modality {','.join(self.modalities)!r}: use text, image or text,image.")
        _choice("preset", self.preset, tuple(PRESETS))
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("store-dtype", self.store_dtype, STORE_DTYPES)
        if self.image_backend == "tensor":
            raise ConfigError(
                "--image-backend tensor was removed: posters are now decoded by PIL in the loader workers "
                "and resized on the compute device, which is faster on CPU and CUDA. Drop the option."
            )
        _choice("image-backend", self.image_backend, IMAGE_BACKENDS)
        if self.text_pooling is not None:
            _choice("text-pooling", self.text_pooling, POOLINGS)
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise ConfigError(f"--shard {i}/{n}: use i/N with 0 <= i < N, e.g. --shard 0/4.")
        for name in ("batch_size", "rows_per_shard", "max_length", "cpu_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, not {value}.")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num-workers must be 0 or more, not {self.num_workers}.")

    def _check_template_set(self) -> None:
        if self.name is None and self.text_template is None:
            return
        if self.name is None:
            raise ConfigError(
                "--text-template needs --name NAME: it writes a named text feature set beside the default one "
                "(whose texts come from `bonmf-pipe ingest --text-template`)."
            )
        if not is_feature_name(self.name) or self.name in (*MODALITIES, *RESERVED_NAMES):
            raise ConfigError(
                f"--name {self.name!r}: use lower-case letters, digits and '_' (starting with a letter, at most 40), "
                f"and not {', '.join(MODALITIES)} (the default feature sets) or {', '.join(RESERVED_NAMES)}."
            )
        if self.text_template is None or not self.text_template.strip():
            raise ConfigError(f"--name {self.name} needs --text-template, e.g. --text-template \"{{tags}}\".")
        if self.modalities == ("image",):
            raise ConfigError(f"--name {self.name} writes a text feature set: drop --modality image.")
        template_fields(self.text_template)  # syntax; the fields are checked against the items table

    @property
    def jobs(self) -> tuple[tuple[str, str], ...]:
        """(feature-set name, encoder modality) of every set this run writes."""
        if self.name is not None:
            return ((self.name, "text"),)
        return tuple((m, m) for m in self.modalities)

    def model_for(self, modality: str) -> str:
        """The model name this run uses for ``modality`` (explicit, else the preset's)."""
        text, image = PRESETS[self.preset]
        if modality == "text":
            return self.text_model or text
        return self.image_model or image


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"--{name} {value!r} is not one of {', '.join(choices)}.")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N)."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: use i/N, e.g. --shard 0/4 for the first of four.") from None
    return i, n


def parse_modalities(text: str) -> tuple[str, ...]:
    """``"text,image"`` -> ("text", "image")."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class Runtime:
    """What ``auto`` resolved to on this machine."""

    device: str  # cpu | cuda
    dtype: str  # fp32 | fp16 | bf16

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the compute dtype; nothing for fp32."""
        import torch

        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=torch.bfloat16 if self.dtype == "bf16" else torch.float16)

    def batch_size(self, settings: EncodeSettings, modality: str) -> int:
        return settings.batch_size or BATCH_SIZES[(self.device, modality)]

    def num_workers(self, settings: EncodeSettings) -> int:
        if settings.num_workers is not None:
            return settings.num_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if cores <= 2:
            return 0
        return min(16, cores - 2) if self.device == "cuda" else min(4, cores // 2)


def resolve_runtime(settings: EncodeSettings) -> Runtime:
    device = runtime.resolve_device(settings.device).type
    dtype = runtime.resolve_dtype(settings.dtype, device)
    return Runtime(device=device, dtype=dtype)
