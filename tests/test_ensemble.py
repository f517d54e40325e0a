import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb


def _small_backbone(**kwargs):
    return kb.models.resnet((8, 8, 1), 10, depth=8, width=0.5, **kwargs)


def test_default_feature_layer_is_the_stage_before_the_last():
    ens = kb.BridgeEnsemble(_small_backbone())
    assert ens.feature_layer == "stage2"
    mobilenet = keras.applications.MobileNetV2(
        weights=None,
        input_shape=(32, 32, 3),
        classes=4,
        classifier_activation=None,
    )
    ens = kb.BridgeEnsemble(mobilenet)
    # 32x32 input: the last layer at 2x2 before the stride-2 block that
    # leads to the 1x1 stage, and every path runs through it.
    assert ens.feature_layer == "block_13_expand_relu"
    # Squeeze-and-excite gates are pooled to 1x1 on a side branch: they are
    # not a stage, so the split stays at the second resolution (7x7 of
    # 28x28 -> 14 -> 7 -> 4), not at the last layer before pooling.
    ens = kb.BridgeEnsemble(kb.models.mobilenet_v3_style((28, 28, 1), 10))
    feature = ens.backbone.get_layer(ens.feature_layer).output
    assert tuple(feature.shape[1:3]) == (7, 7)


def test_unknown_feature_layer_lists_the_candidates():
    with pytest.raises(ValueError, match="stage9.*stage1.*stage2.*stage3"):
        kb.BridgeEnsemble(_small_backbone(), feature_layer="stage9")


def test_trailing_softmax_is_removed_with_a_warning():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    logits = keras.layers.Dense(3)(hidden)
    as_layer = keras.Model(inputs, keras.layers.Softmax()(logits))
    as_activation = keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax")(hidden)
    )
    as_op = keras.Model(inputs, keras.ops.softmax(logits))
    as_activation_layer = keras.Model(
        inputs, keras.layers.Activation(tf.nn.softmax)(logits)
    )
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    for model in (as_layer, as_activation, as_op, as_activation_layer):
        with pytest.warns(UserWarning, match="softmax"):
            backbone = kb.backbone.prepare_backbone(model)
        probabilities = np.asarray(model(x))
        np.testing.assert_allclose(
            keras.ops.softmax(backbone(x)), probabilities, atol=1e-6
        )


@pytest.mark.parametrize(
    "head",
    [
        lambda h: keras.layers.Dense(3, activation="sigmoid")(h),
        lambda h: keras.ops.sigmoid(keras.layers.Dense(3)(h)),
        lambda h: keras.layers.Activation("hard_sigmoid")(
            keras.layers.Dense(3)(h)
        ),
    ],
    ids=["dense_sigmoid", "ops_sigmoid", "activation_layer"],
)
def test_a_sigmoid_output_is_refused(head):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, head(keras.layers.Dense(8)(inputs)))
    with pytest.raises(ValueError, match="sigmoid activation") as info:
        kb.BridgeEnsemble(model)
    assert "End the backbone in logits" in str(info.value)


def test_a_backbone_with_one_class_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match="at least 2 classes") as info:
        kb.BridgeEnsemble(model)
    assert "Dense(2)" in str(info.value)


def test_bad_backbones_and_modes_are_refused():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="`backbone` must be a functional"):
        kb.BridgeEnsemble(Net())
    with pytest.raises(ValueError, match="num_modes"):
        kb.BridgeEnsemble(_small_backbone(), num_modes=0)
    ens = kb.BridgeEnsemble(_small_backbone())
    wider = kb.models.resnet((8, 8, 1), 10, depth=8, width=1.0)
    with pytest.raises(ValueError, match="model 2 differs.*'stem_conv'"):
        ens.set_modes([_small_backbone(), wider])
    with pytest.raises(ValueError, match="at least 2 modes"):
        ens.fit_curves(np.zeros((1, 8, 8, 1)))


class _StaleBatchNorm(keras.callbacks.Callback):
    """Shifts every BatchNorm moving mean before validation: the moving
    statistics no longer match the weights, as after too few steps."""

    def on_test_begin(self, logs=None):
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(layer.moving_mean + 50.0)


@pytest.mark.large
def test_fit_modes_leaves_no_stale_batchnorm_statistics(digits):
    ens = kb.BridgeEnsemble(_small_backbone(), num_modes=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "far below" warning
        (history,) = ens.fit_modes(
            digits.train, epochs=3, validation_data=digits.validation,
            callbacks=[_StaleBatchNorm()], verbose=0,
        )  # fmt: skip
    # During training the statistics were broken (validation at chance,
    # 0.10 for seeds 0-2)...
    assert history.history["val_accuracy"][-1] < 0.3
    x, y = kb.data.to_numpy(digits.validation)
    accuracy = float(np.mean(ens.modes[0].predict(x, verbose=0).argmax(1) == y))
    # ... and fit_modes recomputed them: the mode is what it learnt (0.87
    # to 0.89 for seeds 0-2 after 3 epochs; the stale statistics give
    # chance).
    assert accuracy > 0.7
    assert ens.mode_checks[0] < kb.mode_training.MODE_GAP_TOLERANCE


def test_mode_check_reports_only_large_gaps():
    def history(train, val):
        h = keras.callbacks.History()
        h.history = {"accuracy": [0.5, train], "val_accuracy": [0.5, val]}
        return h

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaps = kb.mode_training.mode_check(
            [history(0.99, 0.95), history(0.9, 0.75), keras.callbacks.History()]
        )
    assert gaps == {0: pytest.approx(0.04), 1: pytest.approx(0.15)}
    with pytest.warns(UserWarning, match=r"Mode 1's .* 0\.2800 .* 0\.9300"):
        kb.mode_training.mode_check([history(0.9, 0.8), history(0.93, 0.28)])


def test_set_modes_and_curve_pairs():
    ens = kb.BridgeEnsemble(_small_backbone())
    ens.set_modes([_small_backbone() for _ in range(3)])
    assert ens.num_modes == 3
    assert ens._pairs(None) == [(0, 1), (0, 2)]
    assert ens._pairs("all") == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="pairs"):
        ens._pairs([(0, 3)])
    with pytest.raises(ValueError, match="`pair` must name a fitted curve"):
        ens.point_model((0, 1))


@pytest.mark.large
def test_curve_training_removes_the_barrier_on_digits(trained_ensemble, digits):
    ens, line = trained_ensemble
    x, y = kb.data.to_numpy(digits.test)
    endpoint_acc = []
    for mode in ens.modes:
        probabilities = keras.ops.softmax(mode.predict(x, verbose=0))
        endpoint_acc.append(kb.metrics.accuracy(probabilities, y))
    # Bounds that hold for any seed, with margin: the values below are
    # those of seeds 0, 1 and 2, measured once
    # (benchmarks/session_ensemble_bounds.py).
    # Each mode: 0.94-0.98; an untrained one is at chance (0.1).
    assert min(endpoint_acc) > 0.9

    # The straight line's midpoint is worse than both of its ends: its NLL
    # rises by 2.0-2.2 (near chance level: log 10 = 2.3).
    assert line.kind == "line"
    assert line.nll[1] > max(line.nll[0], line.nll[2]) + 0.5

    # The trained curve's midpoint is as accurate as its ends: -0.007 to
    # +0.022 from their mean. An untrained curve is the straight line,
    # whose midpoint is at chance NLL.
    midpoint = ens.point_model((0, 1), 0.5)
    probabilities = keras.ops.softmax(midpoint.predict(x, verbose=0))
    mid_acc = kb.metrics.accuracy(probabilities, y)
    assert mid_acc >= np.mean(endpoint_acc) - 0.03
    # On validation (-0.028 to 0.0), fit_curves did not warn.
    assert (
        ens.curve_checks[(0, 1)]["gap"] < kb.curve_training.MIDPOINT_TOLERANCE
    )

    # The curve's NLL barrier is 0.007-0.024, the line's 2.0-2.2.
    profile = ens.curve_profile(digits.test, num_points=3)
    assert profile.kind == "curve"
    assert profile.barrier < min(0.1, line.barrier / 10)
    assert "NLL barrier" in str(profile)


@pytest.mark.large
def test_frozen_pretrained_layers_are_kept_in_every_mode(make_mini_backbone):
    backbone = make_mini_backbone()
    stem = backbone.get_layer("stem_conv")
    pretrained = [np.full(w.shape, 0.05, "float32") for w in stem.weights]
    stem.set_weights(pretrained)
    stem.trainable = False
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype="float32")
    y = rng.integers(0, 10, 32)
    ens = kb.BridgeEnsemble(
        backbone, feature_layer="features", num_modes=2, seed=0
    )
    ens.fit_modes((x, y), epochs=1, verbose=0)
    for mode in ens.modes:
        layer = mode.get_layer("stem_conv")
        assert not layer.trainable
        for weight, expected in zip(layer.get_weights(), pretrained):
            np.testing.assert_array_equal(weight, expected)
    # The layers that train start afresh in each mode.
    kernels = [m.layers[-1].kernel.numpy() for m in ens.modes]  # Dense
    assert not np.allclose(kernels[0], kernels[1])


def test_a_backbone_with_nothing_to_train_is_refused():
    backbone = _small_backbone()
    backbone.trainable = False
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    x = np.zeros((4, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="no trainable weights"):
        ens.fit_modes((x, np.zeros(4, "int32")), epochs=1, verbose=0)
    assert ens.modes == []


@pytest.mark.large
def test_modes_get_exact_batchnorm_statistics(make_mini_backbone):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    ens = kb.BridgeEnsemble(
        make_mini_backbone(), feature_layer="features", num_modes=1, seed=0
    )
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    ens.fit_modes(data, epochs=1, verbose=0)
    mode = ens.modes[0]
    exact = kb.recalibrate_batchnorm(kb.training.copy_model(mode, "c"), data)
    for layer in kb.curve_model.batchnorm_layers(mode):
        twin = exact.get_layer(layer.name)
        np.testing.assert_allclose(
            layer.moving_mean, twin.moving_mean, rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            layer.moving_variance, twin.moving_variance, rtol=1e-4, atol=1e-5
        )


@pytest.mark.large
def test_fit_stops_before_the_curves_on_broken_modes(digits):
    x, y = kb.data.to_numpy(digits.validation)
    wrong = (y + 1) % 10  # labelled unlike the training data
    ens = kb.BridgeEnsemble(_small_backbone(), num_modes=1, seed=0)
    with pytest.warns(UserWarning, match="far below"):
        with pytest.raises(RuntimeError, match="Stopped after `fit_modes`"):
            ens.fit(
                digits.train,
                validation_data=(x, wrong),
                modes={"epochs": 2},
                verbose=0,
            )
    assert len(ens.modes) == 1 and ens.curves == {}
    assert ens.mode_checks[0] > kb.mode_training.MODE_GAP_TOLERANCE


def test_a_backbone_with_a_python_lambda_layer_is_refused_at_once():
    inputs = keras.Input((8, 8, 1))
    scaled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(scaled)
    )
    model = keras.Model(inputs, keras.layers.Dense(10)(pooled))
    with pytest.raises(ValueError, match="`Lambda` layer 'double'") as info:
        kb.BridgeEnsemble(model)
    assert "register_keras_serializable" in str(info.value)
