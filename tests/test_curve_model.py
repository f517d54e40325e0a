import keras
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge import curve_model, graph


def _resnet():
    return kb.models.resnet((8, 8, 1), 10, depth=8, width=0.5)


def _sequence_classifier():
    inputs = keras.Input((24, 3))
    x = keras.layers.Conv1D(8, 5, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv1D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _nested_with_shared_layers():
    inner_in = keras.Input((6,))
    inner = keras.Model(
        inner_in, keras.layers.Dense(6, activation="relu")(inner_in)
    )
    shared = keras.layers.Dense(6)
    inputs = keras.Input((6,))
    x = shared(inner(shared(inputs)))
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _applications(name):
    def make():
        cls = getattr(keras.applications, name)
        return cls(
            weights=None,
            input_shape=(32, 32, 3),
            classes=5,
            classifier_activation=None,
        )

    return make


MODELS = {
    "resnet": (_resnet, (8, 8, 1)),
    "conv1d": (_sequence_classifier, (24, 3)),
    "nested_shared": (_nested_with_shared_layers, (6,)),
    "resnet50v2": (_applications("ResNet50V2"), (32, 32, 3)),
    "mobilenetv2": (_applications("MobileNetV2"), (32, 32, 3)),
}


def _randomise_batchnorm(model, seed):
    rng = np.random.default_rng(seed)
    for layer in curve_model.batchnorm_layers(model):
        layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
        layer.moving_variance.assign(
            rng.uniform(0.5, 2, layer.moving_variance.shape)
        )


@pytest.mark.large
@pytest.mark.parametrize("name", sorted(MODELS))
def test_curve_model_reproduces_both_endpoints(name):
    make, shape = MODELS[name]
    a, b = make(), make()
    _randomise_batchnorm(a, 0)
    _randomise_batchnorm(b, 1)
    x = np.random.default_rng(2).normal(size=(3, *shape)).astype("float32")
    trainable_before = len(a.trainable_weights)
    curve_model = kb.to_curve_model(a, b)
    for t, endpoint in ((0.0, a), (1.0, b)):
        out = curve_model([x, np.full((3, 1), t, "float32")])
        np.testing.assert_allclose(out, endpoint(x), atol=1e-5)
    # The endpoints' own models are left as they were.
    assert len(a.trainable_weights) == trainable_before
    # Only interior control points are trainable: one copy of each
    # trainable weight, shared layers counted once.
    num_trainable = sum(
        len(layer.trainable_weights) for layer in graph.weighted_layers(a)
    )
    assert len(curve_model.trainable_weights) == num_trainable


def test_point_model_equals_the_curve_model_at_t():
    a, b = _nested_with_shared_layers(), _nested_with_shared_layers()
    curve_model = kb.to_curve_model(a, b)
    for variable in curve_model.trainable_weights:
        variable.assign(variable + 0.1)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    point = kb.point_model(curve_model, 0.3, a)
    expected = curve_model([x, np.full((5, 1), 0.3, "float32")])
    np.testing.assert_allclose(point(x), expected, atol=1e-5)
    assert type(point.layers[1]) is type(a.layers[1])


def test_recalibrated_statistics_equal_the_exact_batch_moments():
    a, b = _resnet(), _resnet()
    curve_model = kb.to_curve_model(a, b)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 8, 8, 1)).astype("float32")
    point = kb.point_model(curve_model, 0.4, a)

    # One batch: every BN layer's statistics are its input's moments.
    kb.recalibrate_batchnorm(point, [x])
    probe = keras.Model(
        point.input,
        [point.get_layer(n).input for n in ("stem_bn", "stage2_block1_bn2")],
    )
    for name, features in zip(("stem_bn", "stage2_block1_bn2"), probe(x)):
        # `probe` runs in inference mode; the deeper layer's input depends
        # on upstream BN layers, which now hold exactly the batch moments,
        # so inference equals training mode on this batch.
        features = np.asarray(features).reshape(-1, features.shape[-1])
        layer = point.get_layer(name)
        np.testing.assert_allclose(
            layer.moving_mean, features.mean(0), atol=1e-4
        )
        np.testing.assert_allclose(
            layer.moving_variance, features.var(0), rtol=1e-3, atol=1e-5
        )

    # Several batches of unequal size: population moments of all the data.
    batches = [x[:16], x[16:32], x[32:]]
    kb.recalibrate_batchnorm(point, batches)
    stem = keras.Model(point.input, point.get_layer("stem_bn").input)
    features = np.asarray(stem(x)).reshape(-1, stem.output.shape[-1])
    layer = point.get_layer("stem_bn")
    np.testing.assert_allclose(layer.moving_mean, features.mean(0), atol=1e-5)
    np.testing.assert_allclose(
        layer.moving_variance, features.var(0), rtol=1e-4
    )
    assert layer.momentum == pytest.approx(0.99)


def test_different_architectures_name_the_first_differing_layer():
    a = _resnet()
    b = kb.models.resnet((8, 8, 1), 10, depth=8, width=1.0)
    with pytest.raises(ValueError, match="stem_conv"):
        kb.to_curve_model(a, b)


def test_subclassed_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="model_a.*functional"):
        kb.to_curve_model(net, net)


def test_point_model_checks_t():
    a, b = _resnet(), _resnet()
    curve_model = kb.to_curve_model(a, b)
    with pytest.raises(ValueError, match="`t` must lie in"):
        kb.point_model(curve_model, 1.5, a)
