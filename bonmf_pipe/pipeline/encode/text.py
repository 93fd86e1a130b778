"""Text encoder: any Hugging Face ``AutoModel`` with mean (over the attention mask) or CLS pooling.

``trust_remote_code`` is never enabled. Texts are tokenized once with the fast tokenizer
(in batches, in a background thread: ``loops.encode_texts``), sorted by token length (then
item id) so each batch pads little, and padded on the right ON THE DEVICE: a batch goes up
as one flat tensor of token ids (pinned, non-blocking on CUDA) and, on CUDA, its width is
rounded up to a multiple of ``PAD_MULTIPLE`` tokens, so a whole catalogue meets the GPU in a
handful of shapes (each new shape costs kernel selection on its first pass). Padding is
masked, so the width changes vectors only by float rounding. Pooled vectors are optionally
L2-normalised as sentence-transformers does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonmf_pipe.errors import ModelNotFoundError
from bonmf_pipe.pipeline.encode.keys import PROVENANCE, SPEC_VERSION, files_sha256, library_versions, state_dict_sha256
from bonmf_pipe.pipeline.encode.registry import ModelSource
from bonmf_pipe.pipeline.encode.settings import EncodeSettings, Runtime
from bonmf_pipe.pipeline.encode.transfer import HostResult, to_device

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt")
_VOLATILE_CONFIG = {"transformers_version", "dtype", "torch_dtype", "architectures"}
# On CUDA, padded batch widths are rounded up to a multiple of this many tokens: each new
# shape costs kernel selection on its first pass there. On the CPU a shape costs nothing
# extra but every padded token costs compute (measured: +15% time on ML-1M titles with
# MiniLM), so CPU batches keep their exact width.
PAD_MULTIPLE = 8


def sentence_transformers_defaults(folder: Path | None) -> tuple[str | None, bool]:
    """(pooling, normalize) from a sentence-transformers folder's modules.json, if any."""
    if folder is None or not (folder / "modules.json").is_file():
        return None, False
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, False
    normalize = any(m.get("type", "").endswith("models.Normalize") for m in modules)
    pooling = None
    for m in modules:
        if m.get("type", "").endswith("models.Pooling"):
            cfg_path = folder / m.get("path", "") / "config.json"
            with contextlib.suppress(OSError, json.JSONDecodeError):
                cfg = json.loads(cfg_path.read_text())
                pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean" if cfg.get("pooling_mode_mean_tokens") else None
    return pooling, normalize


def text_options(source: ModelSource, settings: EncodeSettings, runtime: Runtime, template: str | None) -> dict[str, Any]:
    """The resolved options that, with the weights, decide the text vectors."""
    st_pooling, st_normalize = sentence_transformers_defaults(source.location)
    return {
        "max_length": settings.max_length,
        "pooling": settings.text_pooling or st_pooling or "mean",
        "normalize": st_normalize if settings.normalize is None else settings.normalize,
        "compute_dtype": runtime.dtype,
        "store_dtype": settings.store_dtype,
        "text_template": template,
    }


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Library code never prints: hide transformers' weight-loading progress bar."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


class TextEncoder:
    """A loaded text model: ``tokenize`` texts once, then call it on batches of token ids."""

    def __init__(self, source: ModelSource, options: dict[str, Any], runtime: Runtime):
        import torch
        from transformers import AutoModel, AutoTokenizer

        assert source.location is not None, "download hub models before loading them"
        self.options = options
        self.device = torch.device(runtime.device)
        try:
            with _quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
                model = AutoModel.from_pretrained(source.location, trust_remote_code=False, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFoundError(
                f"{source.location}: cannot load text model '{source.name}' with transformers.AutoModel ({exc}). "
                "Point --text-model at a folder written by save_pretrained (config, weights, tokenizer)."
            ) from exc
        self.model = model.eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.max_length = self._max_length(options["max_length"])
        self.dim = int(model.config.hidden_size)
        self.spec = self._spec(source)
        self.model.to(self.device)
        self.runtime = runtime
        self.pad_multiple = PAD_MULTIPLE if self.device.type == "cuda" else 1

    def _max_length(self, wanted: int) -> int:
        limit = getattr(self.tokenizer, "model_max_length", None)
        return min(wanted, int(limit)) if limit and limit < 1_000_000 else wanted

    def _spec(self, source: ModelSource) -> dict[str, Any]:
        config = {k: v for k, v in self.model.config.to_dict().items() if not k.startswith("_") and k not in _VOLATILE_CONFIG}
        tok_files = [f for f in source.files if f.name in _TOKENIZER_FILES or f.name.startswith(("vocab", "spiece", "sentencepiece"))]
        return {
            "spec_version": SPEC_VERSION,
            "modality": "text",
            "model": source.model_id,
            "architecture": f"{self.model.config.model_type}/{type(self.model).__name__}",
            "config": config,
            "weights_sha256": state_dict_sha256(self.model.state_dict()),
            "tokenizer": {
                "class": type(self.tokenizer).__name__,
                "files_sha256": files_sha256(tok_files),
                "max_length": self.max_length,
                "truncation": True,
                "padding": "right",
            },
            "pooling": self.options["pooling"],
            "normalize": self.options["normalize"],
            "dim": self.dim,
            "compute_dtype": self.options["compute_dtype"],
            "store_dtype": self.options["store_dtype"],
            "text_template": self.options["text_template"],
            **({"template_rules": self.options["template_rules"]} if "template_rules" in self.options else {}),
            PROVENANCE: {"name": source.name, "kind": source.kind, "location": str(source.location), **library_versions()},
        }

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (special tokens added, truncated to ``max_length``)."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def width(self, longest: int) -> int:
        """Padded width of a batch whose longest text has ``longest`` tokens."""
        return min(-(-longest // self.pad_multiple) * self.pad_multiple, max(longest, self.max_length))

    def pad(self, batch: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        """``(input_ids, attention_mask)`` of a batch of token-id lists, padded on the device.

        One copy goes up (the lengths, then the ids back to back); the padded ``[B, width]``
        tensors are built there.
        """
        import torch

        lengths = [len(x) for x in batch]
        packed = to_device(torch.tensor(lengths + [t for x in batch for t in x], dtype=torch.long), self.device)
        n, width = len(batch), self.width(max(lengths))
        lens, flat = packed[:n], packed[n:]
        cols = torch.arange(width, device=self.device)
        mask = cols.unsqueeze(0) < lens.unsqueeze(1)
        where = ((torch.cumsum(lens, 0) - lens).unsqueeze(1) + cols.unsqueeze(0)).clamp_(max=max(flat.numel() - 1, 0))
        return torch.where(mask, flat[where], self.pad_id), mask.long()

    def forward(self, ids: Any, mask: Any) -> Any:
        """Pooled (and, if asked, L2-normalised) float32 vectors of padded inputs on the device."""
        import torch

        with torch.inference_mode(), self.runtime.autocast():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = hidden.float()
        if self.options["pooling"] == "cls":
            vec = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.options["normalize"]:
            vec = torch.nn.functional.normalize(vec, p=2, dim=1)
        return vec

    def submit(self, batch: Sequence[Sequence[int]]) -> HostResult:
        """Queue one batch of token-id lists: pooled vectors ``[len(batch), dim]`` on their way back."""
        return HostResult(self.forward(*self.pad(batch)))

    def __call__(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled vectors ``[len(batch), dim]`` (float32) of a batch of token-id lists."""
        return self.submit(batch).numpy()


def length_order(token_ids: Sequence[Sequence[int]], item_ids: Sequence[int]) -> list[int]:
    """Positions sorted by token length, then item id: batches pad little, deterministically."""
    return sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), item_ids[i]))
