"""Encoder keys: a short hash of everything that decides an encoder's vectors.

The **spec** of an encoder lists the model id, a SHA-256 of the weights actually loaded
(every state-dict tensor's name, dtype, shape and bytes), the model config, the tokenizer
files or image preprocessing (input size, crop, interpolation, mean/std, decode backend),
pooling, normalisation, compute dtype, store dtype and the text template. The **key** is
the first 16 hex digits of the SHA-256 of the spec's canonical JSON, leaving out its
``provenance`` part (where the files were on this machine, library versions): the same
weights found at another path give the same key.

Hashing the weights needs them loaded. So that a run with nothing new loads no model,
``features/<modality>/encoders.json`` caches descriptor -> key, where the descriptor holds
every loader input known without loading: the model's files by absolute path, size,
mtime and inode, the resolved options and the library versions. A changed weights file
(new size, mtime or inode) misses the cache, so the model is loaded and re-hashed: new
weights give a new key, merely touched ones the same key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bonmf_pipe.featurestore.io import atomic_write_json, file_lock
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.pipeline.encode.registry import ModelSource

SPEC_VERSION = 1  # bump when this package changes how vectors are computed
KEY_LENGTH = 16
PROVENANCE = "provenance"
CACHE_NAME = "encoders.json"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def encoder_key(spec: Mapping[str, Any]) -> str:
    """The key of a spec: its canonical JSON hashed, ``provenance`` left out."""
    body = {k: v for k, v in spec.items() if k != PROVENANCE}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:KEY_LENGTH]


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 over every tensor (sorted by name): name, dtype, shape and raw bytes."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def files_sha256(paths: Iterable[Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (sorted by name)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode() + b"|" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that compute vectors (read from metadata: no import)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "timm", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def descriptor(source: ModelSource, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """What keys the cache: every input of the encoder known without loading it.

    None when the source's files are not known yet (a hub model not cached: loading
    downloads it, and the next run finds it in the cache).
    """
    if not source.describable:
        return None
    files = []
    for f in source.files:
        st = f.stat()
        files.append([str(f), st.st_size, st.st_mtime_ns, st.st_ino])
    return {
        "spec_version": SPEC_VERSION,
        "modality": source.modality,
        "model_id": source.model_id,
        "loader": source.loader,
        "architecture": source.architecture,
        "files": files,
        "options": dict(options),
        "libraries": library_versions(),
    }


def descriptor_id(desc: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(desc).encode()).hexdigest()


class KeyCache:
    """``features/<modality>/encoders.json``: descriptor id -> encoder key."""

    def __init__(self, store: Store, modality: str):
        self.folder = store.features_dir / modality
        self.path = self.folder / CACHE_NAME
        self.lock = self.folder / ".encoders.lock"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data.get("entries", {}) if isinstance(data, dict) else {}

    def get(self, desc: Mapping[str, Any] | None) -> str | None:
        if desc is None:
            return None
        entry = self._read().get(descriptor_id(desc))
        return entry.get("key") if isinstance(entry, dict) else None

    def put(self, desc: Mapping[str, Any] | None, key: str) -> None:
        if desc is None:
            return
        with file_lock(self.lock):
            entries = self._read()
            entries[descriptor_id(desc)] = {"key": key, "model_id": desc["model_id"], "created_at": time.time()}
            atomic_write_json(self.path, {"version": 1, "entries": entries})
