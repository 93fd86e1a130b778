"""recommend: top-K of one user, without the items they rated in training, with titles."""

from __future__ import annotations

import numpy as np
import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.evaluation import recommend
from bonmf_pipe.trainer import load_scorer, read_run_config, split_dataset


def test_recommend_excludes_training_items_and_has_titles(trained):
    store, run_id = trained
    split = split_dataset(store, read_run_config(store, run_id)["split_id"]).to_table().to_pylist()
    user = split[0]["user_id"]
    rated = {r["item_id"] for r in split if r["user_id"] == user and r["part"] in ("train", "valid")}
    table = recommend(store, run_id, user, k=7)
    rows = table.to_pylist()
    assert [r["rank"] for r in rows] == list(range(1, 8))
    assert not {r["item_id"] for r in rows} & rated
    assert all(r["title"] == f"movie {r['item_id']}" and r["year"] == 2000 for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    # they are the user's best unrated items by the model's own scores
    scorer = load_scorer(store, run_id)
    all_scores = scorer.score_items(np.array([user]))[0]
    unrated = [(float(s), int(i)) for s, i in zip(all_scores, scorer.item_ids) if int(i) not in rated]
    best = sorted(unrated, key=lambda t: (-t[0], t[1]))[:7]
    assert [r["item_id"] for r in rows] == [i for _, i in best]


def test_recommend_unknown_user_and_bad_k(trained):
    store, run_id = trained
    with pytest.raises(ConfigError, match="no training ratings"):
        recommend(store, run_id, 999_999)
    with pytest.raises(ConfigError, match="-k"):
        recommend(store, run_id, 1, k=0)
