"""Where a run's units train: in this process, or as tasks on a Ray cluster.

A run (`BridgeEnsemble.fit` with ``run_dir``, ``keras-bridge run``) is
made of training calls (`fit_modes`, `fit_curves`, `fit_bridge`), and a
call of independent units: one mode, one curve, or the bridges of one
call (they train together). `Units` trains every unit of the calls of a
stage first, each on its own: a unit loads its data itself (the
functions the run was given), starts from the run's saved ensemble (or
its backbone, for the modes) and writes its final weights into the
stage's checkpoints (`keras_bridge.checkpoints.Checkpoints`), atomically.
The calls themselves then run in the driver, find every unit finished and
load it, as a resumed run does. So where the units train does not change
the result: `InProcess` trains them one after another, `RayCluster` as Ray
tasks, all at once, and the run folder is the state they share (a shared
file system on a real cluster). A worker killed in the middle of a unit:
Ray runs the task again, and it resumes from the unit's last epoch
backup.

Ray is imported only by `RayCluster` (``pip install keras-bridge[ray]``).
"""

import functools
import os
import socket
import time

import keras
import tensorflow as tf

from keras_bridge import training
from keras_bridge.atomic_files import atomic_write
from keras_bridge.checkpoints import Checkpoints
from keras_bridge.members import resolve_pairs
from keras_bridge.messages import print_msg

#: What a missing Ray says.
INSTALL_RAY = (
    "`cluster` needs Ray, which is not installed: "
    "pip install keras-bridge[ray] (or pip install ray)."
)


def import_ray():
    """The `ray` module; an `ImportError` saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(INSTALL_RAY) from error
    return ray


class InProcess:
    """Trains the units in this process, one after another."""

    remote = False

    def run(self, function, payloads) -> list:
        return [function(payload) for payload in payloads]


class RayCluster:
    """A Ray cluster that trains a run's units as tasks, all at once.

    Start the cluster with ``ray start --head`` on one machine and
    ``ray start --address=HEAD:6379`` on the others; every machine needs
    keras-bridge (and the code of any custom layer of the backbone)
    installed, and the run folder on a shared file system.

    Args:
        address: as `ray.init` takes it: ``"auto"`` (the cluster this
            machine joined with ``ray start``), ``"HOST:6379"``,
            ``"ray://HOST:10001"``, or ``"local"`` for a new one-machine
            cluster in this process (without Ray's dashboard). When this
            process already called `ray.init`, that cluster is used.
        cpus_per_unit: the CPUs Ray reserves for each unit (a unit uses
            what TensorFlow takes; this sets how many run side by side).
        gpus_per_unit: the GPUs Ray reserves for each unit.
        max_retries: how often a unit whose worker died (killed, lost
            machine) runs again; it resumes from its last epoch backup.
            An error raised by the training itself is not retried.
        init_options: more keyword arguments of `ray.init`; by default
            the workers' output stays in Ray's logs
            (``log_to_driver=False``): each finished unit is reported,
            and a unit's error is raised here.

    Example:

    >>> cluster = RayCluster("auto", cpus_per_unit=2)
    >>> cluster.max_retries
    3
    """

    remote = True

    def __init__(
        self,
        address: str = "auto",
        *,
        cpus_per_unit: float = 1,
        gpus_per_unit: float = 0,
        max_retries: int = 3,
        init_options=None,
    ):
        if not isinstance(address, str) or not address:
            raise ValueError(
                "`address` must be a Ray address such as 'auto', "
                f"'HOST:6379' or 'local'; received address={address!r}."
            )
        self.address = address
        self.cpus_per_unit = cpus_per_unit
        self.gpus_per_unit = gpus_per_unit
        self.max_retries = max_retries
        self.init_options = {"log_to_driver": False, **(init_options or {})}

    def connect(self):
        """Connects to the cluster (once per process); returns `ray`."""
        ray = import_ray()
        if not ray.is_initialized():
            if self.address == "local":
                options = {"include_dashboard": False, **self.init_options}
                ray.init(**options)
            else:
                ray.init(address=self.address, **self.init_options)
        return ray

    def run(self, function, payloads) -> list:
        ray = self.connect()
        task = ray.remote(
            num_cpus=self.cpus_per_unit,
            num_gpus=self.gpus_per_unit,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )(function)
        return ray.get([task.remote(payload) for payload in payloads])


def get(cluster):
    """``fit``'s ``cluster`` as an executor: None trains in this process,
    an address string or a `RayCluster` on Ray."""
    if cluster is None:
        return InProcess()
    if isinstance(cluster, str):
        return RayCluster(cluster)
    if isinstance(cluster, (RayCluster, InProcess)):
        return cluster
    raise ValueError(
        "`cluster` must be None, a Ray address (e.g. 'auto' after `ray "
        "start`, or 'local') or a `keras_bridge.cluster.RayCluster`; "
        f"received cluster={cluster!r}."
    )


def _given(value):
    return value


def loader(value, argument: str):
    """``value`` as a function that returns it: a function is kept (each
    unit calls it to load its own data); NumPy data travels as it is; a
    `tf.data.Dataset`, which cannot be sent to a worker, is refused."""
    if value is None or callable(value):
        return value
    if isinstance(value, tf.data.Dataset):
        raise ValueError(
            f"`{argument}` must be a function that returns the dataset when "
            "the run's units train apart (`cluster`): each unit loads its "
            "own data, and a `tf.data.Dataset` cannot be sent to another "
            f"process. E.g. `{argument}=lambda: kb.data.load_digits()."
            f"{'train' if argument == 'data' else 'validation'}`."
        )
    return functools.partial(_given, value)


class Units:
    """The units of a run's training calls, trained before the calls.

    Args:
        cluster: where the units train (see `get`).
        data, validation_data: functions that return the training and
            validation data (`loader`); each unit calls them.
        seed: the ensemble's seed: data are loaded under it, so that a
            unit's data do not depend on what ran before in its process.
        verbose: whether to say when each remote unit finished (remote
            units train silently; in this process, as the call says).
    """

    def __init__(self, cluster, data, validation_data, seed, verbose=1):
        self.executor = get(cluster)
        self.data = loader(data, "data")
        self.validation_data = loader(validation_data, "validation_data")
        self.seed = seed
        self.verbose = verbose
        #: ``{"unit", "seconds", "host"}`` of every unit trained.
        self.timings: list = []
        self._stages = set()

    def train_stages(self, ensemble, run_dir, stages, call) -> None:
        """`train` for the calls of ``stages`` (a stage, and the next ones
        when they read the same ensemble, e.g. both bridge stages), each
        stage once: ``call(stage)`` gives its training call, ``(method,
        keyword arguments with backup_dir)``, or None."""
        calls = []
        for stage in stages:
            if stage not in self._stages:
                self._stages.add(stage)
                calls.append(call(stage))
        self.train(ensemble, [found for found in calls if found], run_dir)

    def train(self, ensemble, calls, run_dir) -> None:
        """Trains every unfinished unit of ``calls`` (``[(method,
        keyword arguments)]``, each with its ``backup_dir``), where the
        units train, and waits for all of them.

        Args:
            ensemble: the run's ensemble as it is now (saved in
                ``run_dir/ensemble.keras`` when it has modes).
            calls: the training calls of one stage, or of stages that do
                not depend on one another.
            run_dir: the run's folder.
        """
        payloads = []
        for method, kwargs in calls:
            checkpoints = Checkpoints(kwargs["backup_dir"])
            if self.executor.remote:
                kwargs = {**kwargs, "verbose": 0}
            for selection, name in _units(ensemble, method, kwargs):
                if name is not None and checkpoints.finished(name):
                    continue
                name = name or f"{kwargs.get('kind', 'type1')} bridges"
                payloads.append(
                    {
                        "ensemble": type(ensemble),
                        "start": _start(ensemble, run_dir),
                        "method": method,
                        "unit": selection,
                        "name": name,
                        "kwargs": kwargs,
                        "data": self.data,
                        "validation_data": self.validation_data,
                        "seed": self.seed,
                    }
                )
        if not payloads:
            return
        for timing in self.executor.run(train_unit, payloads):
            self.timings.append(timing)
            if self.executor.remote and self.verbose:
                print_msg(
                    f"{timing['unit']}: trained on {timing['host']} in "
                    f"{timing['seconds']:.1f} s"
                )


def _units(ensemble, method, kwargs) -> list:
    """``(selection, checkpoint name)`` of each unit of a call; one
    ``(None, None)`` for a call whose units train together."""
    if method == "fit_modes":
        return [(i, f"mode_{i}") for i in range(ensemble.num_modes)]
    if method == "fit_curves":
        pairs = resolve_pairs(
            kwargs.get("pairs"), len(ensemble.modes), "pairs", ensemble.anchor
        )
        return [(tuple(p), f"curve_{p[0]}_{p[1]}") for p in pairs]
    return [(None, None)]


def _start(ensemble, run_dir) -> dict:
    """What a unit starts from: the run's saved ensemble, or (before the
    modes) its backbone, saved beside it, and the ensemble's settings."""
    if ensemble.modes:
        return {"ensemble": os.path.join(run_dir, "ensemble.keras")}
    path = os.path.join(run_dir, "backbone.keras")
    if not os.path.isfile(path):
        os.makedirs(run_dir, exist_ok=True)
        with atomic_write(path, overwrite=True, suffix=".keras") as staging:
            ensemble.backbone.save(staging)
    settings = {
        "feature_layer": ensemble.feature_layer,
        "num_modes": ensemble.num_modes,
        "seed": ensemble.seed,
        "curve": ensemble.curve,
    }
    return {"backbone": path, "settings": settings}


def load_data(data, validation_data, seed) -> tuple:
    """``(data, validation_data)``, each function among them called under
    ``seed``: a dataset's shuffling then depends on the seed only, not on
    what ran before in the process."""
    with training.seeded(seed, training.DATA_SEED_OFFSET):
        return tuple(
            value() if callable(value) else value
            for value in (data, validation_data)
        )


def train_unit(payload) -> dict:
    """Trains one unit (a `Units` payload): what a worker runs. Returns
    ``{"unit", "seconds", "host"}``."""
    started = time.perf_counter()
    data, validation_data = load_data(
        payload["data"], payload["validation_data"], payload["seed"]
    )
    cls, start = payload["ensemble"], payload["start"]
    if "backbone" in start:
        backbone = keras.saving.load_model(start["backbone"])
        ensemble = cls(backbone, **start["settings"])
    else:
        ensemble = cls.load(start["ensemble"])
    ensemble.fit_unit(
        payload["method"], payload["unit"], data,
        **{**payload["kwargs"], "validation_data": validation_data},
    )  # fmt: skip
    return {
        "unit": payload["name"],
        "seconds": time.perf_counter() - started,
        "host": socket.gethostname(),
    }
