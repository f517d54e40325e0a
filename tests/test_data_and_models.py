import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_bridge as kb


def test_digits_split_is_deterministic_and_stratified():
    first = kb.data.load_digits(batch_size=50)
    second = kb.data.load_digits(batch_size=50, seed=3)
    x_train, y_train = kb.data.to_numpy(first.train)
    x_val, y_val = kb.data.to_numpy(first.validation)
    x_test, y_test = kb.data.to_numpy(first.test)
    assert (len(y_train), len(y_val), len(y_test)) == (1078, 359, 360)
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_test, minlength=10).min() >= 35
    np.testing.assert_array_equal(y_test, kb.data.to_numpy(second.test)[1])
    assert first.num_classes == 10


def test_tfds_loader_reads_prepared_data():
    with tfds.testing.mock_data(num_examples=24):
        splits = kb.data.load_tfds("mnist", batch_size=8)
        x, y = next(iter(splits.train))
    assert splits.input_shape == (28, 28, 1)
    assert splits.num_classes == 10
    assert x.shape == (8, 28, 28, 1) and x.dtype.name == "float32"
    assert float(np.max(x)) <= 1.0
    assert y.dtype.name == "int32"


def test_tfds_loader_never_downloads_by_default(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build mnist"):
        kb.data.load_tfds("mnist", data_dir=str(tmp_path))


def test_resnet_family_matches_the_literature():
    resnet32 = kb.models.resnet((32, 32, 3), 10, depth=32)
    # ResNet-32 on CIFAR-10 has 0.46 M parameters (He et al., 2016).
    assert 0.46e6 < resnet32.count_params() < 0.475e6
    assert resnet32.get_layer("stage3").output.shape[1:] == (8, 8, 64)
    wide = kb.models.resnet((32, 32, 3), 100, depth=8, width=2)
    assert wide.get_layer("stage1").output.shape[-1] == 32
    with pytest.raises(ValueError, match="depth"):
        kb.models.resnet((32, 32, 3), 10, depth=9)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype("uint8").tobytes())


def _fake_fashion_mnist(folder, n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        _write_idx(folder / name, array)
    return arrays


def test_fashion_mnist_loader_reads_idx_files(tmp_path):
    arrays = _fake_fashion_mnist(tmp_path)
    data = kb.data.load_fashion_mnist(
        tmp_path, batch_size=16, validation_size=10
    )
    assert (data.input_shape, data.num_classes) == ((28, 28, 1), 10)
    x_train, y_train = kb.data.to_numpy(data.train)
    x_val, y_val = kb.data.to_numpy(data.validation)
    x_test, y_test = kb.data.to_numpy(data.test)
    assert (len(x_train), len(x_val), len(x_test)) == (50, 10, 20)
    # Stratified: one validation image per class.
    assert sorted(y_val.tolist()) == list(range(10))
    expected = arrays["t10k-images-idx3-ubyte.gz"][..., None] / 255.0
    np.testing.assert_allclose(x_test, expected, atol=1e-7)
    np.testing.assert_array_equal(y_test, np.arange(20) % 10)
    # Every training image is one of the files' images, scaled.
    pool = arrays["train-images-idx3-ubyte.gz"] / 255.0
    assert all(
        np.abs(pool - image[..., 0]).max(axis=(1, 2)).min() < 1e-6
        for image in x_train[:5]
    )


def test_fashion_mnist_loader_explains_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install"):
        kb.data.load_fashion_mnist(tmp_path)
    _fake_fashion_mnist(tmp_path)
    with open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 50, 1, 2])))
    with pytest.raises(ValueError, match="truncated"):
        kb.data.load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="`validation_size`"):
        _fake_fashion_mnist(tmp_path)
        kb.data.load_fashion_mnist(tmp_path, validation_size=0)


def test_mobilenet_v3_style_has_its_building_blocks():
    model = kb.models.mobilenet_v3_style((28, 28, 1), 10, width=0.5)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"DepthwiseConv2D", "Multiply", "Add"} <= kinds
    assert model.output.shape == (None, 10)
    for stage, size in (("stage1", 14), ("stage2", 7), ("stage3", 4)):
        assert model.get_layer(stage).output.shape[1] == size
    # Its default Type I head fits the default budget.
    ens = kb.BridgeEnsemble(model)
    _, _, cost, _ = kb.bridges.size_head(
        ens.backbone, ens.feature_layer, 1, False, None, None
    )
    assert cost <= kb.bridges.DEFAULT_MAX_FLOPS
    with pytest.raises(ValueError, match="`width` must be positive"):
        kb.models.mobilenet_v3_style((28, 28, 1), 10, width=0)
