"""Fixtures of the encode tests: small real catalogues (ML-1M movies + real posters) in tmp.

The session store (``encoded``) is ingested and encoded once with the offline models and
shared read-only; tests that change a store work on a copy (``copy_store``). Every encode
here runs with one torch thread (``cpu_threads=1``): the development machine has two
cores shared by several processes, where two threads are many times slower.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import load_feature_matrix, resolve_feature_set
from bonmf_pipe.featurestore.schema import ITEMS

TOY_STORY, TOY_STORY_2, SCHINDLER = 1, 3114, 527
CORE = (TOY_STORY, TOY_STORY_2, SCHINDLER)
N_TEXTS, N_POSTERS = 300, 200
THREADS = {"cpu_threads": 1}


def write_catalogue(folder: Path, ml_1m: Path, posters: Path, text_ids, poster_ids) -> Path:
    """A MovieLens-1M folder with only ``text_ids`` (lines copied as-is) and symlinked posters."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = set(text_ids)
    lines = [ln for ln in (ml_1m / "movies.dat").read_bytes().splitlines() if ln and int(ln.split(b"::", 1)[0]) in wanted]
    (folder / "movies.dat").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "posters").mkdir(exist_ok=True)
    for i in poster_ids:
        src = posters / f"{i}.jpg"
        if src.exists():
            (folder / "posters" / f"{i}.jpg").symlink_to(src)
    return folder


def movie_ids(ml_1m: Path) -> list[int]:
    return [int(ln.split(b"::", 1)[0]) for ln in (ml_1m / "movies.dat").read_bytes().splitlines() if ln]


def ingest_into(root: Path, catalogue: Path) -> Store:
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

    store = Store.open(root, create=True)
    ingest(store, IngestSettings(path=catalogue, dataset="ml-1m", posters=catalogue / "posters"))
    return store


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory, ml_1m, ml_1m_posters) -> Path:
    """300 ML-1M movies (the first ones, plus Toy Story 2 and Schindler's List), 200 posters."""
    ids = [i for i in movie_ids(ml_1m) if i not in CORE][: N_TEXTS - len(CORE)] + list(CORE)
    with_poster = [i for i in ids if (ml_1m_posters / f"{i}.jpg").exists()]
    posters = [i for i in with_poster if i not in CORE][: N_POSTERS - len(CORE)] + list(CORE)
    return write_catalogue(tmp_path_factory.mktemp("catalogue"), ml_1m, ml_1m_posters, ids, posters)


@dataclass
class Encoded:
    root: Path
    summary: object
    events: list

    @property
    def store(self) -> Store:
        return Store.open(self.root)


@pytest.fixture(scope="session")
def encoded(tmp_path_factory, catalogue) -> Encoded:
    """The catalogue ingested and encoded (text + image, offline models) in small shards."""
    from bonmf_pipe.pipeline.encode import EncodeSettings, encode

    root = tmp_path_factory.mktemp("encoded") / "store"
    store = ingest_into(root, catalogue)
    events: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        summary = encode(store, EncodeSettings(rows_per_shard=64, **THREADS), forward_hook=events.append)
    return Encoded(root, summary, events)


@pytest.fixture
def copy_store(tmp_path):
    def copy(src: Path) -> Store:
        dst = tmp_path / "copy"
        shutil.copytree(src, dst, symlinks=True)
        return Store.open(dst)

    return copy


def vectors(store: Store, modality: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, float32 vectors) of every item with a current vector, by item id."""
    fs = resolve_feature_set(store, modality, key)
    ids = np.sort(store.read_table("items", columns=["item_id"]).column("item_id").to_numpy())
    matrix, found = load_feature_matrix(store, fs, ids)
    return ids[found], matrix[found]


def write_items(store: Store, rows: list[dict], settings: dict | None = None) -> None:
    """An items table written directly (no ingest): rows need item_id, title, text, poster_path/sha."""
    full = []
    for r in rows:
        full.append(
            {
                "year": None, "genres": [], "tags": [], "poster_path": None, "poster_sha256": None,
                "poster_width": None, "poster_height": None, "imdb_id": None, "tmdb_id": None, **r,
            }
        )
    with store.writer("items", ITEMS, settings or {}) as w:
        w.write(pa.Table.from_pylist(full, schema=ITEMS))
        w.commit()
