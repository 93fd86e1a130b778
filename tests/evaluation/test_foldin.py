"""Fold-in: a user's embedding and bias solved from their ratings with the item side frozen
reproduces what training learned for them; new users get top-K lists from a few ratings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.errors import ConfigError, InputError
from bonmf_pipe.evaluation import recommend
from bonmf_pipe.evaluation.foldin import (
    FoldInSettings, fold_in, parse_rate, read_ratings_file, recommend_new_user, score_folded,
)
from bonmf_pipe.featurestore.features import load_feature_matrix, resolve_feature_set, text_content_hash
from bonmf_pipe.featurestore.schema import ITEMS
from bonmf_pipe.trainer import TrainSettings, load_scorer, read_run_config, split_dataset, train
from tests.trainer.conftest import build_store, write_feature_set


def _known_ratings(store, run_id) -> dict[int, dict[int, float]]:
    rows = split_dataset(store, read_run_config(store, run_id)["split_id"]).to_table().to_pylist()
    out: dict[int, dict[int, float]] = {}
    for r in rows:
        if r["part"] == "train":
            out.setdefault(r["user_id"], {})[r["item_id"]] = r["rating"]
    return out


def _check_recovery(store, run_id, settings=None):
    scorer = load_scorer(store, run_id)
    known = _known_ratings(store, run_id)
    users = sorted(known, key=lambda u: -len(known[u]))[:5]
    corr = []
    for u in users:
        folded = fold_in(scorer, known[u], settings)
        mine = score_folded(scorer, folded)
        trained = scorer.score_items(np.array([u]))[0]
        corr.append(np.corrcoef(mine, trained)[0, 1])
        assert folded.seconds < 60 and folded.n_ratings == len(known[u])
    return corr


@pytest.fixture(scope="module")
def converged(trained) -> tuple:
    """(store, run id) of a bonmf run trained to convergence on the evaluation store (the
    ``trained`` fixture's 3 epochs leave users far from their optimum and nearly alike)."""
    store, _ = trained
    run = train(store, TrainSettings(model="bonmf", epochs=20, batch_size=128, early_stopping_patience=0,
                                     device="cpu", seed=3))
    return store, run.run_id


def test_fold_in_recovers_a_trained_bonmf_user(converged):
    store, run_id = converged
    # the training objective itself (prior=l2): the solver lands where training did
    corr = _check_recovery(store, run_id, FoldInSettings(prior="l2"))
    assert min(corr) > 0.95, corr
    # the default population prior pulls toward the typical user, the more so the fewer the
    # ratings (here ~17 each): close to the trained user, not equal (its gain on real new users
    # is measured in benchmarks/cold_items.py --new-users)
    corr = _check_recovery(store, run_id)
    assert np.mean(corr) > 0.8, corr


def test_fold_in_recovers_a_trained_svd_user(trained):
    store, _ = trained
    run = train(store, TrainSettings(model="svd", epochs=20, batch_size=128, early_stopping_patience=0,
                                     device="cpu", seed=3))
    corr = _check_recovery(store, run.run_id, FoldInSettings(prior="l2"))
    assert min(corr) > 0.95, corr
    corr = _check_recovery(store, run.run_id)
    assert np.mean(corr) > 0.8, corr


def test_new_user_gets_recommendations_from_a_few_ratings(converged, tmp_path):
    store, run_id = converged
    scorer = load_scorer(store, run_id)
    assert 424242 not in set(scorer.user_ids.tolist())
    liked, disliked = scorer.item_ids[20:24].tolist(), scorer.item_ids[30:33].tolist()
    path = tmp_path / "mine.csv"
    path.write_text("item_id,rating\n" + "".join(f"{i},5\n" for i in liked) + "".join(f"{i},1\n" for i in disliked))
    ratings = read_ratings_file(path)
    assert ratings == {**{i: 5.0 for i in liked}, **{i: 1.0 for i in disliked}}
    table = recommend_new_user(store, run_id, 424242, ratings, k=5)
    rows = table.to_pylist()
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert not {r["item_id"] for r in rows} & set(ratings)
    assert all(r["title"] == f"movie {r['item_id']}" for r in rows)
    meta = table.schema.metadata
    assert b"folded in from 7 rating(s)" in meta[b"note"] and meta[b"user_id"] == b"424242"
    # the fold-in follows the ratings: liked items score above disliked ones on average, and the
    # solved user fits the ratings better than the unknown user the run would otherwise use
    folded = fold_in(scorer, ratings)
    scores = score_folded(scorer, folded, np.array(liked + disliked))
    assert scores[: len(liked)].mean() > scores[len(liked):].mean()
    stars = np.array([5.0] * len(liked) + [1.0] * len(disliked))
    unknown = scorer.predict(np.full(len(stars), 424242), np.array(liked + disliked))
    assert folded.fit_rmse < np.sqrt(np.mean((unknown - stars) ** 2))


def test_fold_in_inputs_are_checked(trained, tmp_path):
    store, run_id = trained
    scorer = load_scorer(store, run_id)
    assert parse_rate(["10=4.5", "20=1"]) == {10: 4.5, 20: 1.0}
    with pytest.raises(ConfigError, match="ITEM=STARS"):
        parse_rate(["10:4"])
    with pytest.raises(ConfigError, match="at least one rating"):
        fold_in(scorer, {})
    with pytest.raises(InputError, match="not in the run's catalogue"):
        fold_in(scorer, {123456789: 4.0})
    with pytest.raises(ConfigError, match="population or l2"):
        fold_in(scorer, {int(scorer.item_ids[0]): 4.0}, FoldInSettings(prior="flat"))
    with pytest.raises(ConfigError, match="rating range"):
        fold_in(scorer, {int(scorer.item_ids[0]): 11.0})
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,rating\n10,four\n")
    with pytest.raises(InputError, match="item_id,rating"):
        read_ratings_file(bad)


def test_recommend_cli_folds_in_a_new_user(trained):
    store, run_id = trained
    items = load_scorer(store, run_id).item_ids[:3].tolist()
    argv = ["recommend", "--run", run_id, "--user", "777777", "-k", "4", "--store", str(store.root),
            "--rate", f"{items[0]}=5", "--rate", f"{items[1]}=4.5", "--rate", f"{items[2]}=1"]
    out = CliRunner().invoke(app, argv)
    assert out.exit_code == 0, out.stdout
    assert "folded in from 3 rating(s)" in out.stdout and "movie " in out.stdout
    bad = CliRunner().invoke(app, [*argv[:-2], "--rate", "123456789=4"])
    assert bad.exit_code == 1 and "not in the run's catalogue" in bad.output
    plain = CliRunner().invoke(app, ["recommend", "--run", run_id, "--user", "777777", "--store", str(store.root)])
    assert plain.exit_code == 1 and "no training ratings" in plain.output


def test_items_ingested_after_training_are_scored_from_their_content(tmp_path):

    store = build_store(tmp_path / "store")
    run = train(store, TrainSettings(model="bonmf", epochs=10, batch_size=128, device="cpu", seed=1))
    before = load_scorer(store, run.run_id)
    assert before.new_items == 0
    # three movies arrive: two with the text of the run's best and worst item for a user, one a copy of the first
    user = int(before.user_ids[0])
    known = before.score_items(np.array([user]))[0]
    best, worst = int(before.item_ids[np.argmax(known)]), int(before.item_ids[np.argmin(known)])
    items = store.read_table("items")
    fs = resolve_feature_set(store, "text")
    old_vec, _ = load_feature_matrix(store, fs, items.column("item_id").to_numpy())
    source = {9001: best, 9002: worst, 9003: best}
    ids_old = items.column("item_id").to_pylist()
    rows = [r for r in items.to_pylist() if r["item_id"] in source.values()]
    new_rows = [{**next(r for r in rows if r["item_id"] == src), "item_id": new, "title": f"new {new}",
                 "text": f"movie {src}", "poster_path": None, "poster_sha256": None} for new, src in source.items()]
    with store.writer("items", ITEMS) as w:
        w.write(pa.concat_tables([items, pa.Table.from_pylist(new_rows, schema=items.schema)]))
        w.commit()
    vec = np.concatenate([old_vec, old_vec[[ids_old.index(s) for s in source.values()]]])
    all_ids = ids_old + list(source)
    texts = [r["text"] for r in items.to_pylist()] + [r["text"] for r in new_rows]
    write_feature_set(store, "text", fs.key, all_ids, [text_content_hash(t) for t in texts], vec)

    after = load_scorer(store, run.run_id)
    assert after.new_items == 3
    s = after.predict(np.full(3, user), np.array(list(source)))
    assert s[0] == pytest.approx(s[2], abs=1e-5)  # same content, same score
    assert s[0] > s[1]  # the content of the user's best item beats that of their worst
    table = recommend(store, run.run_id, user, k=3)
    assert b"3 item(s) ingested after run" in table.schema.metadata[b"note"]


def test_fold_in_protocol_on_a_cold_users_split(tmp_path):
    from bonmf_pipe.evaluation.foldin import evaluate_fold_in

    store = build_store(tmp_path / "store", n_users=160)
    run = train(store, TrainSettings(model="bonmf", split="cold-users:0.25", epochs=15, batch_size=128,
                                     early_stopping_patience=0, device="cpu", seed=2))
    result = evaluate_fold_in(store, run.run_id, given=8)
    assert result.users > 10 and result.rows > 100
    # users are taste vectors the synthetic ratings follow: a few ratings reveal them
    assert result.rmse_folded < result.rmse_unknown
