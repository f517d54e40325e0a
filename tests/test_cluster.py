"""A run's units on a local Ray cluster (127.0.0.1 only): the same ensemble
as in one process, and a worker killed in the middle of a unit costs
nothing but the epoch it was in."""

import os
import signal
import sys

# Before Ray is imported: a local cluster on the loopback address (by
# default Ray binds this machine's network address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402

import keras_bridge as kb
from keras_bridge.checkpoints import Checkpoints

#: Epochs of the Type I bridges: the killed unit dies in the second.
BRIDGE_EPOCHS = 2


def train_data():
    return kb.data.load_digits().train.take(2)


def validation_data():
    return kb.data.load_digits().validation.take(2)


class KillOnce(keras.callbacks.Callback):
    """SIGKILLs its own process (a Ray worker) in the middle of the second
    epoch of the Type I bridges, once: ``marker`` records that it did."""

    def __init__(self, marker):
        super().__init__()
        self.marker = marker
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        heads = getattr(self.model, "heads", [])
        if self.epoch != 1 or not heads[:1]:
            return
        if not heads[0].name.startswith("head_type1"):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of this machine, on 127.0.0.1, for this module."""
    # The test's classes are sent by value: workers cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = kb.cluster.RayCluster(
        "local", max_retries=2, init_options={"num_cpus": 2}
    )
    cluster.connect()
    # Nothing of the cluster listens beyond this machine's loopback.
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield cluster
    ray.shutdown()


def _backbone():
    """Two convolutions: units that trace and train in seconds."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def _fit(folder, cluster=None, callbacks=None):
    ens = kb.BridgeEnsemble(
        _backbone(), feature_layer="features", num_modes=2, seed=0
    )
    ens.fit(
        train_data,
        validation_data=validation_data,
        run_dir=folder,
        modes={"epochs": 1},
        curves={"epochs": 1},
        bridges={
            "epochs": BRIDGE_EPOCHS,
            "type2": False,
            "head": {"width": 8, "depth": 1, "max_flops": 10.0},
        },
        callbacks=callbacks,
        verbose=0,
        cluster=cluster,
    )
    return ens


def _weights(models) -> list:
    return [w for model in models for w in model.get_weights()]


@pytest.mark.large
def test_a_ray_run_with_a_worker_killed_mid_unit_loses_nothing(
    cluster, tmp_path
):
    here = _fit(tmp_path / "here")
    marker = tmp_path / "killed"
    there = _fit(tmp_path / "ray", cluster, [KillOnce(str(marker))])
    assert marker.exists()  # a worker died in the bridges' 2nd epoch
    # The units before it are the ones trained in one process, bit for bit.
    for get in (lambda e: e.modes, lambda e: list(e.curves.values())):
        pairs = zip(_weights(get(here)), _weights(get(there)), strict=True)
        assert all(np.array_equal(a, b) for a, b in pairs)
    # The killed unit ran again from its epoch backup: one epoch left.
    backup = Checkpoints(tmp_path / "ray" / "backup" / "type1")
    (unit,) = backup.progress()
    assert backup.progress()[unit] == BRIDGE_EPOCHS
    assert len(backup.history(unit).history["loss"]) == BRIDGE_EPOCHS - 1
    assert not (tmp_path / "ray" / "backup" / "type1" / unit).exists()
    # The run is whole.
    assert there.member_names() == here.member_names()
    assert len(there.member_names()) == 3  # 2 modes, a Type I bridge
    x, _ = kb.data.to_numpy(kb.data.load_digits().test.take(1))
    assert np.isfinite(there.predict(x, verbose=0)["probabilities"]).all()


def test_a_tf_dataset_is_refused_with_the_way_to_send_data(tmp_path):
    ens = kb.BridgeEnsemble(_backbone(), num_modes=2, seed=0)
    with pytest.raises(ValueError, match="must be a function that returns"):
        ens.fit(train_data(), run_dir=tmp_path, cluster="local")
    with pytest.raises(ValueError, match="needs `run_dir`"):
        ens.fit(train_data, cluster="local")
