"""Temperature scaling: the fitted T undoes a mis-scaled model's confidence, not its answers."""

from __future__ import annotations

import numpy as np
import pytest

from ftpipe.tasks.calibration import (
    TEMPERATURE_RANGE,
    calibration_metrics,
    fit_temperature,
    softmax,
)
from ftpipe.tasks.classification_report import ece_noise_floor, expected_calibration_error


def noisy_problem(rows: int = 4000, classes: int = 4, seed: int = 0):
    """Logits of a calibrated model, and labels drawn from its own probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(rows, classes))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (rng.random((rows, 1)) > cumulative).sum(axis=1)
    return logits, labels


def test_an_over_confident_model_gets_a_temperature_above_one_and_a_lower_ece():
    logits, labels = noisy_problem()
    over = logits * 10  # same ranking, ten times too sure

    temperature = fit_temperature(over, labels)
    metrics = calibration_metrics(over, labels, temperature)

    assert temperature > 1
    assert temperature == pytest.approx(10, rel=0.1)  # it recovers the factor it was scaled by
    assert metrics["ece_calibrated"] < metrics["ece_raw"] / 4
    assert metrics["loss_calibrated"] < metrics["loss_raw"]
    # Dividing by one scalar changes no prediction.
    np.testing.assert_array_equal(softmax(over, temperature).argmax(1), over.argmax(1))


def test_an_under_confident_model_gets_a_temperature_below_one_and_a_calibrated_one_about_one():
    logits, labels = noisy_problem(seed=1)
    assert fit_temperature(logits / 4, labels) == pytest.approx(0.25, rel=0.1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


def test_degenerate_eval_sets_keep_a_finite_temperature():
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) == 1.0
    # Every row right by a wide margin: the likelihood grows without bound as T falls.
    separable = np.array([[5.0, -5.0], [-5.0, 5.0]] * 10)
    labels = np.array([0, 1] * 10)
    low, high = TEMPERATURE_RANGE
    assert low <= fit_temperature(separable, labels) < 1 <= high
    assert fit_temperature(separable / 1e3, labels) == pytest.approx(low)


def test_the_ece_noise_floor_is_what_a_calibrated_model_scores_and_shrinks_with_rows():
    # A calibrated model's measured ECE, averaged over many splits of each size, matches the
    # floor computed from one split's confidences: on few rows the ECE is mostly noise.
    floors, measured = {}, {}
    for rows in (80, 320, 4000):
        draws = [noisy_problem(rows, seed=seed) for seed in range(40 if rows < 4000 else 4)]
        measured[rows] = np.mean([expected_calibration_error(softmax(x), y) for x, y in draws])
        floors[rows] = ece_noise_floor(softmax(draws[0][0]).max(axis=1))
        assert floors[rows] == pytest.approx(measured[rows], rel=0.1)
    # It falls as one over the square root of the rows: four times the rows, half the noise.
    assert floors[320] == pytest.approx(floors[80] / 2, rel=0.15)
    assert floors[80] > 0.1 > 0.02 > floors[4000]
    # Seeded: the same confidences give the same floor; certain rows leave no noise at all.
    confidence = softmax(draws[0][0]).max(axis=1)
    assert ece_noise_floor(confidence) == ece_noise_floor(confidence)
    assert ece_noise_floor(np.ones(50)) == 0.0 and ece_noise_floor(np.empty(0)) == 0.0
