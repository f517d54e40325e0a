import keras
import numpy as np
import pytest

from keras_bridge import CurveProfile


def _profile(nll, accuracy=None, kind="line", pair=(0, 1)):
    t = np.linspace(0.0, 1.0, len(nll))
    if accuracy is None:
        accuracy = np.full(len(nll), 0.5)
    return CurveProfile(kind, pair, t, accuracy, nll)


@pytest.mark.parametrize(
    "nll, barrier",
    [
        ([0.3, 2.3, 0.5], 2.3 - 0.4),
        ([1.0, 0.5, 0.2], 1.0 - 0.6),
        ([0.7, 0.7, 0.7, 0.7], 0.0),
        ([0.2, 0.4, 1.4, 0.9, 0.6], 1.4 - 0.4),
    ],
)
def test_barrier_is_the_peak_above_the_mean_of_the_ends(nll, barrier):
    profile = _profile(nll)
    assert isinstance(profile.barrier, float)
    assert profile.barrier == pytest.approx(barrier, abs=1e-12)


def test_to_dict():
    profile = CurveProfile(
        "curve", (2, 0), [0.0, 0.5, 1.0], [0.9, 0.25, 0.875], [0.3, 2.3, 0.5]
    )
    assert profile.to_dict() == {
        "kind": "curve",
        "pair": [2, 0],
        "t": [0.0, 0.5, 1.0],
        "accuracy": [0.9, 0.25, 0.875],
        "nll": [0.3, 2.3, 0.5],
    }


def test_str_has_the_barrier_and_one_line_per_point():
    profile = CurveProfile(
        "line", (0, 1), [0.0, 0.5, 1.0], [0.9, 0.2, 0.9], [0.3, 2.3, 0.5]
    )
    lines = str(profile).splitlines()
    assert lines[0] == "line 0 -> 1: NLL barrier 1.9000"
    assert "NLL barrier" in str(profile)
    assert lines[1].split() == ["t", "accuracy", "nll"]
    assert len(lines) == 2 + 3
    assert lines[2:] == [
        "  0.00    0.9000   0.3000",
        "  0.50    0.2000   2.3000",
        "  1.00    0.9000   0.5000",
    ]
    assert repr(profile) == str(profile)


def _point_at(calls):
    """A model whose logits are ``[0, 3 t - 1]`` whatever the input: it
    predicts class 0 at t = 0 and class 1 at t = 0.5 and 1."""

    def point_at(t):
        calls.append(t)
        dense = keras.layers.Dense(2, kernel_initializer="zeros")
        inputs = keras.Input((2,))
        model = keras.Model(inputs, dense(inputs))
        dense.bias.assign(np.array([0.0, 3 * t - 1], "float32"))
        return model

    return point_at


def test_measure_scores_each_point():
    x = np.random.default_rng(0).normal(size=(4, 2)).astype("float32")
    y = np.array([0, 1, 1, 1])
    calls = []
    # Two batches: the sums are kept per batch, not the whole data.
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    profile = CurveProfile.measure(
        "curve", (0, 1), 3, batches, _point_at(calls)
    )

    assert calls == [0.0, 0.5, 1.0]
    assert all(type(t) is float for t in calls)
    assert profile.kind == "curve" and profile.pair == (0, 1)
    np.testing.assert_array_equal(profile.t, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(profile.accuracy, [0.25, 0.75, 0.75])
    # With logits [0, b]: log p(1) = -log(1 + e^-b), log p(0) =
    # -log(1 + e^b); one label 0 and three labels 1.
    b = np.array([-1.0, 0.5, 2.0])
    nll = (np.log1p(np.exp(b)) + 3 * np.log1p(np.exp(-b))) / 4
    np.testing.assert_allclose(profile.nll, nll, atol=1e-6)
    np.testing.assert_allclose(
        profile.barrier, nll.max() - (nll[0] + nll[-1]) / 2, atol=1e-6
    )
