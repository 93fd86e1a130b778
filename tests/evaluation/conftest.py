"""A small synthetic store with cold and unseen items, and one trained run on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.schema import RATINGS
from tests.trainer.conftest import build_store


def build_cold_store(root: Path) -> Store:
    """The trainer's synthetic store, with 10 items cut to one rating and 5 to three, so that
    a 70/30 split leaves items with few (cold) and no (unseen) training ratings."""
    store = build_store(root)
    ratings = store.read_table("ratings")
    items = np.sort(np.unique(ratings.column("item_id").to_numpy()))
    keep_one, keep_three = set(items[:10].tolist()), set(items[10:15].tolist())
    seen: dict[int, int] = {}
    mask = []
    for i in ratings.column("item_id").to_pylist():
        seen[i] = seen.get(i, 0) + 1
        limit = 1 if i in keep_one else 3 if i in keep_three else None
        mask.append(limit is None or seen[i] <= limit)
    with store.writer("ratings", RATINGS, store.manifest("ratings").settings) as w:
        w.write(ratings.filter(pa.array(mask)))
        w.commit()
    return store


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Store, str]:
    """(store, run id) of a short bonmf text+image run on the cold synthetic store."""
    from bonmf_pipe.trainer import TrainSettings, train

    store = build_cold_store(tmp_path_factory.mktemp("eval") / "store")
    result = train(store, TrainSettings(model="bonmf", epochs=3, batch_size=256, device="cpu", seed=3))
    return store, result.run_id
