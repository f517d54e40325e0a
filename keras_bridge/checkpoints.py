"""Checkpoints that let a killed training resume where it stopped.

A ``backup_dir`` (of `BridgeEnsemble.fit_modes`, ``fit_curves``,
``fit_bridge`` or ``fit``) holds, per unit of training (one mode, one
curve, one call's bridges):

- ``<unit>/``: the state of the epoch in progress, written after every
  epoch by `EpochBackup` (Keras' `BackupAndRestore`, each file replaced
  atomically), and removed when the unit finishes;
- ``<unit>.weights.h5``: the unit's final weights, written atomically when
  it finishes: a repeated call loads them instead of training again;
- ``<unit>.history.json``: the logs of the unit's training (its
  `keras.callbacks.History`), given back when it is loaded;
- ``progress.json``: epochs completed per unit (`ProgressLog`).

A kill in the middle of an epoch loses that epoch only: the repeated call
restores the weights and optimizer state saved at the end of the previous
epoch and trains the remaining epochs, so the planned number of epochs is
completed.
"""

import json
import os
import shutil
import warnings

import keras

from keras_bridge.atomic_files import atomic_write
from keras_bridge.compat import BackupAndRestoreWriter


class EpochBackup(BackupAndRestoreWriter):
    """`keras.callbacks.BackupAndRestore` whose files are replaced
    atomically: a kill while it writes leaves the previous epoch's files
    (and their ``.bkp`` copies) whole (through
    `keras_bridge.compat.BackupAndRestoreWriter`).

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

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"The epoch backup in {self.backup_dir!r} cannot be read "
                f"({_first_line(error)}). Delete that folder to train this "
                "unit from its first epoch, or use a new `backup_dir`."
            ) from error

    def write_backup(self, weights_path, metadata_path, metadata) -> None:
        """Keeps the previous files as ``.bkp`` copies, then writes the
        new ones; each file is replaced atomically."""
        os.makedirs(self.backup_dir, exist_ok=True)
        for path in (weights_path, metadata_path):
            if os.path.exists(path):
                with open(path, "rb") as source:
                    data = source.read()
                with atomic_write(f"{path}.bkp", overwrite=True) as staging:
                    with open(staging, "wb") as target:
                        target.write(data)
        with atomic_write(
            weights_path, overwrite=True, suffix=".weights.h5"
        ) as staging:
            self.model.save_weights(staging)
        with atomic_write(
            metadata_path, overwrite=True, suffix=".json"
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
        argument: the name errors give ``backup_dir``.

    Example:

    >>> import tempfile
    >>> checkpoints = Checkpoints(tempfile.mkdtemp())
    >>> checkpoints.finished("mode_0")
    False
    >>> checkpoints.record("mode_0", 3)
    >>> checkpoints.progress()
    {'mode_0': 3}
    """

    def __init__(self, backup_dir, argument: str = "backup_dir"):
        if not isinstance(backup_dir, (str, os.PathLike)):
            raise ValueError(
                f"`{argument}` must be a folder path; received "
                f"{argument}={backup_dir!r}."
            )
        backup_dir = os.fspath(backup_dir)
        if os.path.isfile(backup_dir):
            raise ValueError(
                f"`{argument}` must be a folder; {backup_dir!r} is a file."
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

    def _history(self, unit: str) -> str:
        return os.path.join(self.backup_dir, f"{unit}.history.json")

    def finish(self, unit: str, model, history=None) -> None:
        """Keeps the final weights of ``unit`` and the logs of its
        ``history`` (a `keras.callbacks.History`), the logs first: the
        weights file says the unit finished."""
        os.makedirs(self.backup_dir, exist_ok=True)
        if history is not None:
            with atomic_write(
                self._history(unit), overwrite=True, suffix=".json"
            ) as staging:
                with open(staging, "w") as handle:
                    json.dump(history.history, handle, default=jsonable)
        with atomic_write(
            self._weights(unit), overwrite=True, suffix=".weights.h5"
        ) as staging:
            model.save_weights(staging)

    def restore(self, unit: str, model) -> None:
        """Loads the final weights of ``unit`` into ``model``."""
        path = self._weights(unit)
        try:
            with warnings.catch_warnings():
                # A finished unit's optimizer state is not needed.
                warnings.filterwarnings(
                    "ignore", "Skipping variable loading for optimizer"
                )
                model.load_weights(path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"The backup {path!r} of {unit} cannot be loaded "
                f"({_first_line(error)}). Delete it to train {unit} again, "
                "or use a new `backup_dir`."
            ) from error

    def history(self, unit: str) -> keras.callbacks.History:
        """The `keras.callbacks.History` ``unit`` finished with (empty
        when its logs were not kept)."""
        history = keras.callbacks.History()
        if os.path.isfile(self._history(unit)):
            history.history = _read_json(
                self._history(unit), dict, "it only holds training logs; "
                "delete it"
            )  # fmt: skip
        return history

    def discard(self, unit: str) -> None:
        """Removes everything kept of ``unit`` (its epoch backups, final
        weights and progress), e.g. after it diverged."""
        shutil.rmtree(os.path.join(self.backup_dir, unit), ignore_errors=True)
        for path in (self._weights(unit), self._history(unit)):
            if os.path.isfile(path):
                os.remove(path)
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
        return _read_json(
            path, dict, "it only counts the epochs done; delete it"
        )


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
        self.checkpoints = Checkpoints(run_dir, argument="run_dir")
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
        state = _read_json(
            self._stages_path,
            dict,
            "delete it to run every stage again (trainings that finished "
            "load from their backups), or start a new run folder",
        )
        if not isinstance(state.get("finished"), list):
            raise ValueError(
                f"{self._stages_path!r} is not a record of finished stages "
                "(it has no list 'finished'): delete it to run every stage "
                "again, or start a new run folder."
            )
        return state

    def _write(self, state: dict) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        with atomic_write(
            self._stages_path, overwrite=True, suffix=".json"
        ) as staging:
            with open(staging, "w") as handle:
                json.dump(state, handle, default=jsonable)

    def finished(self) -> list:
        """The stages recorded as finished, in order."""
        return self._read()["finished"]

    def records(self) -> dict:
        """What each finished stage recorded (`complete`'s ``record``)."""
        return self._read().get("records", {})

    def backup_dir(self, stage: str) -> str:
        """The ``backup_dir`` of ``stage``'s training calls."""
        return os.path.join(self.run_dir, "backup", stage)

    def check_settings(self, settings: dict) -> None:
        """Records the ``settings`` of a new run; refuses settings other
        than the ones a run in ``run_dir`` was started with, naming each
        difference (a resumed run must repeat the call that started it).

        Args:
            settings: JSON-able dict of what the call was asked to do.

        Example:

        >>> import tempfile
        >>> state = RunState(tempfile.mkdtemp())
        >>> state.check_settings({"num_modes": 2, "modes": {"epochs": 3}})
        >>> state.check_settings({"num_modes": 3, "modes": {"epochs": 3}})
        Traceback (most recent call last):
        ...
        ValueError: `run_dir` '...' holds a run started with other
        settings: num_modes: 2 saved, 3 in this call. ...
        """
        settings = json.loads(json.dumps(settings, default=jsonable))
        state = self._read()
        if "settings" not in state:
            if not state["finished"]:  # a new run; an older one has none
                self._write({**state, "settings": settings})
            return
        saved, given = _flat(state["settings"]), _flat(settings)
        differences = [
            f"{key}: {_shown(saved, key)} saved, {_shown(given, key)} in "
            "this call"
            for key in sorted(set(saved) | set(given))
            if saved.get(key, _MISSING) != given.get(key, _MISSING)
        ]
        if differences:
            raise ValueError(
                f"`run_dir` {self.run_dir!r} holds a run started with other "
                f"settings: {'; '.join(differences)}. Repeat the call that "
                "started it to resume it, or pass a new `run_dir` for a new "
                "run."
            )

    def resume(self, load) -> tuple:
        """The finished stages and the ensemble saved after the last of
        them, read with ``load`` (e.g. `BridgeEnsemble.load`); ``([],
        None)`` when no stage finished. The caller adopts the ensemble."""
        finished = self.finished()
        saved = None
        if finished:
            try:
                saved = load(self.ensemble_path)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"{_first_line(error)} It holds the run's state after "
                    f"its stages {finished}: delete {self._stages_path!r} "
                    "to run every stage again (trainings that finished "
                    "load from their backups), or start a new run folder."
                ) from error
        return finished, saved

    def complete(self, stage: str, ensemble, record=None) -> None:
        """Saves ``ensemble`` and records ``stage`` as finished, with
        ``record`` (JSON-able: what the stage measured) beside it."""
        ensemble.save(self.ensemble_path, overwrite=True)
        state = self._read()
        state["finished"] = [*state["finished"], stage]
        state.setdefault("records", {})[stage] = record
        self._write(state)


_MISSING = object()


def _flat(settings: dict, prefix: str = "") -> dict:
    """``{"modes": {"epochs": 3}}`` as ``{"modes.epochs": 3}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(settings: dict, key: str) -> str:
    return repr(settings[key]) if key in settings else "not given"


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


def _read_json(path: str, kind: type, remedy: str):
    """The JSON value of ``path``, of type ``kind``; a `ValueError` naming
    the file and saying what to do (``remedy``) when it is damaged."""
    try:
        with open(path) as handle:
            value = json.load(handle)
    except ValueError as error:  # also UnicodeDecodeError
        problem = f"it is not valid JSON: {_first_line(error)}"
    else:
        if isinstance(value, kind):
            return value
        problem = f"it holds a {type(value).__name__}, not a {kind.__name__}"
    raise ValueError(f"{path!r} is damaged ({problem}): {remedy}.")


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
