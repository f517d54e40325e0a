"""State a user can trust: no stage corrupts another, a failed call leaves
the ensemble as it was, nothing is lost or half-written on disk."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb


def _weights(model):
    return [np.array(w) for w in model.weights]


def _same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b)
    )


def _snapshot(ens):
    """Everything a user can observe of an ensemble's state."""
    return {
        "members": ens.member_names(),
        "modes": [_weights(m) for m in ens.modes],
        "trainable": [
            [layer.trainable for layer in m.layers] for m in ens.modes
        ],
        "curves": {p: _weights(c) for p, c in ens.curves.items()},
        "heads": {b.name: _weights(h) for b, h in ens.bridges.items()},
        "temperature": ens.temperature,
        "checks": dict(ens.curve_checks),
    }


def _assert_unchanged(before, after):
    assert after["members"] == before["members"]
    assert after["temperature"] == before["temperature"]
    assert after["trainable"] == before["trainable"]
    assert after["checks"] == before["checks"]
    assert all(_same(a, b) for a, b in zip(before["modes"], after["modes"]))
    assert sorted(after["curves"]) == sorted(before["curves"])
    for pair, weights in before["curves"].items():
        assert _same(weights, after["curves"][pair])
    assert sorted(after["heads"]) == sorted(before["heads"])
    for name, weights in before["heads"].items():
        assert _same(weights, after["heads"][name])


def _with_nan(digits):
    x, y = kb.data.to_numpy(digits.train)
    x = x.copy()
    x[5, 3, 3, 0] = np.nan
    return kb.data.make_pipeline(x, y, 64)


# 1. Later stages never mutate a mode or a user's model.


@pytest.mark.large
def test_fit_bridge_leaves_modes_user_models_and_curves_trainable(
    digits, make_mini_backbone
):
    train = digits.train.take(2)  # what is frozen, not how well it learns
    backbone = make_mini_backbone()
    users = [keras.models.clone_model(backbone) for _ in range(2)]
    user_weights = [_weights(m) for m in users]
    ens = kb.BridgeEnsemble(backbone, feature_layer="features", seed=0)
    ens.set_modes(users)
    count = len(ens.modes[0].trainable_weights)
    assert count == len(backbone.trainable_weights)
    ens.fit_curves(train, epochs=1, verbose=0)
    mode_weights = _weights(ens.modes[0])
    ens.fit_bridge(train, epochs=1, verbose=0)
    assert len(ens.modes[0].trainable_weights) == count
    assert all(layer.trainable for layer in ens.modes[0].layers)
    assert _same(mode_weights, _weights(ens.modes[0]))
    # The user's models are neither frozen nor changed, nor shared.
    for model, weights in zip(users, user_weights):
        assert len(model.trainable_weights) == count
        assert _same(weights, _weights(model))
        assert all(m is not model for m in ens.modes)
    # A curve fitted after the bridge trains the whole network: one
    # trainable control point per float weight of the backbone, every
    # layer including those before the feature layer.
    with pytest.warns(UserWarning, match="drops the bridges"):
        ens.fit_curves(train, epochs=1, verbose=0)
    float_weights = [w for w in backbone.weights if "float" in str(w.dtype)]
    assert len(ens.curves[(0, 1)].trainable_weights) == len(
        [w for w in float_weights if w.trainable]
    )


@pytest.mark.large
def test_saved_modes_stay_trainable(tiny_bridged_ensemble, tmp_path):
    tiny_bridged_ensemble.save(tmp_path / "e.keras")
    loaded = kb.BridgeEnsemble.load(tmp_path / "e.keras")
    for mode in loaded.modes:
        assert len(mode.trainable_weights) == len(
            loaded.backbone.trainable_weights
        )


# 2. A failed call leaves the ensemble as it was.


@pytest.mark.large
def test_failed_fit_modes_keeps_a_trained_ensemble(
    tiny_bridged_ensemble, digits
):
    # What a failed call leaves, not how well anything learnt.
    ens, train = tiny_bridged_ensemble, digits.train.take(2)
    before = _snapshot(ens)
    x_only = train.map(lambda x, y: x)
    with pytest.raises(ValueError, match="`data` needs labels"):
        ens.fit_modes(x_only, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`validation_data`"):
        ens.fit_modes(train, epochs=1, validation_data=x_only)

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        ens.fit_modes(train, epochs=2, callbacks=[Crash()], verbose=0)
    _assert_unchanged(before, _snapshot(ens))


@pytest.mark.large
def test_failed_fit_curves_and_fit_bridge_change_nothing(
    tiny_bridged_ensemble, digits
):
    ens, train = tiny_bridged_ensemble, digits.train.take(2)
    before = _snapshot(ens)
    points = dict(ens._points)

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        ens.fit_curves(train, epochs=1, callbacks=[Crash()], verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="killed"):
            ens.fit_bridge(train, epochs=1, callbacks=[Crash()], verbose=0)
    # The failed call replaced nothing, so it must not say it did.
    assert not [w for w in caught if "replace" in str(w.message)]
    with pytest.raises(ValueError, match="`pairs`"):
        ens.fit_bridge(train, pairs=[(0, 5)])
    _assert_unchanged(before, _snapshot(ens))
    assert ens._points.keys() == points.keys()


# 3. Refitting a curve drops what depended on the old one.


@pytest.mark.large
def test_refitting_a_curve_drops_its_bridges(
    tiny_bridged_ensemble, digits, tmp_path
):
    ens, train = tiny_bridged_ensemble, digits.train.take(2)
    assert ens.member_names() == ["mode_0", "mode_1", "type1_0-1_r0.5"]
    old_point = ens._points[((0, 1), 0.5)]
    with pytest.warns(UserWarning, match=r"drops the bridges.*type1_0-1_r0\.5"):
        ens.fit_curves(train, epochs=1, verbose=0)
    assert ens.member_names() == ["mode_0", "mode_1"]
    assert ((0, 1), 0.5) not in ens._points or (
        ens._points[((0, 1), 0.5)] is not old_point
    )
    path = ens.export(tmp_path / "1", verbose=False)
    with open(os.path.join(path, "assets.extra", "keras_bridge.json")) as f:
        assert '"type1_0-1_r0.5"' not in f.read()


# 4. A loaded ensemble trains on with the data it is given.


@pytest.mark.large
def test_a_loaded_ensemble_trains_on(tiny_ensemble, digits):
    ens = tiny_ensemble  # loaded from its file
    # In a fixed order: recalibration runs BatchNorm in training mode, so
    # its statistics depend on which inputs share a batch.
    x, y = kb.data.to_numpy(digits.train)
    train = kb.data.make_pipeline(x[:128], y[:128], 64)
    ens.fit_bridge(train, t=(0.3,), epochs=1, verbose=0)
    assert ens.member_names()[-1] == "type1_0-1_r0.3"
    profile = ens.curve_profile(digits.test.take(2), num_points=2)
    assert profile.kind == "curve" and len(profile.t) == 2
    # The teacher at 0.3 was recalibrated on the data of that call.
    expected = kb.point_model(ens.curves[(0, 1)], 0.3, ens.backbone, data=train)
    x, _ = kb.data.to_numpy(digits.test)
    np.testing.assert_allclose(
        ens.point_model((0, 1), 0.3)(x), expected(x), atol=1e-5
    )
    with pytest.raises(ValueError, match="`bn_data` must be given"):
        ens.point_model((0, 1), 0.2)


# 5. A stage's checkpoints hold only what that stage trains.


@pytest.mark.large
def test_backup_of_fit_bridge_holds_only_heads(
    tiny_ensemble, tiny_ensemble_file, digits, tmp_path
):
    train = digits.train.take(2)

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("killed")

    folder = str(tmp_path / "backup")
    first = tiny_ensemble
    # Modes unlike the second run's: restoring them would show.
    for mode in first.modes:
        mode.set_weights([w + 0.5 for w in mode.get_weights()])
    with pytest.raises(RuntimeError, match="killed"):
        first.fit_bridge(
            train,
            epochs=3,
            callbacks=[keras.callbacks.BackupAndRestore(folder), Crash()],
            verbose=0,
        )
    second = kb.BridgeEnsemble.load(tiny_ensemble_file)
    modes = [_weights(m) for m in second.modes]
    second.fit_bridge(
        train,
        epochs=3,
        callbacks=[keras.callbacks.BackupAndRestore(folder)],
        verbose=0,
    )
    assert all(_same(a, _weights(m)) for a, m in zip(modes, second.modes))


# 6. Non-finite inputs or losses stop the stage; nothing non-finite is
# kept, saved or exported.


def test_a_nan_pixel_stops_every_stage(tiny_ensemble, digits):
    ens = tiny_ensemble
    before = _snapshot(ens)
    nan_data = _with_nan(digits)
    for call in (
        lambda: ens.fit_modes(nan_data, epochs=1, verbose=0),
        lambda: ens.fit_curves(nan_data, epochs=1, verbose=0),
        lambda: ens.fit_bridge(nan_data, epochs=1, verbose=0),
    ):
        with pytest.raises(FloatingPointError, match="non-finite inputs"):
            call()
    with pytest.raises(FloatingPointError, match="^fit_modes"):
        ens.fit_modes(nan_data, epochs=1, verbose=0)
    _assert_unchanged(before, _snapshot(ens))


@pytest.mark.large
def test_a_diverging_loss_stops_the_stage(tiny_ensemble, digits):
    ens = tiny_ensemble
    before = _snapshot(ens)
    with pytest.raises(FloatingPointError, match=r"fit_modes.*loss became"):
        ens.fit_modes(
            digits.train.take(2),
            epochs=1,
            optimizer=keras.optimizers.SGD(1e30),
            verbose=0,
        )
    _assert_unchanged(before, _snapshot(ens))


def test_nothing_non_finite_is_saved_or_exported(tiny_ensemble, tmp_path):
    ens = tiny_ensemble
    kernel = ens.modes[1].get_layer("stem_conv").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(FloatingPointError, match="save.*not finite"):
        ens.save(tmp_path / "e.keras")
    with pytest.raises(FloatingPointError, match="export.*not finite"):
        ens.export(tmp_path / "1", verbose=False)
    assert os.listdir(tmp_path) == []


# 7. Wrong input shapes are refused on every call.


def test_wrong_shapes_are_refused_after_a_good_predict(tiny_ensemble):
    ens = tiny_ensemble
    x = np.zeros((4, 8, 8, 1), "float32")
    assert ens.predict(x)["probabilities"].shape == (4, 10)
    for bad in (np.zeros((4, 7, 8, 1)), np.zeros((4, 8, 8, 2))):
        with pytest.raises(ValueError, match=r"\(batch, 8, 8, 1\)"):
            ens.predict(bad)
    with pytest.raises(ValueError, match=r"`x` must have shape"):
        ens.predict(np.zeros((4, 8, 8)))


# 8. Leftovers of killed writes are cleaned on the next write.


def _dead_pid():
    """The pid of a process that has ended, as a killed writer's is."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.large
def test_leftovers_of_killed_writes_are_removed(tiny_ensemble, tmp_path):
    ens = tiny_ensemble
    pid = _dead_pid()
    leftovers = [
        tmp_path / f".e.keras.{pid}-0badc0de.partial.keras",
        tmp_path / ".e.keras.123.tmp.keras",  # keras-bridge 0.1
    ]
    for path in leftovers:
        path.write_bytes(b"half a model")
    with pytest.warns(UserWarning, match="interrupted earlier write"):
        ens.save(tmp_path / "e.keras")
    assert os.listdir(tmp_path) == ["e.keras"]

    serving = tmp_path / "serving"
    for name in (f".1.{pid}-0badc0de.partial", ".1.x1y2z3.tmp"):
        os.makedirs(serving / name / "variables")
    with pytest.warns(UserWarning, match="interrupted earlier write"):
        ens.export(serving / "1", members=["mode_0"], verbose=False)
    assert os.listdir(serving) == ["1"]


def test_a_write_interrupted_mid_swap_restores_the_old_version(tmp_path):
    pid = _dead_pid()
    old = tmp_path / f".1.{pid}-0badc0de.partial.old"
    os.makedirs(old)
    (old / "saved_model.pb").write_bytes(b"version 1")
    with pytest.warns(UserWarning, match="interrupted"):
        kb.atomic_files.clean_leftovers(tmp_path / "1")
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == b"version 1"


def test_an_old_version_put_back_is_not_overwritten(tiny_ensemble, tmp_path):
    # Killed between the two renames of a replace: only `.old` is left.
    old = tmp_path / f".1.{_dead_pid()}-0badc0de.partial.old"
    os.makedirs(old)
    (old / "saved_model.pb").write_bytes(b"version 1")
    with pytest.warns(UserWarning, match="put back"):
        with pytest.raises(FileExistsError, match="overwrite=True"):
            tiny_ensemble.export(tmp_path / "1", verbose=False)
    assert os.listdir(tmp_path) == ["1"]
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == b"version 1"


@pytest.mark.large
def test_overwrite_replaces_only_what_an_export_wrote(tiny_ensemble, tmp_path):
    ens = tiny_ensemble
    model = tmp_path / "serving" / "digits"
    for version in ("1", "2"):
        os.makedirs(model / version)
        (model / version / "saved_model.pb").write_text(f"v{version}")
    (model / "NOTES.txt").write_text("my notes")
    with pytest.raises(ValueError, match="not a SavedModel") as error:
        ens.export(model, overwrite=True, verbose=False)  # version forgotten
    assert "NOTES.txt" in str(error.value) and "digits/3" in str(error.value)
    assert sorted(os.listdir(model)) == ["1", "2", "NOTES.txt"]
    assert (model / "NOTES.txt").read_text() == "my notes"
    assert (model / "2" / "saved_model.pb").read_text() == "v2"
    # A SavedModel version and an empty folder are replaced.
    os.makedirs(model / "3")
    for path in (model / "2", model / "3"):
        ens.export(path, members=["mode_0"], overwrite=True, verbose=False)
        assert (path / "assets.extra" / "keras_bridge.json").is_file()
    assert (model / "1" / "saved_model.pb").read_text() == "v1"


def test_save_replaces_only_an_ensemble_unless_told(
    make_mini_backbone, tmp_path
):
    backbone = make_mini_backbone()
    ens = kb.BridgeEnsemble(backbone, feature_layer="features", seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    path = tmp_path / "model.keras"
    backbone.save(path)  # the user's own Keras model
    users = path.read_bytes()
    with pytest.raises(ValueError, match="holds a Functional") as error:
        ens.save(path)
    assert "model.keras" in str(error.value)
    assert "overwrite=True" in str(error.value)
    assert path.read_bytes() == users
    assert os.listdir(tmp_path) == ["model.keras"]
    ens.save(path, overwrite=True)  # explicit: replaced
    ens.save(path)  # an ensemble archive: replaced, as Keras' default
    assert kb.BridgeEnsemble.load(path).member_names() == ["mode_0", "mode_1"]


def test_a_live_writer_is_left_alone(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "input()"], stdin=-1)
    try:
        staging = tmp_path / f".e.keras.{other.pid}-0badc0de.partial.keras"
        staging.write_bytes(b"being written")
        assert kb.atomic_files.leftovers(tmp_path / "e.keras") == []
    finally:
        other.kill()
        other.wait()


# 9. Counts, member lists and names mean what they say.


def test_counts_and_member_names_are_checked(tiny_ensemble, digits):
    ens = tiny_ensemble
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1"):
        ens.fit_curves(digits.train, epochs=0)
    with pytest.raises(ValueError, match="`epochs`"):
        ens.fit_modes(digits.train, epochs=0)
    with pytest.raises(ValueError, match="`epochs`"):
        ens.fit_bridge(digits.train, epochs=-1)
    with pytest.raises(ValueError, match="`members` must hold at least one"):
        ens.predict(np.zeros((1, 8, 8, 1)), members=[])
    with pytest.raises(ValueError, match="mode_0@0.3"):
        ens.predict(np.zeros((1, 8, 8, 1)), members=["mode_0@0.3"])
    with pytest.raises(ValueError, match="`num_modes` must be an integer"):
        kb.BridgeEnsemble(ens.backbone, num_modes=True)
    assert ens.member_names() == ["mode_0", "mode_1"]


def test_tf_tensors_are_accepted_by_predict(tiny_ensemble):
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype="float32")
    np.testing.assert_allclose(
        tiny_ensemble.predict(tf.constant(x))["probabilities"],
        tiny_ensemble.predict(x)["probabilities"],
        atol=1e-6,
    )


@pytest.mark.large
def test_the_anchor_is_the_best_mode_on_validation_data(
    digits, make_mini_backbone, tmp_path
):
    ens = kb.BridgeEnsemble(
        make_mini_backbone(), feature_layer="features", num_modes=3, seed=0
    )
    ens.fit_modes(
        digits.train.take(3),
        epochs=1,
        validation_data=digits.validation,
        verbose=0,
    )
    x, y = kb.data.to_numpy(digits.validation)
    nlls = [kb.metrics.nll(keras.ops.softmax(m(x)), y) for m in ens.modes]
    assert ens.anchor == int(np.argmin(nlls))
    others = [i for i in range(3) if i != ens.anchor]
    assert ens._pairs(None) == [(ens.anchor, j) for j in others]
    ens.save(tmp_path / "e.keras")
    assert kb.BridgeEnsemble.load(tmp_path / "e.keras").anchor == ens.anchor


@pytest.mark.large
def test_a_loaded_ensemble_with_bridges_trains_more(doc_ensemble_file, digits):
    # Two modes, their curve, a Type I, a Type II and a conditioned bridge.
    ens = kb.BridgeEnsemble.load(doc_ensemble_file)
    with pytest.warns(UserWarning, match=r"replaced the bridges"):
        ens.fit_bridge(digits.train.take(2), epochs=1, verbose=0)
    ens.fit_bridge(digits.train.take(2), t=(0.3,), epochs=1, verbose=0)
    names = ens.member_names()
    assert names[-1] == "type1_0-1_r0.3" and len(names) == 6
    outputs = ens.predict(np.zeros((2, 8, 8, 1), "float32"))
    assert outputs["member_probabilities"].shape == (2, 6, 10)
    heads = [head.name for head in ens.bridges.values()]
    assert len(set(heads)) == len(heads)


# 10. A run folder resumes only the run it holds, and says what is wrong.


class _Killed(Exception):
    pass


class _KillAtCurves(keras.callbacks.Callback):
    """Stops a run as a kill would, once its modes are trained."""

    def on_train_begin(self, logs=None):
        if self.model.name.startswith("curve"):
            raise _Killed


def _tiny_fit(
    backbone, digits, run_dir, num_modes=2, seed=0, epochs=1, type2=False
):
    x, y = kb.data.to_numpy(digits.train)
    train = kb.data.make_pipeline(x[:128], y[:128], 64)
    ens = kb.BridgeEnsemble(
        backbone, feature_layer="features", num_modes=num_modes, seed=seed
    )
    return ens.fit(
        train, run_dir=run_dir, modes={"epochs": epochs},
        curves={"epochs": 1}, bridges={"epochs": 1, "type2": type2},
        callbacks=[_KillAtCurves()], verbose=0,
    )  # fmt: skip


@pytest.mark.large
def test_a_run_dir_refuses_other_settings(digits, make_mini_backbone, tmp_path):
    backbone, run_dir = make_mini_backbone(), tmp_path / "run"
    with pytest.raises(_Killed):
        _tiny_fit(backbone, digits, run_dir)
    stages = (run_dir / "stages.json").read_text()
    assert kb.checkpoints.RunState(run_dir).finished() == ["modes"]
    with pytest.raises(ValueError, match="other settings") as error:
        _tiny_fit(
            backbone, digits, run_dir, num_modes=3, seed=1, epochs=2,
            type2=True,
        )  # fmt: skip
    message = str(error.value)
    assert str(run_dir) in message
    for difference in (
        "num_modes: 2 saved, 3 in this call",
        "seed: 0 saved, 1 in this call",
        "modes.epochs: 1 saved, 2 in this call",
        "bridges.type2: False saved, True in this call",
    ):
        assert difference in message
    assert "learning_rate" not in message  # the same, by default
    assert (run_dir / "stages.json").read_text() == stages
    # The same call resumes the run (and stops again at the curves).
    with pytest.raises(_Killed):
        _tiny_fit(backbone, digits, run_dir)


def test_a_damaged_run_folder_is_named_with_what_to_do(
    tiny_ensemble, digits, tmp_path
):
    ens = tiny_ensemble
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="`run_dir` must be a folder"):
        ens.fit(digits.train, run_dir=path)
    run_dir = tmp_path / "run"
    os.makedirs(run_dir)
    (run_dir / "stages.json").write_text('{"finished": ["modes"')
    with pytest.raises(ValueError, match="stages.json.*delete it"):
        ens.fit(digits.train, run_dir=run_dir)
    (run_dir / "stages.json").write_text("[]")
    with pytest.raises(ValueError, match="stages.json.*delete it"):
        ens.fit(digits.train, run_dir=run_dir)


def test_a_garbage_backup_is_named_with_what_to_do(
    tiny_ensemble, digits, tmp_path
):
    backup = tmp_path / "backup"
    os.makedirs(backup / "mode_0")
    (backup / "mode_0.weights.h5").write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="mode_0.weights.h5.*Delete it"):
        tiny_ensemble.fit_modes(
            digits.train, epochs=1, backup_dir=backup, verbose=0
        )
    os.remove(backup / "mode_0.weights.h5")
    (backup / "mode_0" / "latest.weights.h5").write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="backup.*mode_0.*Delete that folder"):
        tiny_ensemble.fit_modes(
            digits.train, epochs=1, backup_dir=backup, verbose=0
        )
    (backup / "progress.json").write_text("{")
    with pytest.raises(ValueError, match="progress.json.*delete it"):
        kb.checkpoints.Checkpoints(backup).progress()
