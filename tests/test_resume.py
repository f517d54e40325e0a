"""A run killed with SIGKILL in the middle of an epoch resumes."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import pytest

import keras_bridge as kb
from keras_bridge import checkpoints

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import keras_bridge as kb

    run_dir, stage, log = sys.argv[1], sys.argv[2], sys.argv[3]


    def is_target(model):
        if stage == "modes":
            return model.name == "mode_1"
        if stage == "curves":
            return model.name.startswith("curve_")
        heads = getattr(model, "heads", [])
        return bool(heads) and heads[0].name.startswith(f"head_{stage}")


    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()} {self.model.name} {epoch}\\n")

        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 2 and is_target(self.model):
                os.kill(os.getpid(), signal.SIGKILL)


    # 4 batches an epoch: enough to be killed in the third.
    data = kb.data.load_digits(batch_size=128)
    train, validation = data.train.take(4), data.validation.take(2)
    # The smallest network with a feature map and BatchNormalization:
    # every stage builds, saves and loads it (resuming needs no depth).
    inputs = keras.Input(data.input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", name="features")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    backbone = keras.Model(inputs, keras.layers.Dense(10)(x))
    ens = kb.BridgeEnsemble(
        backbone, feature_layer="features", num_modes=2, seed=0
    )
    ens.fit(
        train, validation_data=validation, run_dir=run_dir,
        modes={"epochs": 2}, curves={"epochs": 2},
        bridges={"epochs": 2, "head": {"max_flops": 1.0}},
        callbacks=[KillMidEpoch()], verbose=0,
    )
    print("DONE", " ".join(ens.member_names()))
    """
)


def _run(script, run_dir, stage, log):
    return subprocess.run(
        [sys.executable, str(script), str(run_dir), stage, str(log)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.large
def test_a_run_killed_in_each_stage_resumes_and_completes(tmp_path):
    script, log = tmp_path / "child.py", tmp_path / "epochs.log"
    script.write_text(CHILD)
    run_dir = tmp_path / "run"
    state = checkpoints.RunState(run_dir)
    stages = ["modes", "curves", "type1", "type2"]
    # One kill per kind of unit (a mode, a curve, a bridge head): a Type II
    # head resumes as a Type I head does; here it trains unkilled.
    for index, stage in enumerate(stages[:3]):
        result = _run(script, run_dir, stage, log)
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        # Killed in this stage: the earlier ones are recorded, it is not.
        assert state.finished() == stages[:index]
    result = _run(script, run_dir, "none", log)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[1:] == [
        "mode_0", "mode_1", "type1_0-1_r0.5", "type2_0-1_r0.5",
    ]  # fmt: skip
    assert state.finished() == [*stages, "calibration"]

    # Every unit trained its planned 2 epochs, and a killed one resumed
    # from its last finished epoch (1), not from the start.
    for stage in stages:
        progress = checkpoints.Checkpoints(state.backup_dir(stage)).progress()
        assert progress and set(progress.values()) == {2}, (stage, progress)
    runs = {}
    for line in log.read_text().splitlines():
        pid, name, epoch = line.split()
        runs.setdefault((name, pid), []).append(int(epoch))
    epochs_of = {}
    for (name, _), epochs in runs.items():
        epochs_of.setdefault(name, []).append(epochs)
    assert epochs_of["mode_1"] == [[0, 1], [1]]
    assert epochs_of["mode_0"] == [[0, 1]]  # loaded, not retrained
    assert epochs_of["curve_0_1"] == [[0, 1], [1]]

    # The saved ensemble is complete (its calibration ran in the child, on
    # every member), and nothing partial is left behind.
    ens = kb.BridgeEnsemble.load(state.ensemble_path)
    assert ens.member_names() == result.stdout.split()[1:]
    leftovers = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(run_dir)
        for name in names
        if ".partial" in name
    ]
    assert leftovers == []


def test_backups_are_written_atomically_and_resume(tmp_path):
    """One unit trained in two calls: the second resumes from the epoch
    the first backed up (a stand-in for a kill between epochs)."""
    store = checkpoints.Checkpoints(tmp_path)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = keras.ops.ones((8, 3))
    y = keras.ops.zeros((8, 2))

    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x, y, epochs=3, verbose=0,
            callbacks=[*store.callbacks("unit"), StopAfterOne()],
        )  # fmt: skip
    assert store.progress() == {"unit": 1}
    backup = tmp_path / "unit"
    assert sorted(os.listdir(backup)) == [
        "latest.weights.h5", "training_metadata.json",
    ]  # fmt: skip
    meta = json.loads((backup / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    history = model.fit(
        x, y, epochs=3, verbose=0, callbacks=store.callbacks("unit")
    )
    assert len(history.epoch) == 2 and history.epoch[0] == 1
    assert store.progress() == {"unit": 3}
    assert not backup.exists()  # removed once the unit finished
    store.finish("unit", model)
    assert store.finished("unit") and not store.finished("other")


def test_backup_dir_must_be_a_folder(tmp_path, tiny_ensemble, digits):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="`backup_dir` must be a folder"):
        tiny_ensemble.fit_bridge(digits.train, epochs=1, backup_dir=path)
    with pytest.raises(ValueError, match="`modes` must be a dict"):
        tiny_ensemble.fit(digits.train, modes=3)
