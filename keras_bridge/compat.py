"""The private Keras, TensorFlow and KerasTuner internals keras-bridge uses.

Every use of a private name of those libraries (an underscore attribute, a
``keras.src`` or ``tensorflow.python`` import, an overridden private
method) is here, one shim per internal, each naming the upstream version
it was checked on; the rest of the package calls these shims only.
``tests/test_compat.py`` pins every shim, so an upstream rename fails
there, naming the shim to update, rather than deep inside a training.

Checked on Keras 3.15.1, TensorFlow 2.21.0 and KerasTuner 1.4.8.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state
from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
from tensorflow.python.eager import context as tf_context

#: The upstream versions the shims were checked on.
CHECKED_ON = {"keras": "3.15.1", "tensorflow": "2.21.0", "keras_tuner": "1.4.8"}

# Functional graphs (Keras 3.15.1, keras/src/models/functional.py,
# keras/src/ops/node.py) -------------------------------------------------


def has_graph(model) -> bool:
    """Whether ``model`` carries a readable functional graph: Keras'
    ``Functional`` has the private ``_run_through_graph`` and
    ``_nodes_by_depth`` (checked on Keras 3.15.1)."""
    return hasattr(model, "_run_through_graph") and hasattr(
        model, "_nodes_by_depth"
    )


def keras_history(tensor):
    """The ``(operation, node_index, tensor_index)`` that made a symbolic
    ``tensor``: Keras' private ``KerasTensor._keras_history`` (checked on
    Keras 3.15.1)."""
    return tensor._keras_history


def inbound_tensors(layer, node_index: int = 0) -> list:
    """The input tensors of ``layer``'s call number ``node_index`` in a
    functional graph: Keras' private ``Layer._inbound_nodes`` (checked on
    Keras 3.15.1)."""
    return list(layer._inbound_nodes[node_index].input_tensors)


def call_has_training_arg(layer) -> bool:
    """Whether ``layer.call`` takes a ``training`` argument: Keras'
    private ``Layer._call_has_training_arg`` (checked on Keras 3.15.1)."""
    return bool(layer._call_has_training_arg)


def run_through_graph(model, inputs, operation_fn, call_fn=None):
    """Runs the graph of the functional ``model`` on ``inputs``, each
    operation replaced by ``operation_fn(operation)`` and called by
    ``call_fn(operation, *args, **kwargs)`` when given: Keras' private
    ``Function._run_through_graph`` (checked on Keras 3.15.1)."""
    if call_fn is None:
        return model._run_through_graph(inputs, operation_fn=operation_fn)
    return model._run_through_graph(
        inputs, operation_fn=operation_fn, call_fn=call_fn
    )


# Global random state (Keras 3.15.1, TensorFlow 2.21.0) -------------------


def global_random_state():
    """Keras' global seed and `SeedGenerator`, TensorFlow's global seed
    and its eager context's operation-seed generator, as an opaque value
    for `restore_global_random_state`.

    Neither library has a public getter: Keras keeps them in
    ``keras.src.backend.common.global_state`` (checked on Keras 3.15.1),
    TensorFlow in the eager context's private ``_seed`` and ``_rng``
    (checked on TensorFlow 2.21.0). `keras.utils.set_random_seed`
    replaces these objects (it does not mutate them), so keeping them is
    enough to restore them.
    """
    keras_state = [
        global_state.get_global_attribute(name)
        for name in (GLOBAL_RANDOM_SEED, GLOBAL_SEED_GENERATOR)
    ]
    eager = tf_context.context()
    return keras_state, eager._seed, getattr(eager, "_rng", None)


def restore_global_random_state(state) -> None:
    """Puts back a `global_random_state` (checked on Keras 3.15.1 and
    TensorFlow 2.21.0)."""
    keras_state, tf_seed, tf_rng = state
    for name, value in zip(
        (GLOBAL_RANDOM_SEED, GLOBAL_SEED_GENERATOR), keras_state
    ):
        global_state.set_global_attribute(name, value)
    tf.random.set_seed(tf_seed)
    if tf_rng is not None:
        tf_context.context()._rng = tf_rng


# Keras' session (Keras 3.15.1, keras/src/backend/common/global_state.py;
# KerasTuner 1.4.8, keras_tuner/src/engine/tuner.py) ----------------------


def keras_session():
    """Keras' global state, as an opaque value for `restore_keras_session`:
    its settings (the dtype policy, interactive logging, traceback
    filtering, the distribution), the counters that name new layers, and
    its global seed and `SeedGenerator`.

    KerasTuner's ``Tuner._try_build`` calls `keras.backend.clear_session`
    before it builds each trial's model (checked on KerasTuner 1.4.8),
    which replaces the two thread-local objects that hold this state,
    ``global_state.GLOBAL_STATE_TRACKER`` and ``GLOBAL_SETTINGS_TRACKER``,
    with blank ones (checked on Keras 3.15.1): keeping them is enough to
    restore them.
    """
    return (
        global_state.GLOBAL_STATE_TRACKER,
        global_state.GLOBAL_SETTINGS_TRACKER,
    )


def restore_keras_session(state) -> None:
    """Puts back a `keras_session` (checked on Keras 3.15.1)."""
    global_state.GLOBAL_STATE_TRACKER, global_state.GLOBAL_SETTINGS_TRACKER = (
        state
    )


# Building before `fit` (Keras 3.15.1, keras/src/trainers/trainer.py) ----


def build_for_fit(model, data) -> None:
    """Creates the variables of the compiled ``model``'s optimizer, loss
    and metrics before ``model.fit(data)``: Keras' private
    ``Trainer._symbolic_build`` (checked on Keras 3.15.1).

    Keras calls it itself only under a distribution strategy; otherwise
    `fit` creates those variables inside its first trace of the training
    step, and TensorFlow traces the step a second time, about half the
    time of a short `fit` on a small network. The variables and the
    training are the same either way. ``data`` is a `tf.data.Dataset` of
    ``(x, y)`` batches or of ``x`` batches (only its element spec is
    read); anything else builds the optimizer only.
    """
    spec = getattr(data, "element_spec", None)
    if spec is not None:
        model._symbolic_build(data_batch=spec)
    elif model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


# KerasTuner's Hyperband (KerasTuner 1.4.8, keras_tuner/src/tuners/
# hyperband.py) ---------------------------------------------------------


def hyperband_brackets(oracle) -> list:
    """The schedule of a `keras_tuner.oracles.HyperbandOracle`: per
    bracket (index 0 the least aggressive), its rounds of successive
    halving as ``(epochs, trials)``. From the oracle's private
    ``_get_num_brackets``, ``_get_num_rounds``, ``_get_epochs`` and
    ``_get_size`` (checked on KerasTuner 1.4.8)."""
    return [
        [
            (oracle._get_epochs(bracket, step), oracle._get_size(bracket, step))
            for step in range(oracle._get_num_rounds(bracket))
        ]
        for bracket in range(oracle._get_num_brackets())
    ]


# The chief of KerasTuner's distributed search (KerasTuner 1.4.8,
# keras_tuner/src/engine/base_tuner.py, keras_tuner/src/distribute/
# oracle_chief.py) -------------------------------------------------------


def serve_oracle(tuner, verbose, poll_seconds: float = 1.0) -> None:
    """What ``tuner.search`` does in the chief of KerasTuner's distributed
    search (``BaseTuner.search``, then ``oracle_chief.start_server``):
    saves ``tuner`` and serves its oracle to the workers until the search
    is over (a worker was told to stop, no trial is running and every
    worker has been told: KerasTuner's own ``exit_chief``), looking every
    ``poll_seconds``.

    KerasTuner looks every 20 s once a worker has been told to stop, so
    its chief ends up to 20 s after the last trial; the condition is the
    same (checked on KerasTuner 1.4.8). Nothing stops the gRPC server, as
    upstream: it ends with the process.
    """
    # gRPC and KerasTuner load only for a distributed search.
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    tuner.oracle.verbose = verbose
    tuner.save()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(
        f"{os.environ['KERASTUNER_ORACLE_IP']}:"
        f"{os.environ['KERASTUNER_ORACLE_PORT']}"
    )
    server.start()
    while not (
        servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)
    ):
        time.sleep(poll_seconds)


# BackupAndRestore (Keras 3.15.1, keras/src/callbacks/backup_and_restore.py)


class BackupAndRestoreWriter(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose files a subclass writes.

    Keras has no public hook for how the backup is written: this class
    overrides the private ``_save_model`` and hands its private
    ``_weights_path``, ``_training_metadata_path`` and ``_current_epoch``
    to `write_backup` (checked on Keras 3.15.1, whose ``on_train_begin``
    reads the same two files, and ``<file>.bkp`` copies of them with
    ``double_checkpoint=True``).
    """

    def _save_model(self):
        self.write_backup(
            self._weights_path,
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": 0},
        )

    def write_backup(self, weights_path, metadata_path, metadata) -> None:
        """Writes the state after an epoch: the model's weights (and
        optimizer state) to ``weights_path``, the JSON ``metadata`` (the
        epochs done) to ``metadata_path``."""
        raise NotImplementedError


# TFLite flatbuffer metadata (TensorFlow 2.21.0, tensorflow/lite/python/
# schema_py_generated.py, tensorflow/lite/tools/flatbuffer_utils.py) ------


def add_tflite_metadata(flatbuffer: bytes, name: str, data: bytes) -> bytes:
    """``flatbuffer`` (a TFLite model) with a named metadata buffer
    ``name`` holding ``data`` added. The TFLite schema keeps named byte
    buffers in ``Model.metadata``; TF has no public writer for them, so
    this uses the generated schema and the flatbuffer helpers its own
    converter uses for its conversion metadata (checked on TF 2.21.0)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_tflite_metadata(flatbuffer: bytes, name: str):
    """The bytes of ``flatbuffer``'s metadata buffer ``name``, or None
    (see `add_tflite_metadata`)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name().decode() == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None
