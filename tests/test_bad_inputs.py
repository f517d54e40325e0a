"""Bad input gets one clear error that names the argument and says what is
accepted, and nothing is trained, changed or written."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ensemble(backbone, **kwargs):
    return kb.BridgeEnsemble(backbone, feature_layer="features", **kwargs)


@pytest.fixture
def empty(make_mini_backbone):
    """An ensemble with no modes yet: data checks run before training."""
    return _ensemble(make_mini_backbone(), seed=0)


def _modes_only(backbone):
    ens = _ensemble(backbone, seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    return ens


@pytest.fixture
def modes_only(make_mini_backbone):
    """Two untrained modes: enough to predict, save and load."""
    return _modes_only(make_mini_backbone())


def _arrays(n=20, shape=(8, 8, 1), labels=None):
    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype="float32")
    y = rng.integers(0, 10, n).astype("int32") if labels is None else labels
    return x, y


def _ds(x, y=None, batch=8):
    parts = x if y is None else (x, y)
    return tf.data.Dataset.from_tensor_slices(parts).batch(batch)


X, Y = _arrays()

# (data, error type, words the message must hold), for fit_modes' `data`.
BAD_DATA = {
    "x_only_dataset": (_ds(X), ValueError, ["`data` needs labels", "(x, y)"]),
    "unbatched": (
        tf.data.Dataset.from_tensor_slices((X, Y)),
        ValueError,
        ["`data` is not batched", ".batch("],
    ),
    "infinite": (
        _ds(X, Y).repeat(),
        ValueError,
        ["`data` is infinite", ".take(n)"],
    ),
    "empty": (_ds(X, Y).take(0), ValueError, ["`data` is empty"]),
    "empty_after_filter": (
        _ds(X, Y).filter(lambda x, y: False),
        ValueError,
        ["`data` is empty"],
    ),
    "label_too_large": (
        _ds(X, np.full(20, 10, "int32")),
        ValueError,
        ["`data` must have labels in [0, 10)", "received label 10"],
    ),
    "label_minus_one": (
        _ds(X, np.full(20, -1, "int32")),
        ValueError,
        ["labels in [0, 10)", "received label -1"],
    ),
    "wrong_image_size": (
        _ds(*_arrays(shape=(16, 16, 1))),
        ValueError,
        ["`data` must yield inputs of shape (batch, 8, 8, 1)", "16, 16, 1"],
    ),
    "one_hot_of_wrong_width": (
        _ds(X, np.eye(5, dtype="float32")[Y % 5]),
        ValueError,
        ["(batch, 10) (one-hot)", "(None, 5)"],
    ),
    "labels_of_rank_3": (
        _ds(X, np.zeros((20, 2, 2), "int32")),
        ValueError,
        ["labels of shape (batch,)"],
    ),
    "three_part_elements": (
        _ds((X, Y, Y)),
        ValueError,
        ["`data` must yield `(x, y)` batches", "3 parts"],
    ),
    "a_string": ("train", ValueError, ["`data` must be a batched", "str"]),
    "numpy_x_only": (X, ValueError, ["`data` needs labels", "(x, y)"]),
    "numpy_lengths_differ": (
        (X, Y[:7]),
        ValueError,
        ["as many labels as inputs", "20 inputs and 7 labels"],
    ),
    "none": (None, ValueError, ["`data` must be given"]),
    "nan_pixel": (
        _ds(np.where(np.arange(20)[:, None, None, None] == 3, np.nan, X), Y),
        FloatingPointError,
        ["fit_modes", "`data` holds non-finite inputs", "batch 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_fit_modes_refuses_bad_data(empty, case):
    data, error, words = BAD_DATA[case]
    with pytest.raises(error) as info:
        empty.fit_modes(data, epochs=1, verbose=0)
    for word in words:
        assert word in str(info.value)
    assert empty.modes == []


def test_fit_modes_refuses_bad_validation_data_before_training(empty):
    class Count(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            Count.batches += 1

    with pytest.raises(ValueError, match="`validation_data` needs labels"):
        empty.fit_modes(
            _ds(X, Y), epochs=1, validation_data=_ds(X), callbacks=[Count()]
        )
    assert Count.batches == 0 and empty.modes == []


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"epochs": 0}, "`epochs` must be an integer >= 1"),
        ({"epochs": 2.5}, "received epochs=2.5"),
        ({"epochs": True}, "received epochs=True"),
    ],
)
def test_fit_modes_refuses_bad_counts(empty, kwargs, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        empty.fit_modes(_ds(X, Y), verbose=0, **kwargs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"num_modes": 0}, "`num_modes` must be an integer >= 1"),
        ({"num_modes": "3"}, "received num_modes='3'"),
        ({"num_modes": True}, "received num_modes=True"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"feature_layer": "stage9"}, "`feature_layer` must name"),
        ({"curve": "spline"}, "spline"),
    ],
)
def test_constructor_refuses_bad_arguments(make_mini_backbone, kwargs, words):
    with pytest.raises(ValueError, match=words):
        kb.BridgeEnsemble(make_mini_backbone(), **kwargs)


def test_a_nested_backbone_explains_the_feature_layer():
    inner = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    features = keras.Model(inner.input, inner.get_layer("pool").output)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10)(features(inputs))
    backbone = keras.Model(inputs, outputs)
    with pytest.raises(ValueError) as info:
        kb.BridgeEnsemble(backbone)
    message = str(info.value)
    assert "`feature_layer` could not be chosen" in message
    assert features.name in message and "nested" in message
    with pytest.raises(ValueError, match="nested model"):
        kb.BridgeEnsemble(backbone, feature_layer="stage2")


def test_set_modes_refuses_bad_models(empty):
    with pytest.raises(ValueError, match="`models` must be a non-empty list"):
        empty.set_modes([])
    with pytest.raises(ValueError, match="`models` must be a non-empty list"):
        empty.set_modes(empty.backbone)
    assert empty.modes == []


@pytest.mark.parametrize(
    "x, words",
    [
        (np.zeros((4, 8, 8)), "`x` must have shape (batch, 8, 8, 1)"),
        (np.zeros((4, 7, 8, 1)), "received shape (4, 7, 8, 1)"),
        ([[0.0] * 8] * 8, "received a list"),
        (np.zeros((0, 8, 8, 1)), "at least one input"),
        (np.full((2, 8, 8, 1), "a"), "must hold numbers"),
    ],
    ids=["rank_3", "wrong_size", "python_list", "empty_batch", "strings"],
)
def test_predict_refuses_bad_inputs(modes_only, x, words):
    with pytest.raises(ValueError) as info:
        modes_only.predict(x)
    assert words in str(info.value)


@pytest.mark.parametrize("batch_size", [0, -3, 2.0])
def test_predict_refuses_bad_batch_sizes(modes_only, batch_size):
    with pytest.raises(ValueError, match="`batch_size` must be an integer"):
        modes_only.predict(np.zeros((2, 8, 8, 1)), batch_size=batch_size)


@pytest.mark.parametrize(
    "members, words",
    [
        ([], "`members` must hold at least one member"),
        ("mode_0", "`members` must be a list"),
        (["mode_2"], "received 'mode_2'"),
        (["mode_0@0.3"], "'type1_0-1_rany@0.3'"),
        (["type1_0-1_r0.5"], "Known: ['mode_0', 'mode_1']"),
    ],
)
def test_bad_member_lists_are_refused(modes_only, members, words):
    with pytest.raises(ValueError) as info:
        modes_only.predict(np.zeros((1, 8, 8, 1)), members=members)
    assert words in str(info.value)


def test_curve_and_bridge_arguments_are_checked(modes_only, tiny_ensemble):
    ens = modes_only
    with pytest.raises(ValueError, match="`pairs` must hold pairs"):
        ens.fit_curves(_ds(X, Y), pairs=[(0, 0)])
    with pytest.raises(ValueError, match="`pairs` must hold pairs"):
        ens.fit_curves(_ds(X, Y), pairs="some")
    with pytest.raises(ValueError, match="`pair` must name a fitted curve"):
        ens.point_model((0, 1), 0.5)
    with pytest.raises(ValueError, match="`num_points` must be an integer"):
        ens.curve_profile(_ds(X, Y), num_points=1)
    with pytest.raises(ValueError, match="labels in"):
        ens.curve_profile(_ds(X, np.full(20, -1, "int32")))
    with pytest.raises(ValueError, match="call `fit_curves` before"):
        ens.fit_bridge(_ds(X))
    assert ens.member_names() == ["mode_0", "mode_1"]
    ens = tiny_ensemble  # with a fitted curve
    with pytest.raises(ValueError, match=r"`t` must hold curve positions t in"):
        ens.point_model((0, 1), 1.5)
    with pytest.raises(ValueError, match="`t` must be a curve position in"):
        ens.fit_bridge(_ds(X), t="half")
    with pytest.raises(ValueError, match="`head` accepts the keys"):
        ens.fit_bridge(_ds(X), head={"wdith": 4})
    with pytest.raises(ValueError, match="`kind` must be 'type1' or 'type2'"):
        ens.fit_bridge(_ds(X), kind="type3")
    with pytest.raises(ValueError, match=r"`data` must yield inputs of shape"):
        ens.fit_bridge(_ds(np.zeros((4, 9, 9, 1), "float32")))
    assert ens.member_names() == ["mode_0", "mode_1"]


def test_evaluation_needs_labels(modes_only):
    with pytest.raises(ValueError, match="`data` needs labels"):
        modes_only.evaluate(_ds(X))
    with pytest.raises(ValueError, match="`calibration_data` must have labels"):
        modes_only.evaluate(
            _ds(X, Y), calibration_data=_ds(X, np.full(20, 12, "int32"))
        )
    assert modes_only.temperature == 1.0


@pytest.mark.large
def test_one_hot_labels_are_accepted_everywhere(modes_only):
    ens = modes_only
    one_hot = _ds(X, np.eye(10, dtype="float32")[Y])
    sparse = _ds(X, Y)
    ens.fit_curves(sparse, epochs=1, validation_data=one_hot, verbose=0)
    a = ens.curve_profile(one_hot, num_points=2)
    b = ens.curve_profile(sparse, num_points=2)
    np.testing.assert_allclose(a.nll, b.nll, rtol=1e-6)
    one_hot_report = ens.evaluate(one_hot, calibration_data=one_hot)
    sparse_report = ens.evaluate(sparse, calibration_data=sparse)
    assert one_hot_report.rows == sparse_report.rows


@pytest.mark.large
def test_numpy_arrays_are_accepted_as_keras_fit_does(make_mini_backbone):
    # One mode each: how arrays are read, the same for every mode.
    arrays = _ensemble(make_mini_backbone(), num_modes=1, seed=0)
    history = arrays.fit_modes((X, Y), epochs=1, validation_data=(X, Y))[0]
    # 20 inputs in batches of 32: one step, and the validation loss logged.
    assert len(history.history["val_loss"]) == 1
    assert len(arrays.modes) == 1
    # Arrays train as the same data batched by 32, in order, would.
    batched = _ensemble(make_mini_backbone(), num_modes=1, seed=0)
    twin = batched.fit_modes(
        _ds(X, Y, batch=32), epochs=1, validation_data=_ds(X, Y, batch=32)
    )[0]
    np.testing.assert_allclose(
        history.history["val_loss"], twin.history["val_loss"], rtol=1e-5
    )
    for mode, other in zip(arrays.modes, batched.modes):
        np.testing.assert_allclose(mode(X), other(X), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="session")
def saved_modes(make_mini_backbone, tmp_path_factory):
    """The file of two untrained modes, saved once per worker."""
    ens = _modes_only(make_mini_backbone())
    return ens.save(tmp_path_factory.mktemp("saved") / "ensemble.keras")


@pytest.fixture
def saved(saved_modes, tmp_path):
    """A copy of `saved_modes` that a test may damage."""
    path = tmp_path / "e.keras"
    shutil.copyfile(saved_modes, path)
    return path


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"", "it is empty"),
        (lambda data: os.urandom(2048), "not a zip archive"),
    ],
    ids=["truncated", "empty", "random_bytes"],
)
def test_damaged_files_are_named(saved, damage, words):
    saved.write_bytes(damage(saved.read_bytes()))
    with pytest.raises(ValueError) as info:
        kb.BridgeEnsemble.load(saved)
    assert "not a valid .keras file" in str(info.value)
    assert words in str(info.value)


def test_missing_and_foreign_files_are_named(make_mini_backbone, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kb.BridgeEnsemble.load(tmp_path / "missing.keras")
    make_mini_backbone().save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="holds a Functional.*set_modes"):
        kb.BridgeEnsemble.load(tmp_path / "plain.keras")


@pytest.mark.large
def test_an_unregistered_custom_layer_is_named(tmp_path):
    # The custom class exists only in the process that saves.
    script = """
import sys, keras, keras_bridge as kb
class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x
inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(4, 3, padding="same", name="features")(inputs)
x = Doubler()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
backbone = keras.Model(inputs, keras.layers.Dense(10)(x))
ens = kb.BridgeEnsemble(backbone, feature_layer="features")
ens.set_modes([backbone])
ens.save(sys.argv[1])
"""
    path = tmp_path / "custom.keras"
    subprocess.run(
        [sys.executable, "-c", script, str(path)],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    with pytest.raises(ValueError) as info:
        kb.BridgeEnsemble.load(path)
    message = str(info.value)
    assert "'Doubler'" in message and "custom_objects" in message


def test_bad_save_and_export_targets(modes_only, tmp_path):
    with pytest.raises(ValueError, match="`filepath` must end in '.keras'"):
        modes_only.save(tmp_path / "e.h5")
    with pytest.raises(ValueError, match="`format` must be one of"):
        modes_only.export(tmp_path / "1", format="pickle")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "argv, words",
    [
        (["evaluate", "e.keras", "--batch-size=0"], "--batch-size: must"),
        (["run", "--colour=red"], "unrecognized arguments: --colour=red"),
        (["fly"], "invalid choice: 'fly'"),
        (["export", "e.keras", "m", "--quantization=int4"], "invalid choice"),
        (["run", "--resume={tmp}"], "is not a run folder"),
        (["run", "c.yaml", "--resume={tmp}"], "give neither CONFIG"),
        (["run", "--output={tmp}/file"], "is a file, not a folder"),
        (["run", "--output={tmp}/file/r"], "`--output`"),
    ],
)
def test_the_command_line_reports_bad_arguments_in_one_line(
    argv, words, tmp_path, capsys
):
    (tmp_path / "file").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status = cli.main(argv)
    except SystemExit as exit:
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert words in err


@pytest.mark.large
def test_the_command_line_never_prints_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_bridge.cli",
            "evaluate",
            "e.keras",
            "--batch-size=x",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    # TensorFlow may log its own start-up lines before ours.
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "keras-bridge evaluate: error: argument --batch-size: must be an "
        "integer >= 1; received 'x'"
    )


def test_training_arguments_are_checked(tiny_ensemble):
    ens = tiny_ensemble  # two modes and their curve: nothing trains here
    cases = [
        ({"learning_rate": "a"}, "`learning_rate` must be a finite number"),
        ({"learning_rate": float("nan")}, "received learning_rate=nan"),
        ({"callbacks": "abc"}, "`callbacks` must be a list"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            ens.fit_curves(_ds(X, Y), **kwargs)
    for alpha in (float("nan"), "a", -1):
        with pytest.raises(ValueError, match="`mixup_alpha` must be"):
            ens.fit_bridge(_ds(X), mixup_alpha=alpha)
    with pytest.raises(ValueError, match="`t` must not repeat"):
        ens.fit_bridge(_ds(X), t=(0.2, 0.2))
    with pytest.raises(ValueError, match="`pairs` must hold pairs"):
        ens.fit_curves(_ds(X, Y), pairs=[(0.5, 1)])
    with pytest.raises(ValueError, match="`pairs` must hold pairs"):
        ens.fit_curves(_ds(X, Y), pairs=[(True, False)])
    with pytest.raises(ValueError, match="`temperature` must be a finite"):
        ens.inference_model(temperature="2")
    # A NumPy scalar is a valid t; t = 0 is the first mode itself.
    start = ens.point_model((0, 1), np.float32(0.0))
    np.testing.assert_allclose(start(X), ens.modes[0](X), atol=1e-5)
    assert ens.member_names() == ["mode_0", "mode_1"]


@pytest.mark.parametrize(
    "members, words",
    [
        (["mode_0", "mode_0"], "must not repeat a member"),
        (["type1_0-1_r0.5.5"], "received 'type1_0-1_r0.5.5'"),
        (["type1_0-1_rany@0.3.3"], "received 'type1_0-1_rany@0.3.3'"),
    ],
)
def test_member_names_are_parsed_strictly(modes_only, members, words):
    with pytest.raises(ValueError) as info:
        modes_only.predict(np.zeros((1, 8, 8, 1)), members=members)
    assert words in str(info.value)


def test_a_head_instance_must_fit_the_request(tiny_ensemble):
    ens = tiny_ensemble  # two modes and their curve: nothing trains here
    with pytest.raises(ValueError, match="`head` must output 10 classes"):
        ens.fit_bridge(_ds(X), head=kb.layers.BridgeHead(7, width=8))
    with pytest.raises(ValueError, match="conditioned=True"):
        ens.fit_bridge(_ds(X), t="any", head=kb.layers.BridgeHead(10))
    assert ens.member_names() == ["mode_0", "mode_1"]


def test_set_modes_refuses_another_input_shape(empty):
    other = kb.models.resnet((16, 16, 1), 10, depth=8, width=0.25)
    with pytest.raises(ValueError, match="input and output shapes"):
        empty.set_modes([other, other])
    assert empty.modes == []


def test_files_are_never_replaced_by_folders_or_back(modes_only, tmp_path):
    folder = tmp_path / "e.keras"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="is a folder; this writes a file"):
        modes_only.save(folder)
    served = tmp_path / "1"
    served.mkdir()
    with pytest.raises(ValueError, match="is a folder; this writes a file"):
        modes_only.export(served, format="onnx", overwrite=True)
    plain = tmp_path / "2"
    plain.write_text("a file")
    with pytest.raises(ValueError, match="is a file; this writes a folder"):
        modes_only.export(plain, overwrite=True)
    with pytest.raises(ValueError, match="`overwrite` must be True or False"):
        modes_only.save(tmp_path / "x.keras", overwrite="no")
    with pytest.raises(ValueError, match="is a folder; pass the .keras"):
        kb.BridgeEnsemble.load(folder)
    assert (folder / "precious.txt").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "e.keras"]


@pytest.mark.large
def test_integer_images_are_accepted_everywhere(modes_only):
    ens = modes_only
    x = (X * 255).astype("uint8")
    ens.fit_curves(_ds(x, Y), epochs=1, verbose=0)
    ens.fit_bridge(_ds(x), epochs=1, verbose=0)
    as_float = ens.predict(x.astype("float32"))["probabilities"]
    np.testing.assert_allclose(ens.predict(x)["probabilities"], as_float)
    np.testing.assert_allclose(
        ens.predict(x.astype("float64"))["probabilities"], as_float, atol=1e-6
    )


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_predict_refuses_non_finite_inputs_naming_the_index(modes_only, value):
    x = X[:6].copy()
    x[4] = value  # an all-NaN (or all-inf) image
    with pytest.raises(FloatingPointError, match="at index 4 \\(1 of 6"):
        modes_only.predict(x)


def test_predict_takes_a_dataset_as_it_takes_arrays(modes_only, capsys):
    expected = modes_only.predict(X, verbose=0)
    for data in (_ds(X), _ds(X, Y, batch=7)):  # x, and (x, y): y ignored
        outputs = modes_only.predict(data, verbose=0)
        assert set(outputs) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key], value, atol=1e-6)
    assert capsys.readouterr().out == ""
    modes_only.predict(_ds(X), verbose=2)  # one line when done
    assert "step" in capsys.readouterr().out


def test_predict_refuses_a_bad_dataset(modes_only):
    with pytest.raises(ValueError, match="`batch_size` must be None when"):
        modes_only.predict(_ds(X), batch_size=8)
    with pytest.raises(ValueError, match="`x` must yield inputs of shape"):
        modes_only.predict(_ds(np.zeros((4, 9, 9, 1), "float32")))
    with pytest.raises(ValueError, match="`x` is not batched"):
        modes_only.predict(tf.data.Dataset.from_tensor_slices(X))
    x = X[:6].copy()
    x[4] = np.nan
    with pytest.raises(FloatingPointError, match="`x` holds non-finite"):
        modes_only.predict(_ds(x, batch=2))


def test_predict_and_evaluate_refuse_a_member_with_a_nan_weight(modes_only):
    before = modes_only.predict(X[:4])["probabilities"]  # caches the graph
    kernel = modes_only.modes[1].trainable_weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(FloatingPointError, match="predict: the weight") as info:
        modes_only.predict(X[:4])
    assert kernel.path in str(info.value)
    with pytest.raises(FloatingPointError, match="evaluate: the weight"):
        modes_only.evaluate(_ds(X, Y))
    assert np.isfinite(before).all()


@pytest.mark.large
def test_a_diverging_stage_is_refused_and_its_backup_dropped(
    make_mini_backbone, tmp_path
):
    backbone = make_mini_backbone()
    ens = _ensemble(backbone, seed=0)
    ens.set_modes([keras.models.clone_model(backbone)])
    kept = ens.modes[0]
    backup = str(tmp_path / "backup")
    # Adam at 1e3: losses in the millions, finite, accuracy at chance.
    with pytest.raises(FloatingPointError, match="the training diverged"):
        ens.fit_modes(
            _ds(X, Y), epochs=2, learning_rate=1e3, verbose=0, backup_dir=backup
        )
    assert ens.modes == [kept]
    assert not os.path.exists(os.path.join(backup, "mode_0"))
    assert not os.path.exists(os.path.join(backup, "mode_0.weights.h5"))
    # The retry at a sane rate trains afresh instead of resuming.
    (history,) = ens.fit_modes(
        _ds(X, Y), epochs=2, learning_rate=1e-3, verbose=0, backup_dir=backup
    )
    assert len(history.history["loss"]) == 2
    assert max(history.history["loss"]) < 10


def test_divergence_check_catches_a_loss_risen_to_chance():
    check = kb.training.StopOnNonFinite("fit_bridge", 10, "agreement")
    check.on_train_batch_end(0, {"loss": 3.0})
    check.on_epoch_end(0, {"loss": 5.0})  # under 10x: not yet diverged
    with pytest.raises(FloatingPointError, match="agreement 0.1000, chance"):
        check.on_train_end({"loss": 5.0, "agreement": 0.1})
    # A loss that fell is no divergence, even at chance (random labels).
    check.on_train_end({"loss": 2.9, "agreement": 0.1})


@pytest.mark.parametrize("value", [7, 2, -1, 1.5, True, "1"])
def test_anchor_must_index_a_mode(modes_only, value):
    with pytest.raises(ValueError, match=r"`anchor` must be the index of a "):
        modes_only.anchor = value
    assert modes_only.anchor == 0
    modes_only.anchor = np.int64(1)
    assert modes_only.anchor == 1 and type(modes_only.anchor) is int


def test_calibrate_warns_on_a_tiny_set_and_at_a_search_bound(modes_only):
    # Three inputs the ensemble gets right: the NLL falls all the way to
    # the smallest temperature searched.
    x = X[:3]
    y = modes_only.predict(x)["class_ids"]
    with pytest.warns(UserWarning) as caught:
        temperature = modes_only.calibrate((x, y))
    message = " ".join(str(w.message) for w in caught)
    assert temperature == pytest.approx(0.05, rel=0.01)
    assert "fitted on 3 examples" in message
    assert "at a bound of the search [0.05, 20]" in message


def _edit_metadata(source, target, **changes):
    """A copy of the archive ``source`` whose metadata has ``changes``
    (a value of None removes the key)."""
    import json
    import zipfile

    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    for key, value in changes.items():
        if value is None:
            config["config"]["metadata"].pop(key)
        else:
            config["config"]["metadata"][key] = value
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return target


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"anchor": 9}, "['anchor']"),
        ({"anchor": -1}, "['anchor']"),
        ({"temperature": -1.0}, "['temperature']"),
        ({"feature_layer": "stage9"}, "['feature_layer']"),
        ({"curve_pairs": [[0, 0]]}, "['curve_pairs']"),
        ({"temperature": None}, "lacks ['temperature']"),
    ],
    ids=["anchor_9", "anchor_-1", "temperature", "layer", "pairs", "missing"],
)
def test_load_names_the_file_and_the_damaged_metadata_field(
    saved_modes, tmp_path, changes, field
):
    edited = str(tmp_path / "edited.keras")
    _edit_metadata(saved_modes, edited, **changes)
    with pytest.raises(
        ValueError, match="not a valid ensemble archive"
    ) as info:
        kb.BridgeEnsemble.load(edited)
    assert edited in str(info.value) and field in str(info.value)


def test_an_unedited_copy_loads(saved_modes, tmp_path):
    copy = _edit_metadata(saved_modes, str(tmp_path / "copy.keras"))
    assert kb.BridgeEnsemble.load(copy).member_names() == ["mode_0", "mode_1"]
