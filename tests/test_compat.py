"""Pins every shim of `keras_bridge.compat` to the upstream internal it
wraps: when Keras, TensorFlow or KerasTuner renames or changes one, a
test here fails and names the shim to update."""

import json
import os
import warnings

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from keras_bridge import compat

#: Each private upstream name a shim relies on, by the object that has it.
PINNED = [
    (keras.Model, "_run_through_graph", "has_graph, run_through_graph"),
    (keras.Model, "_nodes_by_depth", "has_graph"),
    (keras.layers.Dense, "_inbound_nodes", "inbound_tensors"),
    (keras.layers.Dense, "_call_has_training_arg", "call_has_training_arg"),
    (keras_tuner.oracles.HyperbandOracle, "_get_num_brackets", "hyperband"),
    (keras_tuner.oracles.HyperbandOracle, "_get_num_rounds", "hyperband"),
    (keras_tuner.oracles.HyperbandOracle, "_get_epochs", "hyperband"),
    (keras_tuner.oracles.HyperbandOracle, "_get_size", "hyperband"),
    (keras.callbacks.BackupAndRestore, "_save_model", "BackupAndRestoreWriter"),
    (keras.Model, "_symbolic_build", "build_for_fit"),
]


def _upstream(shim) -> str:
    return (
        f"Upstream changed what `keras_bridge.compat.{shim}` relies on "
        f"(checked on {compat.CHECKED_ON}); update that shim."
    )


def _functional():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="logits")(hidden)
    return keras.Model(inputs, outputs)


def _instance(owner):
    if owner is keras.Model:
        return _functional()
    if owner is keras.layers.Dense:
        return _functional().get_layer("logits")
    if owner is keras_tuner.oracles.HyperbandOracle:
        return owner(objective="loss", max_epochs=9)
    return owner("/tmp")


@pytest.mark.parametrize(
    "owner, name, shim", PINNED, ids=[name for _, name, _ in PINNED]
)
def test_the_private_names_the_shims_use_exist(owner, name, shim):
    assert hasattr(_instance(owner), name), (
        f"{owner.__name__}.{name} is gone. " + _upstream(shim)
    )


def test_graph_shims_read_and_replay_a_functional_model():
    model = _functional()
    logits = model.get_layer("logits")
    assert compat.has_graph(model), _upstream("has_graph")
    assert not compat.has_graph(keras.layers.Dense(2)), _upstream("has_graph")
    history = compat.keras_history(model.outputs[0])
    assert history.operation is logits, _upstream("keras_history")
    assert history.node_index == 0, _upstream("keras_history")
    inbound = compat.inbound_tensors(logits)
    assert inbound[0] is model.get_layer("hidden").output, _upstream(
        "inbound_tensors"
    )
    assert compat.call_has_training_arg(keras.layers.Dropout(0.5))
    assert not compat.call_has_training_arg(keras.layers.Flatten()), _upstream(
        "call_has_training_arg"
    )
    zeros = keras.layers.Dense(2, kernel_initializer="zeros")
    swap = {logits.name: zeros}
    inputs = keras.Input((3,))
    outputs = compat.run_through_graph(
        model, [inputs], lambda layer: swap.get(layer.name, layer)
    )
    replayed = keras.Model(inputs, outputs)
    assert replayed.layers[-1] is zeros, _upstream("run_through_graph")
    np.testing.assert_array_equal(
        replayed.predict(np.ones((1, 3)), verbose=0), [[0.0, 0.0]]
    )


def test_build_for_fit_leaves_fit_no_variable_to_create():
    # A variable created during `fit` makes TensorFlow trace the training
    # step twice; after the shim, `fit` creates none and trains the same.
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.arange(10) % 2)).batch(4)
    results = []
    for build in (False, True):
        keras.utils.set_random_seed(0)
        model = _functional()
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        if build:
            compat.build_for_fit(model, data)
            variables = {id(v) for v in model.variables}
            variables |= {id(v) for v in model.optimizer.variables}
            variables |= {id(v) for v in model.metrics_variables}
        model.fit(data, epochs=1, shuffle=False, verbose=0)
        results.append([np.asarray(w) for w in model.weights])
    after = {id(v) for v in model.variables}
    after |= {id(v) for v in model.optimizer.variables}
    after |= {id(v) for v in model.metrics_variables}
    assert after == variables, _upstream("build_for_fit")
    for unbuilt, built in zip(*results, strict=True):
        np.testing.assert_array_equal(unbuilt, built)


def test_global_random_state_is_restored():
    keras.utils.set_random_seed(7)
    keras.random.uniform([])  # Keras makes its global SeedGenerator
    expected = float(tf.random.uniform([]))
    keras.utils.set_random_seed(7)
    keras.random.uniform([])
    keras_state, *_ = state = compat.global_random_state()
    keras.utils.set_random_seed(99)
    keras.random.uniform([]), tf.random.uniform([])
    compat.restore_global_random_state(state)
    # TensorFlow's global seed is back, and its sequence of operation
    # seeds continues where it was.
    assert float(tf.random.uniform([])) == expected, _upstream(
        "global_random_state"
    )
    found, *_ = compat.global_random_state()
    assert all(a is b for a, b in zip(found, keras_state)), _upstream(
        "global_random_state"
    )


def test_a_kept_keras_session_comes_back_after_clear_session():
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        name = keras.layers.Dense(1).name
        session = compat.keras_session()
        keras.backend.clear_session(free_memory=False)  # as KerasTuner does
        assert keras.config.is_interactive_logging_enabled(), _upstream(
            "keras_session"
        )
        compat.restore_keras_session(session)
        assert not keras.config.is_interactive_logging_enabled(), _upstream(
            "restore_keras_session"
        )
        # The layer-name counters continue: no second "dense".
        assert keras.layers.Dense(1).name not in ("dense", name), _upstream(
            "restore_keras_session"
        )
    finally:
        if interactive:
            keras.config.enable_interactive_logging()


def test_hyperband_brackets_are_the_oracles_schedule():
    oracle = keras_tuner.oracles.HyperbandOracle(
        objective="loss", max_epochs=9, factor=3
    )
    # KerasTuner 1.4.8: three brackets, successive halving by 3 from 1,
    # 3 and 9 epochs (the bracket sizes as its `_get_size` computes them).
    assert compat.hyperband_brackets(oracle) == [
        [(9, 3)],
        [(3, 5), (9, 2)],
        [(1, 9), (3, 3), (9, 1)],
    ], _upstream("hyperband_brackets")


def test_serve_oracle_is_the_chiefs_search_with_the_same_exit_test():
    """`compat.serve_oracle` does what `BaseTuner.search` does in the
    chief, with KerasTuner's servicer and its test for the end."""
    import inspect

    from keras_tuner.src.distribute import oracle_chief

    search = inspect.getsource(keras_tuner.Tuner.search)
    assert "oracle_chief.start_server(self.oracle)" in search, _upstream(
        "serve_oracle"
    )
    serve = inspect.getsource(oracle_chief.start_server)
    assert "stop_triggered" in serve and "exit_chief(oracle)" in serve
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective="loss", max_trials=1
    )
    servicer = oracle_chief.OracleServicer(oracle)
    assert servicer.stop_triggered is False, _upstream("serve_oracle")
    # No trial runs and no worker waits: the search may end.
    assert oracle_chief.exit_chief(oracle), _upstream("serve_oracle")
    oracle.tuner_ids.add("tuner0")  # a worker not yet told to stop
    assert not oracle_chief.exit_chief(oracle), _upstream("serve_oracle")


class _Recorder(compat.BackupAndRestoreWriter):
    def write_backup(self, weights_path, metadata_path, metadata):
        os.makedirs(self.backup_dir, exist_ok=True)
        self.model.save_weights(weights_path)
        with open(metadata_path, "w") as handle:
            json.dump(metadata, handle)
        self.written = getattr(self, "written", []) + [metadata["epoch"]]


class _Stop(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("killed")


def test_backup_writer_writes_the_files_keras_restores(tmp_path):
    model = _functional()
    model.compile("sgd", "mse")
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    writer = _Recorder(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="killed"):
        model.fit(x, y, epochs=4, callbacks=[writer, _Stop()], verbose=0)
    assert writer.written == [1, 2], _upstream("BackupAndRestoreWriter")
    history = model.fit(
        x, y, epochs=4, callbacks=[_Recorder(str(tmp_path / "backup"))],
        verbose=0,
    )  # fmt: skip
    # Keras read the epoch written: only the two remaining epochs ran.
    assert len(history.history["loss"]) == 2, _upstream(
        "BackupAndRestoreWriter"
    )


def test_tflite_metadata_is_written_and_read_back():
    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    def double(x):
        return 2.0 * x

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [double.get_concrete_function()], double
    )
    flatbuffer = compat.add_tflite_metadata(
        converter.convert(), "keras_bridge", b'{"members": 2}'
    )
    assert compat.read_tflite_metadata(flatbuffer, "keras_bridge") == (
        b'{"members": 2}'
    )
    assert compat.read_tflite_metadata(flatbuffer, "other") is None
    # The model still runs with the buffer added.
    with warnings.catch_warnings():
        # TF's deprecation notice starts with blanks: match anywhere.
        warnings.filterwarnings("ignore", r"(?s).*tf.lite.Interpreter is")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (given,), (taken,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    interpreter.set_tensor(given["index"], np.ones((1, 3), "float32"))
    interpreter.invoke()
    np.testing.assert_array_equal(interpreter.get_tensor(taken["index"]), 2.0)
