"""Verification metrics against hand computations and scikit-learn."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve

from vlrface.protocols.verification import (
    best_threshold,
    kfold_accuracy,
    make_pairs,
    metric_suffix,
    tar_at_far,
    threshold_at_far,
    threshold_suffix,
    verification_threshold,
)


def test_best_threshold_hand_case():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    same = np.array([False, False, True, True])
    t = best_threshold(scores, same)
    # no threshold separates 0.35 (same) from 0.4 (not same): the best is 3 of 4
    assert np.mean((scores > t) == same) == 0.75


def test_kfold_accuracy_hand_case():
    # 4 folds of 2 pairs; separable everywhere except fold 3, where the pairs are swapped
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.1, 0.9, 0.7, 0.3])
    same = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    mean, std = kfold_accuracy(scores, same, folds=4)
    assert mean == pytest.approx(0.75) and std == pytest.approx(np.std([1, 1, 0, 1]))


@pytest.mark.parametrize("far", [1e-1, 1e-2])
def test_tar_at_far_matches_sklearn(far):
    rng = np.random.default_rng(0)
    same = rng.uniform(size=2000) < 0.5
    scores = rng.normal(same * 1.5, 1.0)
    fpr, tpr, thr = roc_curve(same, scores)
    expected = tpr[np.searchsorted(fpr, far, side="right") - 1]  # best TPR with FPR <= far
    assert tar_at_far(scores, same, far) == pytest.approx(expected, abs=1 / same.sum())


def test_pairs_are_balanced_deterministic_and_valid():
    test = pd.DataFrame({"identity": np.repeat([f"{i:07d}" for i in range(6)], 3)})
    p = make_pairs(test, 20, seed=1)
    assert len(p) == 20 and p.same.sum() == 10
    assert p.equals(make_pairs(test, 20, seed=1))
    ident = test.identity.to_numpy()
    assert (ident[p.a] == ident[p.b]).tolist() == p.same.tolist()
    assert (p.a != p.b).all()


def test_metric_names_have_no_dots_in_the_far():
    assert metric_suffix(1e-3) == "tar_far_1e-3"
    assert metric_suffix(1e-1) == "tar_far_1e-1"


def test_threshold_at_far_is_the_tar_at_far_threshold_and_reaches_registration():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(500, bool), np.zeros(2000, bool)]
    scores = np.where(same, rng.normal(0.6, 0.15, 2500), rng.normal(0.1, 0.1, 2500))
    t = threshold_at_far(scores, same, 1e-3)
    assert np.sort(scores[~same])[-3] == t  # floor(1e-3 * 2000) = 2 negatives may pass it
    assert np.mean(scores[~same] > t) <= 1e-3
    assert tar_at_far(scores, same, 1e-3) == np.mean(scores[same] > t)
    assert threshold_suffix(1e-3) == "threshold_far_1e-3"
    metrics = {"eval.demo.hr_hr.112.threshold_far_1e-3": t}
    assert verification_threshold(metrics, "demo", 112, 1e-3) == t
    assert verification_threshold({}, "demo", 112, 1e-3) is None

    from vlrface.registration import serving_settings

    config = {"data": {"name": "demo", "image_size": 112, "align": "auto"},
              "evaluation": {"far": 1e-3}}  # fmt: skip
    served, tags = serving_settings(metrics, {"synthetic": True}, config)
    assert served == {"threshold": t, "synthetic": True}
    assert tags["verification.threshold"] == f"{t:.6g}" and tags["verification.far"] == "0.001"
    assert tags["verification.threshold_metric"] == "eval.demo.hr_hr.112.threshold_far_1e-3"
