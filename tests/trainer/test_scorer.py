"""The scorer: whole-catalogue scores equal pairwise predictions, and the user slices it
combines with the catalogue are sized by the broadcast width, not by the users asked for."""

from __future__ import annotations

import numpy as np
import pytest

from bonmf_pipe.trainer import TrainSettings, load_scorer, train


@pytest.mark.parametrize("model", ["svd", "bonmf"])
def test_score_items_in_bounded_slices_equals_pairwise_predictions(small_store, model, monkeypatch):
    run = train(small_store, TrainSettings(model=model, epochs=1, batch_size=256, device="cpu", seed=5))
    scorer = load_scorer(small_store, run.run_id)
    users = scorer.user_ids[:9]
    n_items = len(scorer.item_ids)
    widths: list[tuple[int, ...]] = []
    real = scorer.model.combine

    def recording(up, ip, grid):
        widths.append(tuple(up["bias"].shape))
        return real(up, ip, grid)

    monkeypatch.setattr(scorer.model, "combine", recording)
    whole = scorer.score_items(users)  # default budget: the 9 users in one slice
    assert widths == [(9,)]
    widths.clear()
    budget = n_items * 40  # room for one user's [items, width] intermediates, not two
    sliced = scorer.score_items(users, chunk_values=budget)
    assert len(widths) == 9 and all(w == (1,) for w in widths)
    np.testing.assert_array_equal(sliced, whole)
    monkeypatch.undo()
    pairs = scorer.predict(np.repeat(users, n_items), np.tile(scorer.item_ids, len(users)))
    np.testing.assert_allclose(whole.ravel(), pairs, rtol=1e-5, atol=1e-5)
