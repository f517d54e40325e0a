"""Checking what users pass: datasets, arrays, counts.

Every public entry point of keras-bridge validates its data here before it
changes anything, so bad input gives one clear `ValueError` that names the
argument, what was received and what is accepted.

Accepted data: a batched, finite `tf.data.Dataset` of ``(x, y)`` (or of
``x`` where labels are not needed), or NumPy arrays ``(x, y)`` / ``x``
(batched here with `DEFAULT_BATCH_SIZE`, as `keras.Model.fit` does).
Labels are integer class ids in ``[0, num_classes)``, of shape ``(batch,)``
or ``(batch, 1)``, or one-hot rows of shape ``(batch, num_classes)``; they
are turned into integer ids.

How much of the data is checked before a stage runs is a setting
(`set_data_checks`): a full pass in Python for small data, checks inside
the `tf.data` pipeline (and the first batch at once) for large data.
"""

import numpy as np
import tensorflow as tf

#: Batch size for NumPy data, as in `keras.Model.fit`.
DEFAULT_BATCH_SIZE = 32
# Class ids that stand for a label the conversion could not make an id of;
# `scan` reports them with their batch. No real label is this negative.
_NOT_ONE_HOT = -(2**31)
_FRACTIONAL = -(2**31) + 1
_WRONG_WIDTH = -(2**31) + 2

#: The data-check modes of `set_data_checks`.
DATA_CHECKS = ("auto", "full", "in_pipeline")
#: Under ``"auto"``, a dataset of at most this many batches gets the full
#: check. Above it the full pass costs more than the in-pipeline checks
#: (benchmarks/data_checks.py on Fashion-MNIST, runs/data_checks/).
FULL_CHECK_MAX_BATCHES = 1000
_settings = {"data_checks": "auto"}


def set_data_checks(mode: str) -> None:
    """Chooses how every stage checks the values of its data.

    - ``"full"``: one pass over the data in Python before anything runs.
      Every batch's shape, finite inputs and labels are checked; a bad
      batch raises `ValueError` (or `FloatingPointError` for NaN and inf)
      naming the argument and the batch, and nothing has been trained or
      changed.
    - ``"in_pipeline"``: the first batch is checked as ``"full"`` checks
      it, at once; every other batch is checked inside the `tf.data`
      pipeline (`tf.debugging` asserts) when the stage reads it, with no
      pass of its own. A bad batch stops the stage with
      `tf.errors.InvalidArgumentError` naming the argument and the batch;
      the stage raises, so it keeps none of what it trained, but it may
      have trained for a while first.
    - ``"auto"`` (the default): ``"in_pipeline"`` for data of more than
      `FULL_CHECK_MAX_BATCHES` batches, ``"full"`` for smaller data and
      for data of unknown size (a generator, a ``filter``), which need a
      pass to count their batches anyway.

    Structure (element layout, batching, input shape, label format,
    finiteness of the dataset) is checked at once in every mode.

    Args:
        mode: one of `DATA_CHECKS`.

    Example:

    >>> set_data_checks("in_pipeline")
    >>> data_checks()
    'in_pipeline'
    >>> set_data_checks("auto")
    """
    if mode not in DATA_CHECKS:
        raise ValueError(
            f"`mode` must be one of {DATA_CHECKS}; received mode={mode!r}."
        )
    _settings["data_checks"] = mode


def data_checks() -> str:
    """The data-check mode set by `set_data_checks`."""
    return _settings["data_checks"]


def _shape_text(input_shape) -> str:
    return str(("batch", *input_shape)).replace("'", "")


def _compatible(shape, input_shape) -> bool:
    if len(shape) != len(input_shape) + 1:
        return False
    return all(
        a is None or b is None or int(a) == int(b)
        for a, b in zip(shape[1:], input_shape)
    )


def check_x(x, input_shape, argument="x", dtype="float32") -> np.ndarray:
    """Validates a batch of inputs for prediction; returns an array of
    ``dtype``.

    Example:

    >>> check_x(np.zeros((2, 8, 8, 1)), (8, 8, 1)).shape
    (2, 8, 8, 1)
    """
    expected = _shape_text(input_shape)
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(
            f"`{argument}` must be a NumPy array or tensor of shape "
            f"{expected}; received a {type(x).__name__}. Convert it with "
            "`np.asarray`."
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"`{argument}` must hold numbers; received dtype {x.dtype}."
        )
    if not _compatible(x.shape, input_shape):
        raise ValueError(
            f"`{argument}` must have shape {expected}; received shape "
            f"{x.shape}."
        )
    if len(x) == 0:
        raise ValueError(
            f"`{argument}` must hold at least one input; received an empty "
            f"batch of shape {x.shape}."
        )
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            raise FloatingPointError(
                f"`{argument}` holds non-finite inputs (NaN or inf) at index "
                f"{int(np.argmin(finite))} ({int((~finite).sum())} of "
                f"{len(x)} inputs); their outputs would be meaningless. "
                "Clean the data first."
            )
    return x.astype(dtype, copy=False)


def _check_numeric(dtype, argument, part) -> None:
    """Refuses strings, objects and other non-numbers before TensorFlow
    does with an error that names none of the user's arguments."""
    # NumPy strings and objects become tf.string.
    as_tf = tf.as_dtype(dtype)
    if not (as_tf.is_integer or as_tf.is_floating or as_tf.is_bool):
        raise ValueError(
            f"`{argument}` must hold numbers; its {part} have dtype "
            f"{getattr(dtype, 'name', dtype)}. "
            "Convert them first, e.g. with `np.asarray(x, 'float32')` for "
            "inputs or a lookup of class names to ids for labels."
        )


def _from_arrays(data, argument, needs_labels):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(part) for part in data)
        _check_numeric(x.dtype, argument, "inputs")
        _check_numeric(y.dtype, argument, "labels")
        if len(x) != len(y):
            raise ValueError(
                f"`{argument}` must hold as many labels as inputs; received "
                f"{len(x)} inputs and {len(y)} labels."
            )
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(
            DEFAULT_BATCH_SIZE
        )
    if isinstance(data, np.ndarray):
        if needs_labels:
            raise ValueError(
                f"`{argument}` needs labels: pass `(x, y)` arrays or a "
                "dataset of `(x, y)` batches; received an array of inputs "
                "only."
            )
        _check_numeric(data.dtype, argument, "inputs")
        return tf.data.Dataset.from_tensor_slices(data).batch(
            DEFAULT_BATCH_SIZE
        )
    raise ValueError(
        f"`{argument}` must be a batched `tf.data.Dataset` of `(x, y)` or "
        f"NumPy arrays `(x, y)`; received {type(data).__name__}."
    )


def dataset(
    data,
    argument: str,
    input_shape,
    num_classes: int,
    needs_labels: bool = True,
    dtype="float32",
) -> tf.data.Dataset:
    """Checks ``data``'s structure and returns it as ``(x, y)`` batches
    with inputs of ``dtype`` and integer labels (or ``x`` batches when it
    has no labels).

    Checks the element structure, batching, input shape, label format and
    that the dataset is finite. Values (finite inputs, label range,
    emptiness) are checked by `scan`.
    """
    if data is None:
        raise ValueError(
            f"`{argument}` must be given: a batched `tf.data.Dataset` of "
            "`(x, y)` or NumPy arrays `(x, y)`."
        )
    if not isinstance(data, tf.data.Dataset):
        data = _from_arrays(data, argument, needs_labels)
    spec = data.element_spec
    has_labels = isinstance(spec, tuple) and len(spec) == 2
    if isinstance(spec, tuple) and len(spec) not in (1, 2):
        raise ValueError(
            f"`{argument}` must yield `(x, y)` batches; received elements "
            f"of {len(spec)} parts."
        )
    if isinstance(spec, tuple) and len(spec) == 1:
        data = data.map(lambda x: x)
        spec = data.element_spec
    if needs_labels and not has_labels:
        raise ValueError(
            f"`{argument}` needs labels: it must yield `(x, y)` batches; "
            "received a dataset of `x` only."
        )
    x_spec = spec[0] if has_labels else spec
    if not isinstance(x_spec, tf.TensorSpec):
        raise ValueError(
            f"`{argument}` must yield one input tensor per batch; received "
            f"{x_spec}."
        )
    _check_numeric(x_spec.dtype, argument, "inputs")
    shape = tuple(x_spec.shape)
    expected = _shape_text(input_shape)
    if len(shape) == len(input_shape) and _compatible(
        (None, *shape), input_shape
    ):
        raise ValueError(
            f"`{argument}` is not batched: its inputs have shape {shape}, "
            f"expected batches of shape {expected}. Call `.batch(32)` on "
            "the dataset."
        )
    if not _compatible(shape, input_shape):
        raise ValueError(
            f"`{argument}` must yield inputs of shape {expected}; received "
            f"batches of shape {shape}."
        )
    cardinality = int(data.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"`{argument}` is infinite (it repeats): pass a finite dataset, "
            "one epoch of data, e.g. without `.repeat()` or with `.take(n)`."
        )
    if cardinality == 0:
        raise ValueError(f"`{argument}` is empty: it holds no batches.")
    if not has_labels:
        return data.map(lambda x: tf.cast(x, dtype))
    convert = _label_converter(spec[1], argument, num_classes)
    return data.map(lambda x, y: convert(tf.cast(x, dtype), y))


def _label_converter(y_spec, argument, num_classes):
    """Turns labels into integer ids; float labels are checked by `scan`
    first, since their values decide whether they are ids."""
    shape = tuple(y_spec.shape)
    one_hot = len(shape) == 2 and shape[-1] not in (1, None)
    if len(shape) not in (1, 2) or (one_hot and shape[-1] != num_classes):
        raise ValueError(
            f"`{argument}` must have labels of shape (batch,) (class ids) "
            f"or (batch, {num_classes}) (one-hot); received labels of "
            f"shape {shape}."
        )
    _check_numeric(y_spec.dtype, argument, "labels")

    def convert(x, y):
        if one_hot:
            return x, _one_hot_ids(y)
        if len(shape) == 2 and shape[-1] is None:
            # Only known per batch: one-hot rows, a column of ids, or a
            # width that is neither (marked `_WRONG_WIDTH`).
            width = tf.shape(y)[-1]
            return x, tf.case(
                [
                    (width == 1, lambda: _class_ids(tf.reshape(y, [-1]))),
                    (width == num_classes, lambda: _one_hot_ids(y)),
                ],
                default=lambda: tf.fill(tf.shape(y)[:1], _WRONG_WIDTH),
            )
        return x, _class_ids(tf.reshape(y, [-1]))

    return convert


def _one_hot_ids(y):
    """Class ids of one-hot rows; `_NOT_ONE_HOT` for a row that is not
    exactly one 1 among 0s (all zeros, label smoothing, multi-hot)."""
    exact = tf.reduce_all((y == 0) | (y == 1), axis=-1) & (
        tf.reduce_sum(tf.cast(y, "float32"), axis=-1) == 1
    )
    ids = tf.argmax(y, axis=-1, output_type=tf.int32)
    return tf.where(exact, ids, _NOT_ONE_HOT)


def _class_ids(y):
    """Integer ids of a vector of labels; `_FRACTIONAL` for a float label
    that is not a whole number."""
    if not y.dtype.is_floating:
        return tf.cast(y, tf.int32)
    whole = tf.math.floor(y) == y
    return tf.where(whole, tf.cast(y, tf.int32), _FRACTIONAL)


def scan(data, argument, input_shape, num_classes, stage, keep=None) -> int:
    """One pass over a dataset from `dataset`: checks that it is not empty,
    that every batch has the input shape, that inputs are finite and labels
    in ``[0, num_classes)``. Returns the number of batches; with a list as
    ``keep``, appends each batch to it as NumPy arrays."""
    count = 0
    for batch in data:
        count += 1
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        x = np.asarray(x)
        if keep is not None:
            keep.append((x, None if y is None else np.asarray(y)))
        if not _compatible(x.shape, input_shape):
            raise ValueError(
                f"`{argument}` must yield inputs of shape "
                f"{_shape_text(input_shape)}; batch {count} has shape "
                f"{x.shape}."
            )
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise FloatingPointError(
                f"{stage}: `{argument}` holds non-finite inputs (NaN or inf) "
                f"in batch {count}; nothing was trained or changed. Clean the "
                "data first."
            )
        if y is not None:
            y = np.asarray(y)
            _check_converted(y, argument, count, num_classes)
            bad = y[(y < 0) | (y >= num_classes)]
            if bad.size:
                raise ValueError(
                    f"`{argument}` must have labels in [0, {num_classes}); "
                    f"received label {int(bad[0])} in batch {count}."
                )
    if count == 0:
        raise ValueError(f"`{argument}` is empty: it holds no batches.")
    return count


def _check_converted(y, argument, count, num_classes) -> None:
    if (y == _NOT_ONE_HOT).any():
        raise ValueError(
            f"`{argument}` must have integer class ids or one-hot labels; "
            f"batch {count} holds a row that is not one-hot (all zeros, "
            "label smoothing or several classes). Pass class ids, or rows "
            "with exactly one 1."
        )
    if (y == _WRONG_WIDTH).any():
        raise ValueError(
            f"`{argument}` must have labels of shape (batch,) (class ids) "
            f"or (batch, {num_classes}) (one-hot); batch {count} holds "
            "labels of another width."
        )
    if (y == _FRACTIONAL).any():
        raise ValueError(
            f"`{argument}` must have integer class ids or one-hot labels; "
            f"batch {count} holds a fractional label."
        )


def checked(
    data,
    argument,
    input_shape,
    num_classes,
    stage,
    needs_labels=True,
    dtype="float32",
):
    """`dataset` then the value checks that `data_checks` chooses:
    ``(dataset, number of batches)``."""
    data = dataset(
        data, argument, input_shape, num_classes, needs_labels, dtype
    )
    cardinality = int(data.cardinality())
    mode = data_checks()
    if mode == "auto":
        # Data of unknown size need a pass to count them: the full one.
        large = cardinality > FULL_CHECK_MAX_BATCHES
        mode = "in_pipeline" if large else "full"
    if mode == "full":
        return data, scan(data, argument, input_shape, num_classes, stage)
    scan(data.take(1), argument, input_shape, num_classes, stage)
    data = in_pipeline(data, argument, input_shape, num_classes, stage)
    if cardinality < 0:
        # Unknown size: count the batches in TensorFlow; the asserts run,
        # so a bad batch is found before anything trains.
        cardinality = int(data.reduce(0, lambda count, _: count + 1))
        if cardinality == 0:
            raise ValueError(f"`{argument}` is empty: it holds no batches.")
    return data, cardinality


def in_pipeline(data, argument, input_shape, num_classes, stage):
    """``data`` (from `dataset`) with `scan`'s checks as `tf.debugging`
    asserts in the pipeline: reading a bad batch raises
    `tf.errors.InvalidArgumentError` naming ``argument`` and the batch.

    Example:

    >>> x = np.zeros((6, 2), "float32")
    >>> x[4, 0] = np.nan
    >>> batches = tf.data.Dataset.from_tensor_slices((x, np.zeros(6)))
    >>> data = dataset(batches.batch(2), "data", (2,), 3)
    >>> data = in_pipeline(data, "data", (2,), 3, "fit_modes")
    >>> try:
    ...     _ = [batch for batch in data]
    ... except tf.errors.InvalidArgumentError as error:
    ...     message = error.message.split("assertion failed: ")[1]
    ...     print(message.split(" Clean")[0])
    [fit_modes: `data` holds non-finite inputs (NaN or inf) in batch 3.
    """
    x_spec = data.element_spec
    x_spec = x_spec[0] if isinstance(x_spec, tuple) else x_spec
    # Only dimensions the spec leaves open can differ from batch to batch.
    open_dims = [
        (i + 1, int(size))
        for i, (spec, size) in enumerate(zip(x_spec.shape[1:], input_shape))
        if spec is None and size is not None
    ]

    def fail(condition, template, *values):
        return tf.debugging.Assert(
            condition, [tf.strings.format(template, values)]
        )

    def check(index, batch):
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        number = index + 1
        asserts = [
            fail(
                tf.reduce_all(tf.gather(tf.shape(x), dim) == size),
                f"`{argument}` must yield inputs of shape "
                f"{_shape_text(input_shape)}; batch {{}} has shape {{}}.",
                number,
                tf.shape(x),
            )
            for dim, size in open_dims
        ]
        if x.dtype.is_floating:
            asserts.append(
                fail(
                    tf.reduce_all(tf.math.is_finite(x)),
                    f"{stage}: `{argument}` holds non-finite inputs (NaN or "
                    "inf) in batch {}. Clean the data first.",
                    number,
                )
            )
        if y is not None:
            asserts += _label_asserts(y, number, argument, num_classes, fail)
        with tf.control_dependencies(asserts):
            if y is None:
                return tf.identity(x)
            return tf.identity(x), tf.identity(y)

    return data.enumerate().map(check)


def _label_asserts(y, number, argument, num_classes, fail) -> list:
    marked = (y == _NOT_ONE_HOT) | (y == _FRACTIONAL) | (y == _WRONG_WIDTH)
    outside = ((y < 0) | (y >= num_classes)) & ~marked
    first = tf.gather(y, tf.argmax(tf.cast(outside, tf.int32)))
    accepted = f"`{argument}` must have integer class ids or one-hot labels"
    return [
        fail(
            tf.reduce_all(y != _NOT_ONE_HOT),
            f"{accepted}; batch {{}} holds a row that is not one-hot (all "
            "zeros, label smoothing or several classes). Pass class ids, "
            "or rows with exactly one 1.",
            number,
        ),
        fail(
            tf.reduce_all(y != _WRONG_WIDTH),
            f"`{argument}` must have labels of shape (batch,) (class ids) "
            f"or (batch, {num_classes}) (one-hot); batch {{}} holds labels "
            "of another width.",
            number,
        ),
        fail(
            tf.reduce_all(y != _FRACTIONAL),
            f"{accepted}; batch {{}} holds a fractional label.",
            number,
        ),
        fail(
            ~tf.reduce_any(outside),
            f"`{argument}` must have labels in [0, {num_classes}); "
            "received label {} in batch {}.",
            first,
            number,
        ),
    ]


def arrays(data, argument, input_shape, num_classes, stage, dtype="float32"):
    """A labelled dataset (or arrays), checked, as ``(x, y)`` arrays, in
    one pass."""
    data = dataset(data, argument, input_shape, num_classes, True, dtype)
    batches = []
    scan(data, argument, input_shape, num_classes, stage, keep=batches)
    xs, ys = zip(*batches)
    return np.concatenate(xs), np.concatenate(ys)
