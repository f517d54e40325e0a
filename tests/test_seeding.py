"""A seeded keras-bridge call is reproducible and leaves the caller's
global random state (Python, NumPy, TensorFlow, Keras) as it found it."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge import training


def _data():
    rng = np.random.default_rng(0)  # leaves the global generators alone
    x = rng.random((32, 8, 8, 1), dtype="float32")
    return x, rng.integers(0, 10, 32)


def _draws():
    """The next value of every global generator a user might rely on."""
    return (
        random.random(),
        float(np.random.rand()),
        float(tf.random.uniform([])),
        float(keras.random.uniform([])),
    )


def _fit_modes(backbone, data):
    ens = kb.BridgeEnsemble(backbone, num_modes=1, seed=0)
    ens.fit_modes(data, epochs=1, verbose=0)
    return [np.array(w) for w in ens.modes[0].weights]


def _backbone():
    """Initialised weights, BatchNormalization and a dense layer: what a
    seed must fix, in the fewest layers (each fit traces them)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="features")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


@pytest.mark.large
def test_seeded_fit_modes_is_reproducible_and_leaves_the_random_state():
    backbone = _backbone()
    data = _data()
    keras.utils.set_random_seed(123)
    expected = _draws()
    keras.utils.set_random_seed(123)
    first = _fit_modes(backbone, data)
    assert _draws() == expected
    random.seed(7)
    np.random.seed(7)  # the caller's state must not reach a seeded run
    second = _fit_modes(backbone, data)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_seeded_adds_the_offset_and_none_seeds_nothing():
    np.random.seed(5)
    with training.seeded(None):
        unseeded = float(np.random.rand())
    with training.seeded(0, offset=3):
        offset = float(np.random.rand())
    assert unseeded == np.random.RandomState(5).rand()
    assert offset == np.random.RandomState(3).rand()


def test_seeded_block_keeps_an_unset_tensorflow_seed_unset():
    tf.random.set_seed(None)
    with training.seeded(0):
        assert tf.compat.v1.get_seed(None)[0] == 0
    assert tf.compat.v1.get_seed(None) == (None, None)
