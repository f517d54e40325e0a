"""Datasets: the bundled digits data and a thin TensorFlow Datasets loader."""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class DataSplits:
    """Train, validation and test pipelines of one dataset.

    Attributes:
        train: shuffled, batched `tf.data.Dataset` of ``(x, y)``.
        validation: batched `tf.data.Dataset`, in a fixed order.
        test: batched `tf.data.Dataset`, in a fixed order.
        input_shape: shape of one input.
        num_classes: number of classes.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple
    num_classes: int


def load_digits(batch_size: int = 64, seed: int = 0) -> DataSplits:
    """The bundled offline dataset: scikit-learn's 8x8 handwritten digits.

    1,797 grey-scale images of the digits 0-9, shipped inside
    scikit-learn, so no download is needed. The split is stratified and
    deterministic: 60 % train (1,078), 20 % validation (359), 20 % test
    (360). Pixels are scaled to [0, 1]; images have shape ``(8, 8, 1)``.

    Args:
        batch_size: batch size of all three pipelines.
        seed: seed of the training set's shuffling (the split itself is
            fixed).

    Returns:
        A `DataSplits`.

    Example:

    >>> data = load_digits(batch_size=32)
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype("float32")[..., None]
    labels = bunch.target.astype("int32")
    x_train, x_rest, y_train, y_rest = train_test_split(
        images, labels, test_size=0.4, stratify=labels, random_state=0
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=0
    )
    return DataSplits(
        train=make_pipeline(x_train, y_train, batch_size, shuffle_seed=seed),
        validation=make_pipeline(x_val, y_val, batch_size),
        test=make_pipeline(x_test, y_test, batch_size),
        input_shape=(8, 8, 1),
        num_classes=10,
    )


def make_pipeline(x, y, batch_size: int, shuffle_seed=None) -> tf.data.Dataset:
    """A batched, prefetched `tf.data` pipeline over in-memory arrays.

    Example:

    >>> ds = make_pipeline(np.zeros((10, 8, 8, 1)), np.zeros(10), 4)
    """
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(
            len(x), seed=shuffle_seed, reshuffle_each_iteration=True
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_tfds(
    name: str,
    splits=("train[:90%]", "train[90%:]", "test"),
    batch_size: int = 128,
    data_dir: str | None = None,
    download: bool = False,
    seed: int = 0,
) -> DataSplits:
    """Loads an image classification dataset of TensorFlow Datasets.

    Nothing is downloaded unless ``download=True``: by default the data
    must already be prepared in ``data_dir`` (e.g. by ``tfds build NAME``
    on a machine with network access, then copied), and a clear error says
    so when it is not. Images are scaled to [0, 1] as float32.

    Args:
        name: TFDS name, e.g. ``"cifar10"`` or ``"cifar100"``.
        splits: the train, validation and test split strings.
        batch_size: batch size of all three pipelines.
        data_dir: where prepared TFDS data lives; TFDS' default when None.
        download: allow TFDS to download and prepare the data.
        seed: seed of the training set's shuffling.

    Returns:
        A `DataSplits`.

    Example:

    >>> data = load_tfds("cifar10", data_dir="~/tensorflow_datasets")
    """
    import tensorflow_datasets as tfds

    if len(splits) != 3:
        raise ValueError(
            "`splits` must name three splits (train, validation, test); "
            f"received splits={splits!r}."
        )
    try:
        datasets, info = tfds.load(
            name,
            split=list(splits),
            as_supervised=True,
            with_info=True,
            data_dir=data_dir,
            download=download,
        )
    except (AssertionError, FileNotFoundError) as error:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r} "
            "and downloading is off. Prepare it with `tfds build "
            f"{name}` on a machine with network access and pass its "
            "`data_dir`, or call with download=True."
        ) from error
    num_classes = info.features["label"].num_classes
    input_shape = tuple(info.features["image"].shape)

    def prepare(dataset, shuffle):
        dataset = dataset.map(
            lambda x, y: (tf.cast(x, "float32") / 255.0, tf.cast(y, "int32")),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if shuffle:
            dataset = dataset.shuffle(10_000, seed=seed)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    train, validation, test = datasets
    return DataSplits(
        train=prepare(train, True),
        validation=prepare(validation, False),
        test=prepare(test, False),
        input_shape=input_shape,
        num_classes=num_classes,
    )


def features_only(dataset):
    """Yields the inputs of a dataset of ``(x, y)`` or ``x`` batches."""
    for batch in dataset:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def to_numpy(dataset) -> tuple:
    """Concatenates a dataset of ``(x, y)`` batches into two arrays."""
    xs, ys = [], []
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)
