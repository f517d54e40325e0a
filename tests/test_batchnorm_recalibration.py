"""BatchNorm recalibration shares one traced function per architecture."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge import curve_model


def _resnet(seed):
    keras.utils.set_random_seed(seed)
    return kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)


def _exact_moments(model, x, name):
    """The moments of ``name``'s input over ``x``, with every BN layer
    before it already holding its exact statistics (so inference mode
    equals training mode on ``x``)."""
    probe = keras.Model(model.input, model.get_layer(name).input)
    features = np.asarray(probe(x)).reshape(-1, probe.output.shape[-1])
    return features.mean(0), features.var(0)


def test_models_of_one_architecture_share_the_traced_function():
    x = np.random.default_rng(0).normal(size=(48, 8, 8, 1)).astype("float32")
    a, b = _resnet(0), _resnet(1)
    kb.recalibrate_batchnorm(a, [x[:16], x[16:]])
    a_stats = [np.array(w) for w in a.get_layer("stem_bn").get_weights()]
    (runner, function) = next(reversed(curve_model._MOMENT_FUNCTIONS.values()))
    # The function runs a private copy of the model, not the user's.
    assert runner is not a and runner.count_params() == a.count_params()
    traces = function.experimental_get_tracing_count()

    kb.recalibrate_batchnorm(b, [x])
    # b reused a's function: nothing was traced again ...
    assert function.experimental_get_tracing_count() == traces
    # ... yet b got its own exact statistics, not a's (one batch: each
    # layer's are its input's moments).
    for name in ("stem_bn", "stage2_block1_bn2"):
        mean, variance = _exact_moments(b, x, name)
        layer = b.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean, mean, atol=1e-4)
        np.testing.assert_allclose(
            layer.moving_variance, variance, rtol=1e-3, atol=1e-5
        )
    assert not np.allclose(b.get_layer("stem_bn").moving_mean, a_stats[2])
    # a is unchanged by b's recalibration, and neither model's momentum
    # was touched.
    for before, after in zip(a_stats, a.get_layer("stem_bn").get_weights()):
        np.testing.assert_array_equal(before, after)
    for model in (a, b):
        assert all(
            layer.momentum == pytest.approx(0.99)
            for layer in curve_model.batchnorm_layers(model)
        )


def test_another_architecture_gets_its_own_function():
    x = np.random.default_rng(1).normal(size=(32, 8, 8, 1)).astype("float32")
    small = _resnet(0)
    kb.recalibrate_batchnorm(small, [x])
    wide = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.5)
    kb.recalibrate_batchnorm(wide, [x])
    (runner, _) = next(reversed(curve_model._MOMENT_FUNCTIONS.values()))
    assert runner.count_params() == wide.count_params() != small.count_params()
    mean, variance = _exact_moments(wide, x, "stem_bn")
    np.testing.assert_allclose(
        wide.get_layer("stem_bn").moving_mean, mean, atol=1e-4
    )


class _Scale(keras.layers.Layer):
    """A layer without a config: Keras cannot copy a model that holds it."""

    def __init__(self, factor):
        super().__init__(name="scale")
        self.factor = factor

    def call(self, x):
        return x * self.factor


def _uncopyable():
    """A functional model that cannot be copied from its config: it is
    recalibrated on itself, with its momentum set back."""
    inputs = keras.Input((3,))
    features = _Scale(2.0)(keras.layers.Dense(4, name="dense")(inputs))
    outputs = keras.layers.BatchNormalization(name="bn")(features)
    return keras.Model(inputs, outputs)


def test_a_model_that_cannot_be_copied_gets_exact_statistics():
    x = np.random.default_rng(2).normal(size=(40, 3)).astype("float32")
    model = _uncopyable()
    kb.recalibrate_batchnorm(model, [x[:24], x[24:]])
    features = 2.0 * np.asarray(model.get_layer("dense")(x))
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean, features.mean(0), atol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance, features.var(0), rtol=1e-4, atol=1e-5
    )
    assert bn.momentum == pytest.approx(0.99)


@pytest.mark.parametrize("build", [_resnet, lambda seed: _uncopyable()])
def test_non_finite_data_changes_no_statistic(build):
    model = build(0)
    x = np.ones((8, *model.input.shape[1:]), "float32")
    before = [np.array(v) for v in model.non_trainable_variables]
    bad = x.copy()
    bad[0] = np.nan
    with pytest.raises(FloatingPointError, match="not finite"):
        kb.recalibrate_batchnorm(model, [x, bad])
    for value, variable in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(value, variable)
    momenta = [layer.momentum for layer in curve_model.batchnorm_layers(model)]
    assert momenta and all(m == pytest.approx(0.99) for m in momenta)


def test_each_distribution_strategy_gets_its_own_copy(monkeypatch):
    monkeypatch.setattr(
        curve_model, "_MOMENT_FUNCTIONS", collections.OrderedDict()
    )
    x = np.random.default_rng(3).normal(size=(16, 8, 8, 1)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        inside = _resnet(0)
        kb.recalibrate_batchnorm(inside, [x])
    outside = _resnet(1)
    kb.recalibrate_batchnorm(outside, [x])
    # Two copies: one made under the strategy, one without.
    assert len(curve_model._MOMENT_FUNCTIONS) == 2
    mean, _ = _exact_moments(outside, x, "stem_bn")
    np.testing.assert_allclose(
        outside.get_layer("stem_bn").moving_mean, mean, atol=1e-4
    )
