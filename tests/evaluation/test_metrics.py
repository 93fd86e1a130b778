"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bonmf_pipe.evaluation.metrics import (
    ErrorSums,
    RankingSums,
    mae,
    mse,
    ranking_metrics,
    ranking_metrics_per_user,
    rmse,
    topk_columns,
    topk_hits_grouped,
)

INV_LOG2_3 = 1 / math.log2(3)  # 0.6309297535714575, the discount of rank 2


def test_rating_metrics_by_hand():
    # errors 0.5, 0, 1 -> MSE = (0.25 + 0 + 1) / 3, MAE = 1.5 / 3
    r, p = np.array([4.0, 3.0, 5.0]), np.array([3.5, 3.0, 4.0])
    assert mse(r, p) == pytest.approx(1.25 / 3)
    assert rmse(r, p) == pytest.approx(math.sqrt(1.25 / 3))
    assert mae(r, p) == pytest.approx(0.5)
    sums = ErrorSums()
    sums.add(r[:1], p[:1])
    sums.add(r[1:], p[1:])
    assert sums.n == 3
    assert sums.values()["mse"] == pytest.approx(1.25 / 3)
    assert sums.values()["mae"] == pytest.approx(0.5)
    assert math.isnan(mse(np.array([]), np.array([])))
    with pytest.raises(ValueError):
        mse(np.array([1.0]), np.array([1.0, 2.0]))


def _two_users():
    # user 1: 4 candidates, scores .9 .8 .7 .1, relevant F T T F
    #   top-2 = (F, T): hits 1 -> P@2 = 1/2, R@2 = 1/2 (R_u = 2)
    #   DCG@2 = 0/log2(2) + 1/log2(3) = 0.63093; IDCG@2 = 1 + 1/log2(3) = 1.63093
    #   NDCG@2 = 0.63093 / 1.63093 = 0.386853
    # user 2: 1 candidate, relevant -> list length min(2, 1) = 1: P@2 = 1/1, R@2 = 1, NDCG@2 = 1
    # user 3: 2 candidates, none relevant -> excluded from every average
    # averages over users 1 and 2: P@2 = 0.75, R@2 = 0.75, NDCG@2 = (0.386853 + 1) / 2 = 0.693426
    users = np.array([1, 1, 1, 1, 2, 3, 3])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.9, 0.1])
    relevant = np.array([False, True, True, False, True, False, False])
    return users, scores, relevant


def test_ranking_two_users_by_hand():
    users, scores, relevant = _two_users()
    m = ranking_metrics(users, scores, relevant, ks=(2,))
    ndcg_u1 = INV_LOG2_3 / (1 + INV_LOG2_3)
    assert ndcg_u1 == pytest.approx(0.386853, abs=1e-6)
    assert m[("precision", 2)] == pytest.approx(0.75)
    assert m[("recall", 2)] == pytest.approx(0.75)
    assert m[("ndcg", 2)] == pytest.approx((ndcg_u1 + 1) / 2)
    assert m[("ndcg", 2)] == pytest.approx(0.693426, abs=1e-6)


def test_ranking_per_user_and_k1():
    users, scores, relevant = _two_users()
    hits, n_cand, n_rel = topk_hits_grouped(users, scores, relevant, 3)
    assert hits.tolist() == [[False, True, True], [True, False, False], [False, False, False]]
    assert n_cand.tolist() == [4, 1, 2]
    assert n_rel.tolist() == [2, 1, 0]
    # K=1: user 1 top = F -> P 0, R 0, NDCG 0; user 2: 1, 1, 1
    per = ranking_metrics_per_user(hits, n_cand, n_rel, 1)
    assert per["precision"][:2].tolist() == [0.0, 1.0]
    assert per["recall"][:2].tolist() == [0.0, 1.0]
    assert per["ndcg"][:2].tolist() == [0.0, 1.0]
    assert all(math.isnan(per[m][2]) for m in per)
    # K=3: user 1 hits at ranks 2 and 3: DCG = 1/log2(3) + 1/log2(4) = 0.63093 + 0.5,
    # IDCG = 1 + 0.63093 -> 0.693426; P@3 = 2/3, R@3 = 1
    per = ranking_metrics_per_user(hits, n_cand, n_rel, 3)
    assert per["precision"][0] == pytest.approx(2 / 3)
    assert per["recall"][0] == pytest.approx(1.0)
    assert per["ndcg"][0] == pytest.approx((INV_LOG2_3 + 0.5) / (1 + INV_LOG2_3))


def test_ties_go_to_the_first_row():
    # three tied candidates, only the second relevant: K=1 shows the first -> 0;
    # K=2 shows first and second -> hit at rank 2: NDCG = (1/log2 3) / 1 = 0.63093
    users = np.array([7, 7, 7])
    scores = np.array([0.5, 0.5, 0.5])
    relevant = np.array([False, True, False])
    m = ranking_metrics(users, scores, relevant, ks=(1, 2))
    assert m[("precision", 1)] == 0.0
    assert m[("ndcg", 2)] == pytest.approx(INV_LOG2_3)
    assert m[("precision", 2)] == pytest.approx(0.5)


def test_streamed_sums_equal_one_shot():
    users, scores, relevant = _two_users()
    acc = RankingSums((2,))
    for sel in (users == 1, users != 1):
        acc.add(*topk_hits_grouped(users[sel], scores[sel], relevant[sel], 2))
    assert acc.users == 2
    assert acc.values() == pytest.approx(ranking_metrics(users, scores, relevant, ks=(2,)))


def test_no_relevant_user_gives_nan_not_zero():
    m = ranking_metrics(np.array([1, 1]), np.array([0.2, 0.1]), np.array([False, False]), ks=(5,))
    assert all(math.isnan(v) for v in m.values())


def test_topk_columns_ties_and_exclusions():
    inf = -np.inf
    scores = np.array(
        [
            [0.1, 0.5, 0.5, inf, 0.3],  # best 3: cols 1, 2 (tie -> lower first), 4
            [0.2, 0.2, 0.2, 0.9, 0.2],  # best 3: col 3, then the tie's lowest columns 0, 1
            [inf, inf, 0.4, inf, inf],  # one candidate: col 2, then excluded ones in column order
        ]
    )
    assert topk_columns(scores, 3).tolist() == [[1, 2, 4], [3, 0, 1], [2, 0, 1]]
    assert topk_columns(scores, 10).shape == (3, 5)
