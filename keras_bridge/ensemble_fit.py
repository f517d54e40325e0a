"""`BridgeEnsemble.fit`: every stage in one resumable call."""

import dataclasses
import inspect

import keras
import numpy as np

from keras_bridge import cluster as cluster_lib
from keras_bridge import mode_training
from keras_bridge.checkpoints import RunState

#: The stages of `BridgeEnsemble.fit`, in order.
STAGES = ("modes", "curves", "type1", "type2", "calibration")
#: Later stages whose units train with a stage's: they read the same
#: ensemble (both bridge stages read the curves).
WAVES = {"type1": ("type2",)}


def _options(value, argument: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"`{argument}` must be a dict of keyword arguments; received "
            f"{argument}={value!r}."
        )
    return dict(value)


#: Arguments of the stages' methods that `fit` sets itself, not settings.
_NOT_SETTINGS = (
    "self", "data", "validation_data", "callbacks", "verbose", "backup_dir",
    "kind",
)  # fmt: skip


def _plain(value):
    """``value`` as JSON that compares equal between two calls: a
    dataclass (a `keras_bridge.bridges.HeadSpec`) by its fields, another
    object (an optimizer, a head, a layer) by its class name only."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return f"<{type(value).__name__}>"


def _with_defaults(method, options: dict) -> dict:
    """``options`` with the defaults of ``method``'s other arguments."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(method).parameters.items()
        if name not in _NOT_SETTINGS
        and parameter.default is not inspect.Parameter.empty
    }
    return _plain({**defaults, **options})


class FitMixin:
    """`fit` of `BridgeEnsemble`.

    Its contract with the host class: the host has the public stages
    (`fit_modes`, `fit_curves`, `fit_bridge`, `calibrate`), `load`,
    `default_pair` and the settings (``num_modes``, ``seed``,
    ``feature_layer``, ``curve``, ``strategy``, ``backbone``, ``modes``,
    ``mode_checks``), and implements `_adopt` below and `_prepare` (a
    training call's checked data, steps and options) and `_scope` (the
    distribution scope).
    """

    def _adopt(self, other) -> None:
        """Takes the whole state of ``other``, an ensemble of the same
        backbone and feature layer (the run's saved ensemble); refuses
        another one with a `ValueError`."""
        raise NotImplementedError

    def fit(
        self,
        data,
        *,
        validation_data=None,
        run_dir=None,
        modes=None,
        curves=None,
        bridges=None,
        callbacks=None,
        verbose="auto",
        cluster=None,
    ) -> list:
        """Modes, curves, Type I bridges, a Type II bridge, calibration.

        Runs `fit_modes`, `fit_curves` (the anchor to every other mode),
        `fit_bridge` for Type I bridges on every curve and for a Type II
        bridge on the anchor's first curve, then `calibrate` on
        ``validation_data``. With ``run_dir``, the ensemble is saved there
        after every stage and every training is backed up after every
        epoch (`keras_bridge.checkpoints`): the same call, repeated after
        the process was killed, skips the stages that finished and resumes
        the interrupted one from its last epoch, so the planned epochs are
        all completed. Start a new ensemble with a new ``run_dir``: a call
        whose settings (``num_modes``, ``seed``, the feature layer, the
        curve, ``modes``, ``curves``, ``bridges``) differ from those the
        run was started with is refused with a `ValueError` naming each
        difference, rather than returning the old run's ensemble.

        The trainings of a stage that do not depend on one another (each
        mode, each curve; the bridges of one stage train together) are
        its units. Given ``run_dir`` and ``data`` as a function that
        returns the training data (and ``validation_data`` as one, or
        NumPy arrays), each unit loads its own data and trains on its
        own, so the result does not depend on where the units train:
        with ``cluster``, on a Ray cluster, all units of a stage at once
        (the Type I and Type II bridges together), the run folder being
        what they share (see `keras_bridge.cluster`); without, in this
        process, one after another. A worker killed in the middle of a
        unit: Ray trains the unit again from its last epoch backup.

        Args:
            data: training data, as in `fit_modes`, or a function without
                arguments that returns it (picklable for ``cluster``: a
                module-level function or a lambda in the script).
            validation_data: labelled validation data (the anchor, the
                midpoint check, ``val_`` logs, the temperature), or a
                function that returns it.
            run_dir: folder of the run's checkpoints; None for none.
            modes, curves, bridges: keyword arguments of `fit_modes`,
                `fit_curves` and `fit_bridge` (e.g. ``{"epochs": 20}``);
                ``bridges`` may also hold ``"type2": False``; with
                ``"trunk": "shared"`` the Type I bridges share a trained
                trunk (the Type II bridge reads the frozen modes).
            callbacks: Keras callbacks added to every stage's training
                (picklable for ``cluster``).
            verbose: as in `fit_modes`.
            cluster: None, a Ray address (``"auto"`` for the cluster
                that ``ray start`` made this machine part of, ``"local"``
                for a new one on this machine, ``"HOST:6379"``) or a
                `keras_bridge.cluster.RayCluster`: the units train there
                as Ray tasks (``pip install keras-bridge[ray]``). Needs
                ``run_dir`` (on a file system every machine shares) and
                ``data`` as a function.

        Returns:
            A list of `keras.callbacks.History`, one per training run of
            this call, in order, as every ``fit_*`` method returns: the
            modes', the curves', then the bridges'. Stages that an earlier
            call in ``run_dir`` finished add none.

        Example:

        >>> import tempfile
        >>> backbone = kb.models.plain_cnn(
        ...     data.input_shape, data.num_classes, width=0.25)
        >>> ensemble = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
        >>> histories = ensemble.fit(data.train.take(2),  # 2 batches: a demo
        ...     run_dir=tempfile.mkdtemp(), modes={"epochs": 1},
        ...     curves={"epochs": 1}, bridges={"epochs": 1, "type2": False},
        ...     verbose=0)
        >>> len(histories)  # 2 modes, 1 curve, 1 bridge
        4
        >>> ensemble.member_names()
        ['mode_0', 'mode_1', 'type1_0-1_r0.5']
        """
        options = {
            "modes": _options(modes, "modes"),
            "curves": _options(curves, "curves"),
            "bridges": _options(bridges, "bridges"),
        }
        type2 = options["bridges"].pop("type2", True)
        units = self._units(data, validation_data, run_dir, cluster, verbose)
        data, validation_data = cluster_lib.load_data(
            data, validation_data, self.seed
        )
        state = None if run_dir is None else RunState(run_dir)
        if state is not None:
            state.check_settings(self._settings(options, type2))
        finished = []
        if state is not None:
            finished, saved = state.resume(type(self).load)
            if saved is not None:
                self._adopt(saved)
        common = {"callbacks": callbacks, "verbose": verbose}
        histories = []
        for stage in STAGES:
            if stage in finished:
                continue
            backup = None if state is None else state.backup_dir(stage)
            if units is not None:
                units.train_stages(
                    self, state.run_dir, [stage, *WAVES.get(stage, ())],
                    lambda name: self._stage_call(
                        name, options, type2,
                        {**common, "backup_dir": state.backup_dir(name)},
                    ),
                )  # fmt: skip
            histories += self._fit_stage(
                stage, data, validation_data, options, type2,
                {**common, "backup_dir": backup},
            )  # fmt: skip
            if state is not None:
                state.complete(stage, self)
        return histories

    def _units(self, data, validation_data, run_dir, cluster, verbose):
        """The `keras_bridge.cluster.Units` of a run whose units train
        apart (``cluster``, or ``data`` a function with ``run_dir``);
        None when the stages train here on ``data`` as given."""
        if cluster is None and not (callable(data) and run_dir is not None):
            return None
        if run_dir is None:
            raise ValueError(
                "`cluster` needs `run_dir`: the run folder is where the "
                "units write their results (a folder every machine of the "
                "cluster shares)."
            )
        if cluster is not None and self.strategy is not None:
            raise ValueError(
                "`cluster` trains each unit on one worker's devices; "
                "`strategy` is not sent to the workers. Pass one or the "
                "other."
            )
        return cluster_lib.Units(
            cluster, data, validation_data, self.seed, bool(verbose)
        )

    def _settings(self, options, type2) -> dict:
        """What `fit` was asked to do, as `RunState.check_settings` takes
        it: the ensemble's own settings and every stage's arguments, with
        their defaults."""
        return {
            "num_modes": self.num_modes,
            "seed": self.seed,
            "feature_layer": self.feature_layer,
            "curve": _plain(keras.saving.serialize_keras_object(self.curve)),
            "modes": _with_defaults(self.fit_modes, options["modes"]),
            "curves": _with_defaults(self.fit_curves, options["curves"]),
            "bridges": {
                **_with_defaults(self.fit_bridge, options["bridges"]),
                "type2": _plain(type2),
            },
        }

    def _stage_call(self, stage, options, type2, common):
        """The training call of ``stage``: ``(method name, keyword
        arguments)`` without the data; None for a stage without one."""
        if stage == "modes":
            return "fit_modes", {**common, **options["modes"]}
        if stage == "curves":
            return "fit_curves", {**common, **options["curves"]}
        if stage == "type1":
            return "fit_bridge", {
                "kind": "type1", **common, **options["bridges"]
            }  # fmt: skip
        if stage == "type2" and type2 and len(self.modes) > 1:
            # Type II bridges read two modes' frozen features.
            return "fit_bridge", {
                "kind": "type2", "pairs": [self.default_pair()], **common,
                **options["bridges"], "trunk": "frozen",
            }  # fmt: skip
        return None

    def _fit_stage(
        self, stage, data, validation_data, options, type2, common
    ) -> list:
        """Runs one stage of `fit`; returns its histories."""
        call = self._stage_call(stage, options, type2, common)
        histories = []
        if call is not None:
            method, kwargs = call
            histories = getattr(self, method)(
                data, validation_data=validation_data, **kwargs
            )
        if stage == "modes":
            mode_training.stop_on_broken_modes(self.mode_checks)
        if stage == "calibration" and validation_data is not None:
            self.calibrate(validation_data)
        return histories

    def fit_unit(self, method: str, unit, data, **kwargs):
        """Trains one unit of the training call ``method(data, **kwargs)``
        into that call's ``backup_dir``: what a worker of a cluster runs
        (`keras_bridge.cluster`). The call, made afterwards with the same
        arguments, loads the unit from there instead of training it.

        Args:
            method: ``"fit_modes"``, ``"fit_curves"`` or ``"fit_bridge"``.
            unit: the mode's index (``fit_modes``), the curve's pair
                (``fit_curves``), or None (``fit_bridge``: the bridges of
                one call train together).
            data: the training data of the call.
            **kwargs: the call's other arguments; ``backup_dir`` is
                required. The ensemble may take the unit's result.

        Returns:
            The unit's `keras.callbacks.History`.

        Example:

        >>> import os, tempfile
        >>> backbone = kb.models.plain_cnn((8, 8, 1), 10, width=0.25)
        >>> ens2 = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
        >>> folder, train = tempfile.mkdtemp(), data.train.take(2)
        >>> unit = ens2.fit_unit("fit_modes", 1, train, epochs=1,
        ...     backup_dir=folder, verbose=0)
        >>> sorted(os.listdir(folder))
        ['mode_1.history.json', 'mode_1.weights.h5', 'progress.json']
        >>> histories = ens2.fit_modes(train, epochs=1, backup_dir=folder,
        ...     verbose=0)  # trains mode 0, loads mode 1
        >>> histories[1].history == unit.history
        True
        """
        if kwargs.get("backup_dir") is None:
            raise ValueError(
                "`backup_dir` is required: the unit's result goes there."
            )
        if method == "fit_modes":
            if unit not in range(self.num_modes):
                raise ValueError(
                    "`unit` must be the index of a mode, in "
                    f"[0, {self.num_modes}); received unit={unit!r}."
                )
            defaults = inspect.signature(self.fit_modes).parameters
            options = {
                name: parameter.default
                for name, parameter in defaults.items()
                if parameter.default is not inspect.Parameter.empty
            }
            options.update(kwargs)
            validation_data = options.pop("validation_data")
            data, steps, options = self._prepare(
                "fit_modes", data, validation_data, True, **options
            )
            with self._scope():
                _, history = mode_training.train_mode(
                    self.backbone, unit, self.num_modes, data, steps,
                    self.seed, options, recalibrate=False,
                )  # fmt: skip
            return history
        if method == "fit_curves":
            only = {**kwargs, "pairs": [unit], "validation_data": None}
            return self.fit_curves(data, **only)[0]
        if method == "fit_bridge":
            return self.fit_bridge(data, **kwargs)[0]
        raise ValueError(
            "`method` must be 'fit_modes', 'fit_curves' or 'fit_bridge'; "
            f"received method={method!r}."
        )
