"""Checkpoints that let a killed training resume where it stopped.

A ``backup_dir`` (of `BridgeEnsemble.fit_modes`, ``fit_curves``,
``fit_bridge`` or ``fit``) holds, per unit of training (one mode, one
curve, one call's bridges):

- ``<unit>/``: the state of the epoch in progress, written after every
  epoch by `EpochBackup` (Keras' `BackupAndRestore`, each file replaced
  atomically), and removed when the unit finishes;
- ``<unit>.weights.h5``: the unit's final weights, written atomically when
  it finishes: a repeated call loads them instead of training again;
- ``progress.json``: epochs completed per unit (`ProgressLog`).

A kill in the middle of an epoch loses that epoch only: the repeated call
restores the weights and optimizer state saved at the end of the previous
epoch and trains the remaining epochs, so the planned number of epochs is
completed.
"""

import json
import os
import shutil

import keras

from keras_bridge.files import atomic_write


class EpochBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose files are replaced
    atomically: a kill while it writes leaves the previous epoch's files
    (and their ``.bkp`` copies) whole.

    Args:
        backup_dir: the folder of this unit's epoch state.

    Example:

    >>> import tempfile
    >>> backup = EpochBackup(tempfile.mkdtemp())
    >>> backup.delete_checkpoint
    True
    """

    def __init__(self, backup_dir):
        super().__init__(backup_dir, double_checkpoint=True)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        for path in (self._weights_path, self._training_metadata_path):
            if os.path.exists(path):
                with open(path, "rb") as source:
                    data = source.read()
                with atomic_write(f"{path}.bkp", overwrite=True) as staging:
                    with open(staging, "wb") as target:
                        target.write(data)
        with atomic_write(
            self._weights_path, overwrite=True, suffix=".weights.h5"
        ) as staging:
            self.model.save_weights(staging)
        metadata = {"epoch": self._current_epoch, "batch": 0}
        with atomic_write(
            self._training_metadata_path, overwrite=True, suffix=".json"
        ) as staging:
            with open(staging, "w") as handle:
                json.dump(metadata, handle)


class ProgressLog(keras.callbacks.Callback):
    """Counts the epochs each unit has completed in ``progress.json``.

    Args:
        checkpoints: the `Checkpoints` of the run.
        unit: the unit's name, e.g. ``"mode_0"``.
    """

    def __init__(self, checkpoints, unit: str):
        super().__init__()
        self.checkpoints, self.unit = checkpoints, unit

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.record(self.unit, epoch + 1)


class Checkpoints:
    """The checkpoints of one ``backup_dir``.

    Args:
        backup_dir: the folder; created when first written.

    Example:

    >>> import tempfile
    >>> checkpoints = Checkpoints(tempfile.mkdtemp())
    >>> checkpoints.finished("mode_0")
    False
    >>> checkpoints.record("mode_0", 3)
    >>> checkpoints.progress()
    {'mode_0': 3}
    """

    def __init__(self, backup_dir):
        if not isinstance(backup_dir, (str, os.PathLike)):
            raise ValueError(
                "`backup_dir` must be a folder path; received "
                f"backup_dir={backup_dir!r}."
            )
        backup_dir = os.fspath(backup_dir)
        if os.path.isfile(backup_dir):
            raise ValueError(
                f"`backup_dir` must be a folder; {backup_dir!r} is a file."
            )
        self.backup_dir = backup_dir

    def _weights(self, unit: str) -> str:
        return os.path.join(self.backup_dir, f"{unit}.weights.h5")

    def callbacks(self, unit: str) -> list:
        """The callbacks that back ``unit`` up at every epoch."""
        return [
            EpochBackup(os.path.join(self.backup_dir, unit)),
            ProgressLog(self, unit),
        ]

    def finished(self, unit: str) -> bool:
        """Whether ``unit`` trained to the end before."""
        return os.path.isfile(self._weights(unit))

    def finish(self, unit: str, model) -> None:
        """Keeps the final weights of ``unit``."""
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic_write(
            self._weights(unit), overwrite=True, suffix=".weights.h5"
        ) as staging:
            model.save_weights(staging)

    def restore(self, unit: str, model) -> None:
        """Loads the final weights of ``unit`` into ``model``."""
        model.load_weights(self._weights(unit))

    def discard(self, unit: str) -> None:
        """Removes everything kept of ``unit`` (its epoch backups, final
        weights and progress), e.g. after it diverged."""
        shutil.rmtree(os.path.join(self.backup_dir, unit), ignore_errors=True)
        if os.path.isfile(self._weights(unit)):
            os.remove(self._weights(unit))
        progress = self.progress()
        if progress.pop(unit, None) is not None:
            self._write_progress(progress)

    def record(self, unit: str, epochs: int) -> None:
        """Notes that ``unit`` has completed ``epochs`` epochs."""
        progress = self.progress()
        progress[unit] = int(epochs)
        self._write_progress(progress)

    def _write_progress(self, progress: dict) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        path = os.path.join(self.backup_dir, "progress.json")
        with atomic_write(path, overwrite=True, suffix=".json") as staging:
            with open(staging, "w") as handle:
                json.dump(progress, handle, indent=1)

    def progress(self) -> dict:
        """Epochs completed per unit."""
        path = os.path.join(self.backup_dir, "progress.json")
        if not os.path.isfile(path):
            return {}
        with open(path) as handle:
            return json.load(handle)


class RunState:
    """Stages of a run that finished, and the ensemble after the last.

    ``run_dir`` holds ``stages.json`` (the finished stages, in order),
    ``ensemble.keras`` (the ensemble after the last of them, written
    atomically before the stage is recorded) and ``backup/<stage>/`` (the
    `Checkpoints` of the stage in progress).

    Args:
        run_dir: the run's folder; created when first written.
    """

    def __init__(self, run_dir):
        self.checkpoints = Checkpoints(run_dir)
        self.run_dir = self.checkpoints.backup_dir

    @property
    def _stages_path(self) -> str:
        return os.path.join(self.run_dir, "stages.json")

    @property
    def ensemble_path(self) -> str:
        return os.path.join(self.run_dir, "ensemble.keras")

    def _read(self) -> dict:
        if not os.path.isfile(self._stages_path):
            return {"finished": [], "records": {}}
        with open(self._stages_path) as handle:
            return json.load(handle)

    def finished(self) -> list:
        """The stages recorded as finished, in order."""
        return self._read()["finished"]

    def records(self) -> dict:
        """What each finished stage recorded (`complete`'s ``record``)."""
        return self._read().get("records", {})

    def backup_dir(self, stage: str) -> str:
        """The ``backup_dir`` of ``stage``'s training calls."""
        return os.path.join(self.run_dir, "backup", stage)

    def resume(self, ensemble) -> list:
        """Gives ``ensemble`` the state saved after the last finished
        stage (if any); returns the finished stages."""
        finished = self.finished()
        if finished:
            from keras_bridge.ensemble import BridgeEnsemble

            ensemble._adopt(BridgeEnsemble.load(self.ensemble_path))
        return finished

    def complete(self, stage: str, ensemble, record=None) -> None:
        """Saves ``ensemble`` and records ``stage`` as finished, with
        ``record`` (JSON-able: what the stage measured) beside it."""
        ensemble.save(self.ensemble_path, overwrite=True)
        state = self._read()
        state["finished"] = [*state["finished"], stage]
        state.setdefault("records", {})[stage] = record
        with atomic_write(
            self._stages_path, overwrite=True, suffix=".json"
        ) as staging:
            with open(staging, "w") as handle:
                json.dump(state, handle, default=jsonable)


def jsonable(value):
    """``json.dump``'s ``default``: tuples as lists, NumPy scalars as
    Python numbers, anything else as its string.

    Example:

    >>> json.dumps({"pair": (0, 1), "x": np.float32(0.5)}, default=jsonable)
    '{"pair": [0, 1], "x": 0.5}'
    """
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)
