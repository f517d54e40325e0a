"""Datasets: the bundled digits data and a thin TensorFlow Datasets loader."""

import dataclasses
import gzip
import os

import numpy as np
import tensorflow as tf

#: Where the Debian package ``dataset-fashion-mnist`` installs the data.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


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


def read_idx(path) -> np.ndarray:
    """Reads an idx file (the MNIST format), gzipped or not.

    Example:

    >>> header = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big")
    >>> with gzip.open("labels-idx1-ubyte.gz", "wb") as handle:
    ...     _ = handle.write(header + bytes([7, 2, 1]))
    >>> read_idx("labels-idx1-ubyte.gz")
    array([7, 2, 1], dtype=uint8)
    """
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f"{os.fspath(path)!r} is not an idx file of unsigned bytes."
        )
    rank = data[3]
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)
    )
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if values.size != int(np.prod(shape)):
        raise ValueError(
            f"{os.fspath(path)!r} is truncated: its header promises shape "
            f"{shape}, it holds {values.size} values."
        )
    return values.reshape(shape)


def _fashion_folder(path):
    candidates = (
        [os.fspath(path)]
        if path is not None
        else [
            FASHION_MNIST_DIR,
            os.path.join(
                os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"
            ),
        ]
    )
    for folder in candidates:
        names = _FASHION_FILES.values()
        if all(os.path.isfile(os.path.join(folder, n)) for n in names):
            return folder
    where = " or ".join(repr(c) for c in candidates)
    raise FileNotFoundError(
        f"Fashion-MNIST was not found in {where}: it needs the four idx "
        f"files {sorted(_FASHION_FILES.values())}. Install them with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into "
        f"{FASHION_MNIST_DIR}), or pass `path=` a folder that holds them. "
        "Nothing is downloaded."
    )


def load_fashion_mnist(
    path=None,
    batch_size: int = 128,
    validation_size: int = 5000,
    seed: int = 0,
) -> DataSplits:
    """Fashion-MNIST: 70,000 real 28x28 grey-scale images of 10 clothes.

    Reads the four standard idx files from ``path``, or else from the
    Debian package ``dataset-fashion-mnist`` (`FASHION_MNIST_DIR`) or
    Keras' dataset cache (``~/.keras/datasets/fashion-mnist``). Never
    downloads. The last ``validation_size`` training images (after a
    stratified shuffle with ``seed``) are the validation set; the 10,000
    test images are the test set. Pixels are scaled to [0, 1]; images have
    shape ``(28, 28, 1)``.

    Args:
        path: folder of the idx files; None looks in the places above.
        batch_size: batch size of all three pipelines.
        validation_size: training images held out for validation.
        seed: seed of the split and of the training set's shuffling.

    Returns:
        A `DataSplits`.

    Example:

    >>> data = load_fashion_mnist()
    >>> data.input_shape, data.num_classes
    ((28, 28, 1), 10)
    """
    folder = _fashion_folder(path)

    def read(key):
        return read_idx(os.path.join(folder, _FASHION_FILES[key]))

    x_train, y_train = read("train_images"), read("train_labels")
    x_test, y_test = read("test_images"), read("test_labels")
    if not 0 < validation_size < len(x_train):
        raise ValueError(
            f"`validation_size` must be in [1, {len(x_train)}); received "
            f"validation_size={validation_size!r}."
        )
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        x_train,
        y_train,
        test_size=validation_size,
        stratify=y_train,
        random_state=seed,
    )

    def images(x):
        return (x.astype("float32") / 255.0)[..., None]

    return DataSplits(
        train=make_pipeline(
            images(x_train), y_train.astype("int32"), batch_size, seed
        ),
        validation=make_pipeline(
            images(x_val), y_val.astype("int32"), batch_size
        ),
        test=make_pipeline(images(x_test), y_test.astype("int32"), batch_size),
        input_shape=(28, 28, 1),
        num_classes=10,
    )


def make_pipeline(x, y, batch_size: int, shuffle_seed=None) -> tf.data.Dataset:
    """A batched, prefetched `tf.data` pipeline over in-memory arrays.

    Example:

    >>> ds = make_pipeline(np.zeros((10, 8, 8, 1)), np.zeros(10), 4)
    >>> [len(x) for x, y in ds]
    [4, 4, 2]
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
    ... # doctest: +SKIP
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


def to_numpy(dataset) -> tuple:
    """Concatenates a dataset of ``(x, y)`` batches into two arrays."""
    xs, ys = [], []
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)
