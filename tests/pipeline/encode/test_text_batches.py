"""Texts: tokenized once, padded on the device (to widths in multiples of 8 on CUDA), same vectors as before."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from bonmf_pipe.pipeline.encode.loops import encode_texts
from bonmf_pipe.pipeline.encode.registry import resolve_source
from bonmf_pipe.pipeline.encode.settings import EncodeSettings, resolve_runtime
from bonmf_pipe.pipeline.encode.text import PAD_MULTIPLE, TextEncoder, length_order, text_options


class _Rows:
    """A FeatureWriter stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.shards: list[tuple[np.ndarray, list[str], np.ndarray]] = []

    def write(self, ids, hashes, vectors) -> None:
        self.shards.append((np.asarray(ids), list(hashes), np.array(vectors)))


def _texts(ml_1m, n: int) -> list[str]:
    lines = (ml_1m / "movies.dat").read_bytes().decode("latin-1").splitlines()[:n]
    return [f"{t}. Genres: {g.replace('|', ', ')}." for _, t, g in (ln.split("::") for ln in lines)]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    torch.set_num_threads(1)
    settings = EncodeSettings(device="cpu")
    runtime = resolve_runtime(settings)
    source = resolve_source("text", "offline-minilm")
    return TextEncoder(source, text_options(source, settings, runtime, None), runtime)


def _previous_path(encoder: TextEncoder, texts: list[str], batch_size: int) -> np.ndarray:
    """The vectors as the encoder computed them before: exact-width batches padded on the host."""
    tokens = encoder.tokenize(texts)
    order = length_order(tokens, list(range(len(texts))))
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for b in range(0, len(order), batch_size):
        sel = order[b : b + batch_size]
        width = max(len(tokens[i]) for i in sel)
        ids = torch.full((len(sel), width), encoder.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sel), width), dtype=torch.long)
        for r, i in enumerate(sel):
            ids[r, : len(tokens[i])] = torch.tensor(tokens[i])
            mask[r, : len(tokens[i])] = 1
        with torch.inference_mode():
            hidden = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        out[sel] = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1).numpy()
    return out


@pytest.mark.parametrize("multiple", [1, PAD_MULTIPLE])  # the CPU's exact widths; CUDA's multiples of 8
def test_device_padding_gives_the_previous_vectors(ml_1m, minilm, multiple, monkeypatch):
    monkeypatch.setattr(minilm, "pad_multiple", multiple)
    texts = _texts(ml_1m, 300)
    todo = pa.table({"item_id": np.arange(1000, 1000 + len(texts)), "content_hash": [f"h{i}" for i in range(len(texts))],
                     "input": texts})
    rows, seen = _Rows(), []
    failures = encode_texts(minilm, todo, rows, 32, 128, lambda done, encoded: seen.append((done, encoded)))
    assert failures == [] and sum(d for d, _ in seen) == len(texts) == sum(e for _, e in seen)
    assert [len(ids) for ids, _, _ in rows.shards] == [128, 128, 44]
    ids = np.concatenate([s[0] for s in rows.shards])
    vecs = np.concatenate([s[2] for s in rows.shards])
    hashes = sum((s[1] for s in rows.shards), [])
    assert sorted(ids.tolist()) == todo.column("item_id").to_pylist()
    assert all(h == f"h{i - 1000}" for i, h in zip(ids.tolist(), hashes, strict=True))
    before = _previous_path(minilm, texts, 32)[ids - 1000]
    cos = (vecs * before).sum(1) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(before, axis=1))
    assert cos.min() >= 0.9999


def test_batch_widths_are_few_multiples_of_eight_on_cuda(ml_1m, minilm, monkeypatch):
    assert minilm.pad_multiple == 1 and minilm.width(17) == 17  # on the CPU: exact widths
    monkeypatch.setattr(minilm, "pad_multiple", PAD_MULTIPLE)  # what a CUDA encoder uses
    assert [minilm.width(n) for n in (1, 8, 9, 17, 127, 128)] == [8, 8, 16, 24, 128, 128]
    tokens = minilm.tokenize(_texts(ml_1m, 4000))
    order = length_order(tokens, list(range(len(tokens))))
    exact = {max(len(tokens[i]) for i in order[b : b + 64]) for b in range(0, len(order), 64)}
    bucketed = {minilm.width(n) for n in exact}
    assert all(w % PAD_MULTIPLE == 0 for w in bucketed) and len(bucketed) < len(exact)
    assert len(bucketed) <= -(-max(exact) // PAD_MULTIPLE)


def test_a_width_never_exceeds_max_length(minilm, monkeypatch):
    monkeypatch.setattr(minilm, "max_length", 100)
    monkeypatch.setattr(minilm, "pad_multiple", PAD_MULTIPLE)
    assert minilm.width(97) == 100 and minilm.width(100) == 100 and minilm.width(90) == 96
