"""Keras' layer checks (as `run_layer_test` runs them) for every layer of
`keras_bridge.layers`: config and serialisation round trips, a `.keras`
file, one training step and the `mixed_float16` policy."""

import dataclasses
import json
from collections.abc import Callable

import keras
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge.layers import (
    BridgeHead,
    CurveLayer,
    EnsembleOutputs,
    TailHead,
)

BATCH = 3


def _normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@dataclasses.dataclass
class Case:
    """How to build, call and train one layer.

    ``make()`` returns a new layer; ``wire(layer, inputs)`` calls it on the
    symbolic (or concrete) ``inputs``; ``inputs`` are the arrays a batch
    holds; ``labels`` and ``loss`` train the output ``train_key`` (the
    whole output when None)."""

    make: Callable
    wire: Callable
    inputs: list
    output_shape: tuple
    num_trainable: int
    num_non_trainable: int
    labels: np.ndarray
    loss: keras.losses.Loss
    train_key: str | None = None
    compute_dtype: str = "float16"


def _sparse_labels(num_classes):
    return np.arange(BATCH) % num_classes


def _logits_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _bridge_head():
    # Type II, conditioned, correcting the modes' logits: every input.
    return Case(
        make=lambda: BridgeHead(
            4, width=6, depth=1, conditioned=True, base_logits=True
        ),
        wire=lambda head, i: head([i[0], i[1]], t=i[2], logits=[i[3], i[4]]),
        inputs=[
            _normal((BATCH, 4, 4, 3), 1),
            _normal((BATCH, 4, 4, 2), 2),
            np.full((BATCH, 1), 0.3, "float32"),
            _normal((BATCH, 4), 3),
            _normal((BATCH, 4), 4),
        ],
        output_shape=(BATCH, 4),
        # Convolutions without bias, BatchNormalization (gamma, beta;
        # moving mean, variance) after each, then the dense classifier.
        num_trainable=1 + 2 + 2 * (1 + 2) + 2,
        num_non_trainable=2 + 2 * 2,
        labels=_sparse_labels(4),
        loss=_logits_loss(),
    )


def _tail_head():
    def make():
        backbone = kb.models.resnet((8, 8, 1), 5, depth=8, width=0.25)
        return TailHead(5, kb.backbone.slim_tail(backbone, "stage2", 16))

    return Case(
        make=make,
        wire=lambda head, i: head(i[0]),
        inputs=[_normal((BATCH, 4, 4, 16), 5)],
        output_shape=(BATCH, 5),
        # stage3 at half width: two 3x3 convolutions and a 1x1 shortcut,
        # three BatchNormalizations, the classifier.
        num_trainable=3 + 3 * 2 + 2,
        num_non_trainable=3 * 2,
        labels=_sparse_labels(5),
        loss=_logits_loss(),
    )


def _curve_layer():
    def make():
        a, b = keras.layers.Dense(3), keras.layers.Dense(3)
        a.build((None, 6))
        b.build((None, 6))
        b.set_weights([_normal(w.shape, 7) for w in b.weights])
        return CurveLayer(a, curve="bezier", end_layer=b)

    return Case(
        make=make,
        wire=lambda layer, i: layer(i[0], t=i[1]),
        inputs=[_normal((BATCH, 6), 6), np.full((BATCH, 1), 0.4, "float32")],
        output_shape=(BATCH, 3),
        # Kernel and bias at three control points; only the middle trains.
        num_trainable=2,
        num_non_trainable=4,
        labels=_normal((BATCH, 3), 8),
        loss=keras.losses.MeanSquaredError(),
    )


def _ensemble_outputs():
    # Two dense "members" in front: the layer has no weights of its own,
    # so training checks that the gradient flows through it.
    def wire(layer, i):
        members = [keras.layers.Dense(4, name=f"member{k}") for k in (0, 1)]
        return layer([member(i[0]) for member in members])

    return Case(
        make=lambda: EnsembleOutputs(temperature=1.5),
        wire=wire,
        inputs=[_normal((BATCH, 6), 9)],
        output_shape=(BATCH, 4),
        num_trainable=0,
        num_non_trainable=0,
        labels=_sparse_labels(4),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        train_key="probabilities",
        # Serving outputs: float32 under any policy, as a last softmax.
        compute_dtype="float32",
    )


CASES = {
    "bridge_head": _bridge_head,
    "tail_head": _tail_head,
    "curve_layer": _curve_layer,
    "ensemble_outputs": _ensemble_outputs,
}


def test_every_layer_is_checked():
    checked = {type(CASES[name]().make()).__name__ for name in CASES}
    public = {
        name
        for name in kb.layers.__all__
        if not getattr(kb.layers, name).__name__.startswith("Base")
    }
    assert checked == public


def _model(case, layer):
    inputs = [keras.Input(x.shape[1:]) for x in case.inputs]
    return keras.Model(inputs, case.wire(layer, inputs))


def _layer_of(model, layer_type):
    (layer,) = [x for x in model.layers if isinstance(x, layer_type)]
    return layer


def _assert_same_outputs(actual, expected, atol=1e-5):
    actual, expected = keras.tree.flatten(actual), keras.tree.flatten(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol)


def _as_json(config):
    """``config`` as a `.keras` file stores it (tuples become lists)."""
    return json.loads(json.dumps(config))


def _main_output(case, outputs):
    return outputs if case.train_key is None else outputs[case.train_key]


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]()


def test_shapes_and_weight_counts(case):
    layer = case.make()
    model = _model(case, layer)
    symbolic = _main_output(case, model.output)
    eager = _main_output(case, case.wire(layer, case.inputs))
    assert tuple(symbolic.shape) == (None, *case.output_shape[1:])
    assert tuple(eager.shape) == case.output_shape
    assert len(layer.trainable_weights) == case.num_trainable
    assert len(layer.non_trainable_weights) == case.num_non_trainable


@pytest.mark.parametrize("how", ["config", "serialize"])
def test_config_round_trip_gives_equal_outputs(case, how):
    layer = case.make()
    model = _model(case, layer)
    expected = model(case.inputs)
    if how == "config":
        clone = type(layer).from_config(layer.get_config())
    else:
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(layer)
        )
    assert type(clone) is type(layer)
    twin = _model(case, clone)
    assert _as_json(clone.get_config()) == _as_json(layer.get_config())
    twin.set_weights(model.get_weights())
    _assert_same_outputs(twin(case.inputs), expected)


def test_keras_file_round_trip_gives_equal_outputs(case, tmp_path):
    layer = case.make()
    model = _model(case, layer)
    # Weights away from their initial values, so a loaded model that
    # re-initialised them would differ.
    model.set_weights(
        [w + _normal(w.shape, 10) * 0.1 for w in model.get_weights()]
    )
    expected = model(case.inputs)
    model.save(tmp_path / "layer.keras")
    loaded = keras.saving.load_model(tmp_path / "layer.keras")
    restored = _layer_of(loaded, type(layer))
    assert _as_json(restored.get_config()) == _as_json(layer.get_config())
    _assert_same_outputs(loaded(case.inputs), expected)


def test_a_training_step_changes_the_trainable_weights(case):
    model = _model(case, case.make())
    trained = keras.Model(model.inputs, _main_output(case, model.output))
    trained.compile(optimizer=keras.optimizers.SGD(0.1), loss=case.loss)
    weights = trained.trainable_weights
    frozen = trained.non_trainable_weights
    assert weights
    before = [np.array(w) for w in weights]
    frozen_before = [np.array(w) for w in frozen if "moving" not in w.path]
    logs = trained.fit(
        case.inputs, case.labels, batch_size=BATCH, epochs=1, verbose=0
    ).history
    assert np.isfinite(logs["loss"][0])
    for weight, old in zip(weights, before):
        assert np.abs(np.array(weight) - old).max() > 0, weight.path
    # Frozen weights (the curve's endpoints) stay where they were.
    frozen_after = [np.array(w) for w in frozen if "moving" not in w.path]
    _assert_same_outputs(frozen_after, frozen_before, atol=0)


def test_mixed_precision_computes_in_float16_on_float32_weights(case):
    reference = _model(case, case.make())
    expected = _main_output(case, reference(case.inputs))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = case.make()
        model = _model(case, layer)
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(reference.get_weights())
    outputs = model(case.inputs)
    assert layer.compute_dtype == case.compute_dtype
    assert {w.dtype for w in layer.weights} <= {"float32"}
    assert _main_output(case, outputs).dtype == case.compute_dtype
    for output in keras.tree.flatten(outputs):
        assert np.all(np.isfinite(np.asarray(output, "float32")))
    # The float32 result, to float16's precision.
    np.testing.assert_allclose(
        np.asarray(_main_output(case, outputs), "float32"),
        expected,
        atol=2e-2,
    )


def test_ensemble_outputs_of_confident_float16_members_are_finite():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = EnsembleOutputs()
    finally:
        keras.config.set_dtype_policy(previous)
    # float16 logits of a member sure of class 0: softmax gives exact 0s.
    sure = keras.ops.convert_to_tensor([[30.0, 0.0, 0.0]], "float16")
    outputs = layer([sure, keras.ops.zeros((1, 3), "float16")])
    for name, output in outputs.items():
        assert np.all(np.isfinite(np.asarray(output))), name
    # Entropy of the mean (2/3, 1/6, 1/6) less the members' mean entropy
    # (0 and log 3).
    mean = np.array([2 / 3, 1 / 6, 1 / 6])
    expected = -(mean * np.log(mean)).sum() - np.log(3) / 2
    assert float(outputs["mutual_information"][0]) == pytest.approx(
        expected, abs=1e-4
    )
