"""POST /score: anomaly scores of real digits against real Fashion-MNIST items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aae.data import load_splits

FASHION = Path(__file__).resolve().parents[1] / "fixtures" / "fashion-mnist"


def auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC: the chance that a positive scores above a negative (ties count half)."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + ties / 2)


@pytest.fixture(scope="module")
def fashion():
    return load_splits(FASHION, n_labels=None, validation_size=0, seed=0,
                       download=False).test.images


def scores(client, pixels, model="digits"):
    response = client.post(f"/score?model={model}", json={"pixels": pixels.tolist()})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("model", ["digits", "plain", "styles"])
def test_digits_score_low_and_clothes_high(client, test_digits, fashion, model):
    ours = scores(client, test_digits.images[:200], model)
    theirs = scores(client, fashion[:200], model)
    assert ours["threshold"] is not None and ours["detail"] is None
    digit_scores = np.array([s["score"] for s in ours["scores"]])
    clothes = np.array([s["score"] for s in theirs["scores"]])
    assert auc(digit_scores, clothes) > 0.9
    flagged = np.mean([s["is_outlier"] for s in ours["scores"]])
    assert flagged < 0.1  # the threshold is the 99th percentile of validation digits
    assert np.mean([s["is_outlier"] for s in theirs["scores"]]) > 0.5
    first = ours["scores"][0]
    assert first["score"] == pytest.approx(first["reconstruction_error"]
                                           + first["prior_nll"] / 784, rel=1e-5)


def test_a_version_without_a_threshold_scores_and_says_so(client, test_digits, store):
    body = scores(client, test_digits.images[:3], "digits&version=1")
    assert body["version"] == 1 and body["threshold"] is None
    assert "no outlier flags" in body["detail"]
    assert all(s["is_outlier"] is None for s in body["scores"])
