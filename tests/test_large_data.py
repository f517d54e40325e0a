"""Data that scale: the in-pipeline checks of large data refuse a bad
batch naming the argument and the batch, and `evaluate` / `calibrate`
stream their data (only per-example outputs are kept) with the results
of the old in-memory computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge import data_checks
from keras_bridge import metrics as metrics_lib

NUM_BATCHES = 12
BAD_BATCH = 7


@pytest.fixture
def large(monkeypatch):
    """Data of more than `FULL_CHECK_MAX_BATCHES` batches count as large:
    the threshold is lowered so that a dozen tiny batches are large."""
    monkeypatch.setattr(data_checks, "FULL_CHECK_MAX_BATCHES", NUM_BATCHES - 2)
    yield
    data_checks.set_data_checks("auto")


def _dataset(bad=None, width=None):
    """``NUM_BATCHES`` batches of 4 inputs (8, 8, 1) and one-hot labels
    (of ``width`` columns, default 10), of known size; batch
    ``BAD_BATCH`` made bad by ``bad(x, y)``."""
    width = width or 10
    rng = np.random.default_rng(0)

    def batches():
        for i in range(1, NUM_BATCHES + 1):
            x = rng.random((4, 8, 8, 1), dtype="float32")
            y = np.eye(10, dtype="float32")[rng.integers(0, 10, 4)]
            if i == BAD_BATCH and bad is not None:
                x, y = bad(x, y)
            yield x, y

    data = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, 8, 8, 1), "float32"),
            tf.TensorSpec((None, None), "float32"),
        ),
    )
    return data.apply(tf.data.experimental.assert_cardinality(NUM_BATCHES))


def _nan(x, y):
    x[2, 3, 3, 0] = np.nan
    return x, y


def _wide(x, y):
    return x, np.concatenate([y, np.zeros((4, 2), "float32")], axis=1)


def _smoothed(x, y):
    return x, y * 0.9 + 0.01


BAD = {
    "nan": (_nan, "non-finite inputs"),
    "label width": (_wide, "labels of another width"),
    "not one-hot": (_smoothed, "not one-hot"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_large_data_are_checked_in_the_pipeline(large, kind):
    bad, message = BAD[kind]
    data, steps = data_checks.checked(
        _dataset(bad), "validation_data", (8, 8, 1), 10, "fit_modes"
    )
    assert steps == NUM_BATCHES  # no pass was needed to count
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        for _ in data:
            pass
    assert "`validation_data`" in error.value.message
    assert f"batch {BAD_BATCH}" in error.value.message
    assert message in error.value.message


@pytest.mark.parametrize("kind", sorted(BAD))
def test_the_full_check_refuses_the_same_batches_before_anything_runs(
    large, kind
):
    bad, message = BAD[kind]
    data_checks.set_data_checks("full")
    kind_of_error = FloatingPointError if kind == "nan" else ValueError
    with pytest.raises(kind_of_error, match=f"batch {BAD_BATCH}") as error:
        data_checks.checked(_dataset(bad), "data", (8, 8, 1), 10, "fit_modes")
    assert "`data`" in str(error.value) and message in str(error.value)


@pytest.mark.large
def test_a_stage_on_large_data_stops_at_the_bad_batch_and_keeps_nothing(
    large, make_mini_backbone
):
    ens = kb.BridgeEnsemble(
        make_mini_backbone(), feature_layer="features", num_modes=1, seed=0
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch 7"):
        ens.fit_modes(_dataset(_nan), epochs=1, verbose=0)
    assert ens.modes == []


def test_the_first_batch_of_large_data_is_checked_at_once(large):
    """A bad first batch (the usual mistake: the whole set is bad) gives
    today's error before anything reads the pipeline."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 4 * NUM_BATCHES)  # labels 10 and 11 too
    x = rng.random((4 * NUM_BATCHES, 8, 8, 1), dtype="float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match=r"labels in \[0, 10\).*batch 1"):
        data_checks.checked(data, "data", (8, 8, 1), 10, "fit_modes")


def test_data_checks_accept_only_their_modes():
    with pytest.raises(ValueError, match="`mode` must be one of"):
        data_checks.set_data_checks("fast")
    assert data_checks.data_checks() == "auto"


@pytest.fixture
def two_modes(make_mini_backbone):
    backbone = make_mini_backbone()
    ens = kb.BridgeEnsemble(backbone, feature_layer="features", seed=0)
    keras.utils.set_random_seed(1)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    return ens


def _labelled(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), dtype="float32")
    return x, rng.integers(0, 10, n)


@pytest.mark.large
def test_streamed_evaluate_equals_the_in_memory_scores(two_modes):
    (x, y), (x_val, y_val) = _labelled(90, 0), _labelled(70, 1)
    report = two_modes.evaluate(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(7),
        calibration_data=tf.data.Dataset.from_tensor_slices(
            (x_val, y_val)
        ).batch(11),
    )
    # The old computation: whole arrays through the inference model.
    model = two_modes.inference_model(temperature=1.0)
    members = model.predict(x, verbose=0)["member_probabilities"]
    val = model.predict(x_val, verbose=0)["member_probabilities"]
    for name, columns in (("mode 0", [0]), ("mode 1", [1]), ("DE-2", [0, 1])):
        probs = members[:, columns].mean(axis=1)
        t = metrics_lib.fit_temperature(val[:, columns].mean(axis=1), y_val)
        row = report.row(name)
        np.testing.assert_allclose(
            [row["accuracy"], row["nll"], row["temperature"], row["cnll"]],
            [
                metrics_lib.accuracy(probs, y),
                metrics_lib.nll(probs, y),
                t,
                metrics_lib.nll(metrics_lib.temperature_scale(probs, t), y),
            ],
            rtol=1e-6,
            atol=1e-6,
        )


def test_calibrate_streams_with_the_in_memory_temperature(two_modes):
    x, y = _labelled(60, 2)
    expected = metrics_lib.fit_temperature(
        two_modes.inference_model(temperature=1.0).predict(x, verbose=0)[
            "probabilities"
        ],
        y,
    )
    with pytest.warns(UserWarning, match="fewer than"):
        found = two_modes.calibrate(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(9)
        )
    assert found == pytest.approx(expected, rel=1e-6, abs=1e-6)
