import numpy as np
import pytest
import tensorflow as tf

from keras_bridge import data_checks


def _x(n, shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32")


def _collect(data):
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in data])
    return list(xs), list(ys)


def test_one_hot_labels_become_class_ids():
    ids = np.array([2, 0, 1, 1, 2, 0, 0])
    one_hot = np.eye(3, dtype="float32")[ids]
    data = tf.data.Dataset.from_tensor_slices((_x(7), one_hot)).batch(3)
    _, ys = _collect(data_checks.dataset(data, "data", (4,), 3))
    assert [len(y) for y in ys] == [3, 3, 1]
    assert all(y.dtype == np.int32 and y.ndim == 1 for y in ys)
    np.testing.assert_array_equal(np.concatenate(ys), one_hot.argmax(axis=1))


def test_column_labels_become_flat_ids():
    ids = np.array([[1], [0], [2], [1]], dtype="int64")
    _, ys = _collect(data_checks.dataset((_x(4), ids), "data", (4,), 3))
    assert len(ys) == 1
    assert ys[0].shape == (4,) and ys[0].dtype == np.int32
    np.testing.assert_array_equal(ys[0], [1, 0, 2, 1])


def test_float_class_ids_become_integers():
    labels = np.array([2.0, 0.0, 1.0], dtype="float32")
    _, ys = _collect(data_checks.dataset((_x(3), labels), "data", (4,), 3))
    assert ys[0].dtype == np.int32
    np.testing.assert_array_equal(ys[0], [2, 0, 1])


def test_numpy_arrays_are_batched_like_fit():
    n = 2 * data_checks.DEFAULT_BATCH_SIZE + 6
    x, y = _x(n, (3, 3, 1)), np.arange(n) % 10
    data = data_checks.dataset((x, y), "data", (3, 3, 1), 10)
    xs, ys = _collect(data)
    size = data_checks.DEFAULT_BATCH_SIZE
    assert [len(batch) for batch in xs] == [size, size, 6]
    np.testing.assert_array_equal(np.concatenate(xs), x)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    assert data_checks.scan(data, "data", (3, 3, 1), 10, "Training") == 3


def test_inputs_only():
    x = _x(40)
    data = data_checks.dataset(x, "x", (4,), 3, needs_labels=False)
    batches = [np.asarray(batch) for batch in data]
    assert [len(batch) for batch in batches] == [32, 8]
    np.testing.assert_array_equal(np.concatenate(batches), x)
    assert data_checks.scan(data, "x", (4,), 3, "Prediction") == 2
    with pytest.raises(ValueError, match="needs labels"):
        data_checks.dataset(x, "x", (4,), 3)


def test_scan_counts_batches_and_checks_values():
    x, y = _x(10), np.arange(10) % 3
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    assert data_checks.scan(data, "data", (4,), 3, "Training") == 3
    with pytest.raises(ValueError, match=r"label 3 in batch 1"):
        data_checks.scan(
            data_checks.dataset((x, y + 1), "data", (4,), 3),
            "data",
            (4,),
            3,
            "Training",
        )
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(FloatingPointError, match="batch 2"):
        data_checks.scan(
            tf.data.Dataset.from_tensor_slices((bad, y)).batch(4),
            "data",
            (4,),
            3,
            "Training",
        )


def test_dataset_refuses_bad_structure():
    x, y = _x(8), np.zeros(8, "int64")
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="not batched"):
        data_checks.dataset(unbatched, "data", (4,), 3)
    with pytest.raises(ValueError, match="infinite"):
        data_checks.dataset(unbatched.batch(4).repeat(), "data", (4,), 3)
    with pytest.raises(ValueError, match=r"shape \(batch, 5\)"):
        data_checks.dataset(unbatched.batch(4), "data", (5,), 3)
    with pytest.raises(ValueError, match="as many labels"):
        data_checks.dataset((x, y[:5]), "data", (4,), 3)
    with pytest.raises(ValueError, match=r"\(batch, 3\) \(one-hot\)"):
        data_checks.dataset((x, np.zeros((8, 4))), "data", (4,), 3)


def test_scan_checks_each_batch_shape_and_fractional_labels():
    def batches():
        yield np.zeros((2, 4), "float32"), np.zeros(2, "int32")
        yield np.zeros((2, 5), "float32"), np.zeros(2, "int32")

    data = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, None), "float32"),
            tf.TensorSpec((None,), "int32"),
        ),
    )
    with pytest.raises(ValueError, match=r"batch 2 has shape \(2, 5\)"):
        data_checks.checked(data, "data", (4,), 3, "Training")
    fractional = (_x(4), np.array([0.0, 1.0, 1.7, 2.0]))
    with pytest.raises(ValueError, match="batch 1 holds a fractional label"):
        data_checks.checked(fractional, "data", (4,), 3, "Training")
    whole = (_x(4), np.array([0.0, 1.0, 2.0, 2.0]))
    checked, _ = data_checks.checked(whole, "data", (4,), 3, "Training")
    np.testing.assert_array_equal(_collect(checked)[1][0], [0, 1, 2, 2])


def test_check_x_returns_a_good_array_unchanged():
    x = _x(2, (8, 8, 1))
    assert data_checks.check_x(x, (8, 8, 1)) is x
    assert data_checks.check_x(x, (None, None, 1)) is x
    np.testing.assert_array_equal(
        data_checks.check_x(tf.constant(x), (8, 8, 1)), x
    )


def test_check_x_refuses_bad_inputs():
    x = _x(2, (8, 8, 1))
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8, 3\)"):
        data_checks.check_x(x, (8, 8, 3))
    with pytest.raises(ValueError, match="NumPy array"):
        data_checks.check_x(x.tolist(), (8, 8, 1))
    with pytest.raises(ValueError, match="at least one input"):
        data_checks.check_x(x[:0], (8, 8, 1))


def test_one_hot_labels_of_unknown_width_become_ids():
    one_hot = np.eye(3, dtype="float32")[[2, 0, 1, 1]]
    x = np.zeros((4, 4), "float32")
    data = tf.data.Dataset.from_generator(
        lambda: iter([(x, one_hot)]),
        output_signature=(
            tf.TensorSpec((None, 4)),
            tf.TensorSpec((None, None)),
        ),
    )
    checked = data_checks.dataset(data, "data", (4,), 3)
    np.testing.assert_array_equal(next(iter(checked))[1], [2, 0, 1, 1])


@pytest.mark.parametrize(
    "row",
    [[0.0, 0.0, 0.0], [0.9, 0.05, 0.05], [1.0, 1.0, 0.0]],
    ids=["all_zero", "label_smoothing", "multi_hot"],
)
@pytest.mark.parametrize("width", [3, None], ids=["static", "unknown_width"])
def test_rows_that_are_not_one_hot_are_refused_with_their_batch(row, width):
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2]]
    labels[4] = row  # the second batch of 3
    data = tf.data.Dataset.from_tensor_slices((_x(6), labels)).batch(3)
    if width is None:
        data = tf.data.Dataset.from_generator(
            lambda: iter(zip(_x(6).reshape(2, 3, 4), labels.reshape(2, 3, 3))),
            output_signature=(
                tf.TensorSpec((None, 4), tf.float32),
                tf.TensorSpec((None, None), tf.float32),
            ),
        )
    with pytest.raises(ValueError, match="batch 2 holds a row that is not"):
        data_checks.checked(data, "data", (4,), 3, "Training")


@pytest.mark.parametrize(
    "data, part",
    [
        ((np.full((4, 4), "a"), np.zeros(4, "int32")), "inputs have dtype str"),
        ((_x(4), np.array(["cat", "dog", "cat", "dog"])), "labels have dtype"),
        ((_x(4).astype(object), np.zeros(4, "int32")), "dtype object"),
    ],
    ids=["string_inputs", "string_labels", "object_inputs"],
)
def test_non_numeric_arrays_are_refused_naming_the_argument(data, part):
    with pytest.raises(ValueError, match="`data` must hold numbers") as info:
        data_checks.checked(data, "data", (4,), 3, "Training")
    assert part in str(info.value)


def test_string_dataset_is_refused_naming_the_argument():
    data = tf.data.Dataset.from_tensor_slices(
        (np.full((4, 4), "a"), np.zeros(4, "int32"))
    ).batch(2)
    with pytest.raises(ValueError, match="`validation_data` must hold numbers"):
        data_checks.checked(data, "validation_data", (4,), 3, "Training")
