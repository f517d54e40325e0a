import functools

import numpy as np
import pytest

from keras_bridge import metrics

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.4, 0.35, 0.25]])
Y = np.array([0, 2, 0])


def test_accuracy_nll_brier_by_hand():
    assert metrics.accuracy(P, Y) == pytest.approx(2 / 3)
    expected_nll = -(np.log(0.7) + np.log(0.3) + np.log(0.4)) / 3
    assert metrics.nll(P, Y) == pytest.approx(expected_nll)
    expected_brier = (
        (0.09 + 0.04 + 0.01) + (0.01 + 0.36 + 0.49) + (0.36 + 0.1225 + 0.0625)
    ) / 3
    assert metrics.brier(P, Y) == pytest.approx(expected_brier)


def test_ece_by_hand():
    # Confidences 0.7, 0.6, 0.4 fall in three different bins of 15:
    # |1 - 0.7| + |0 - 0.6| + |1 - 0.4|, each bin holding a third.
    assert metrics.ece(P, Y) == pytest.approx((0.3 + 0.6 + 0.6) / 3)
    # Two bins: (0.5, 1] holds 0.7 (right) and 0.6 (wrong), accuracy 0.5
    # and confidence 0.65; (0, 0.5] holds 0.4 (right).
    assert metrics.ece(P, Y, num_bins=2) == pytest.approx(
        0.15 * 2 / 3 + 0.6 / 3
    )


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 3
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in true])
    overconfident = metrics.temperature_scale(true, 0.5)
    temperature = metrics.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    calibrated = metrics.temperature_scale(overconfident, temperature)
    assert metrics.nll(calibrated, labels) < metrics.nll(overconfident, labels)


def test_deep_ensemble_equivalent_interpolates():
    nlls = [0.30, 0.20, 0.15, 0.13]
    assert metrics.deep_ensemble_equivalent(0.30, nlls) == pytest.approx(1.0)
    assert metrics.deep_ensemble_equivalent(0.25, nlls) == pytest.approx(1.5)
    assert metrics.deep_ensemble_equivalent(0.14, nlls) == pytest.approx(3.5)
    assert metrics.deep_ensemble_equivalent(0.10, nlls) == pytest.approx(4.0)
    assert metrics.deep_ensemble_equivalent(0.35, nlls) == pytest.approx(0.5)
    accs = [0.90, 0.92, 0.93]
    assert metrics.deep_ensemble_equivalent(
        0.925, accs, higher_is_better=True
    ) == pytest.approx(2.5)


def test_deep_ensemble_equivalent_on_a_curve_that_dips():
    # DE-2 scores worse than DE-1, as on small test sets: the running best
    # [0.975, 0.975, 0.978] is interpolated, and a score under DE-1 is
    # extrapolated along its first rising segment (1 -> 3), never upwards.
    accs = [0.975, 0.972, 0.978]
    dee = functools.partial(
        metrics.deep_ensemble_equivalent, ensemble_scores=accs,
        higher_is_better=True,
    )  # fmt: skip
    assert dee(0.975) == pytest.approx(1.0)
    assert dee(0.9765) == pytest.approx(2.5)
    assert dee(0.978) == pytest.approx(3.0)
    assert dee(0.99) == pytest.approx(3.0)
    assert dee(0.9735) == pytest.approx(0.0)
    assert dee(0.9745) == pytest.approx(1 - 0.0005 * 2 / 0.003)
    # A curve that never rises above DE-1: anything worse than DE-1 is 0.
    assert metrics.deep_ensemble_equivalent(
        0.2056, [0.2972, 0.2417, 0.2722], higher_is_better=True
    ) == pytest.approx(0.0)
    # Every size in between at most the largest, at least 0.
    for score in np.linspace(0.9, 1.0, 41):
        assert 0.0 <= dee(score) <= 3.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="probabilities"):
        metrics.nll(P, Y[:2])


def test_flops_match_hand_counts():
    import keras

    import keras_bridge as kb

    inputs = keras.Input((4,))
    assert kb.flops(keras.Model(inputs, keras.layers.Dense(3)(inputs))) == (
        2 * 4 * 3 + 3
    )
    images = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(5, 3)(images)
    # 4x4 outputs, 5 channels, 3x3x2 multiply-adds each, plus the bias.
    assert kb.flops(keras.Model(images, conv)) == 2 * 3 * 3 * 2 * 5 * 16 + 80
    same = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)(images)
    assert kb.flops(keras.Model(images, same)) == 2 * 3 * 3 * 2 * 5 * 36
    sequence = keras.Input((10, 3))
    conv1d = keras.layers.Conv1D(4, 3, use_bias=False)(sequence)
    assert kb.flops(keras.Model(sequence, conv1d)) == 2 * 3 * 3 * 4 * 8
