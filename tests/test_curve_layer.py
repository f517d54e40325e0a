import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_bridge import curves
from keras_bridge.layers import CurveLayer


@keras.saving.register_keras_serializable(package="keras_bridge_tests")
class ScaleShift(keras.layers.Layer):
    """A user-defined layer owning a trainable and a non-trainable weight."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer="random_normal"
        )
        self.shift = self.add_weight(
            shape=(input_shape[-1],),
            initializer="random_normal",
            trainable=False,
        )

    def call(self, x):
        return x * self.scale + self.shift


class IntegerStep(keras.layers.Layer):
    def build(self, input_shape):
        self.step = self.add_weight(shape=(), dtype="int32", trainable=True)

    def call(self, x):
        return x


_SEEDS = itertools.count()


def _bn():
    layer = keras.layers.BatchNormalization()
    layer.build((None, 5, 5, 3))
    rng = np.random.default_rng(next(_SEEDS))
    for variable in layer.weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    return layer


CASES = {
    "dense": (lambda: keras.layers.Dense(3), (4, 6)),
    "conv1d": (lambda: keras.layers.Conv1D(4, 3), (2, 9, 3)),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3), (2, 5, 5, 3)),
    "depthwise": (lambda: keras.layers.DepthwiseConv2D(3), (2, 5, 5, 3)),
    "separable": (lambda: keras.layers.SeparableConv2D(4, 3), (2, 5, 5, 3)),
    "batchnorm": (_bn, (2, 5, 5, 3)),
    "layernorm": (lambda: keras.layers.LayerNormalization(), (2, 7, 3)),
    "embedding": (lambda: keras.layers.Embedding(12, 4), (3, 5)),
    "custom": (lambda: ScaleShift(), (4, 6)),
}


def _inputs(name, shape):
    rng = np.random.default_rng(0)
    if name == "embedding":
        return rng.integers(0, 12, shape)
    return rng.normal(size=shape).astype("float32")


def _pair(name):
    make, shape = CASES[name]
    x = _inputs(name, shape)
    a, b = make(), make()
    a(x)
    b(x)
    if name == "custom":
        b.set_weights([w + 1.0 for w in b.get_weights()])
    return a, b, x


@pytest.mark.parametrize("name", sorted(CASES))
def test_endpoints_reproduce_the_wrapped_layers(name):
    a, b, x = _pair(name)
    expected_a = np.asarray(a(x))
    expected_b = np.asarray(b(x))
    layer = CurveLayer(a, curve=curves.Bezier(2), end_layer=b)
    np.testing.assert_allclose(layer(x, t=0.0), expected_a, atol=1e-5)
    np.testing.assert_allclose(layer(x, t=1.0), expected_b, atol=1e-5)
    # Interior points start on the straight line, so on a quadratic Bezier
    # curve the weights at t are (1 - t) w_a + t w_b.
    for value, wa, wb in zip(
        layer.weights_at(0.3), a.get_weights(), b.get_weights()
    ):
        np.testing.assert_allclose(value, 0.7 * wa + 0.3 * wb, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_interior_points_are_trainable(name):
    a, b, x = _pair(name)
    num_weights = len(a.weights)
    num_trainable = len(a.trainable_weights)
    layer = CurveLayer(a, curve=curves.Bezier(3), end_layer=b)
    # Two interior points copy every trainable weight of the layer.
    assert len(layer.trainable_weights) == 2 * num_trainable
    assert len(layer.weights) == 4 * num_weights


@pytest.mark.parametrize("name", ["dense", "conv2d", "batchnorm", "custom"])
def test_one_training_step_moves_only_interior_points(name):
    a, b, x = _pair(name)
    layer = CurveLayer(a, end_layer=b)
    x_in = keras.Input(x.shape[1:])
    t_in = keras.Input((1,))
    y = layer(x_in, t=t_in)
    model = keras.Model([x_in, t_in], keras.layers.Flatten()(y))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    frozen = [np.array(v) for v in a.weights]
    end = [np.array(v) for v in layer._points[0][-1:]]
    before = [np.array(v) for v in layer.trainable_weights]
    target = np.ones((len(x), int(np.prod(y.shape[1:]))), "float32")
    model.fit([x, np.full((len(x), 1), 0.5)], target, epochs=1, verbose=0)
    after = [np.array(v) for v in layer.trainable_weights]
    assert any(np.abs(p - q).max() > 1e-6 for p, q in zip(before, after))
    for old, variable in zip(frozen, a.weights):
        np.testing.assert_array_equal(old, variable)
    np.testing.assert_array_equal(end[0], layer._points[0][-1])


def test_config_and_keras_file_round_trip(tmp_path):
    a, b, x = _pair("conv2d")
    x_in = keras.Input(x.shape[1:])
    t_in = keras.Input((1,))
    layer = CurveLayer(a, curve=curves.PolyChain(4), end_layer=b)
    model = keras.Model([x_in, t_in], layer(x_in, t=t_in))
    layer._points[0][1].assign(layer._points[0][1] + 0.5)
    t = np.full((len(x), 1), 0.2, "float32")
    expected = np.asarray(model([x, t]))

    clone = CurveLayer.from_config(layer.get_config())
    assert clone.curve == curves.PolyChain(4)
    assert clone.layer.get_config()["filters"] == 4

    path = tmp_path / "curve.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded([x, t]), expected, atol=1e-6)
    loaded_layer = loaded.layers[-1]
    assert len(loaded_layer.trainable_weights) == len(layer.trainable_weights)


def test_a_batch_must_hold_one_t():
    a, b, x = _pair("dense")
    layer = CurveLayer(a, end_layer=b)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="`t`: a batch .* one t value"
    ):
        layer(x, t=np.linspace(0, 1, len(x))[:, None].astype("float32"))


def test_bad_layers_are_refused_with_the_reason():
    step = IntegerStep()
    step.build((None, 3))
    with pytest.raises(ValueError, match="cannot be made a curve.*int32"):
        CurveLayer(step)
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    other = keras.layers.Dense(5)
    other.build((None, 4))
    with pytest.raises(ValueError, match="end_layer"):
        CurveLayer(dense, end_layer=other)
