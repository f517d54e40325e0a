"""`BridgeEnsemble.fit`: every stage in one resumable call."""

import dataclasses
import inspect

import keras
import numpy as np

from keras_bridge import mode_training
from keras_bridge.checkpoints import RunState

#: The stages of `BridgeEnsemble.fit`, in order.
STAGES = ("modes", "curves", "type1", "type2", "calibration")


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
    ``feature_layer``, ``curve``, ``modes``, ``mode_checks``), and
    implements `_adopt` below.
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

        Args:
            data: training data, as in `fit_modes`.
            validation_data: labelled validation data (the anchor, the
                midpoint check, ``val_`` logs, the temperature).
            run_dir: folder of the run's checkpoints; None for none.
            modes, curves, bridges: keyword arguments of `fit_modes`,
                `fit_curves` and `fit_bridge` (e.g. ``{"epochs": 20}``);
                ``bridges`` may also hold ``"type2": False``; with
                ``"trunk": "shared"`` the Type I bridges share a trained
                trunk (the Type II bridge reads the frozen modes).
            callbacks: Keras callbacks added to every stage's training.
            verbose: as in `fit_modes`.

        Returns:
            A list of `keras.callbacks.History`, one per training run of
            this call, in order, as every ``fit_*`` method returns: the
            modes', the curves', then the bridges'. Stages that an earlier
            call in ``run_dir`` finished add none.

        Example:

        >>> import tempfile
        >>> backbone = kb.models.resnet(
        ...     data.input_shape, data.num_classes, depth=8, width=0.25)
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
            histories += self._fit_stage(
                stage, data, validation_data, options, type2,
                {**common, "backup_dir": backup},
            )  # fmt: skip
            if state is not None:
                state.complete(stage, self)
        return histories

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

    def _fit_stage(
        self, stage, data, validation_data, options, type2, common
    ) -> list:
        """Runs one stage of `fit`; returns its histories."""
        if stage == "modes":
            histories = self.fit_modes(
                data, validation_data=validation_data,
                **{**common, **options["modes"]},
            )  # fmt: skip
            mode_training.stop_on_broken_modes(self.mode_checks)
            return histories
        if stage == "curves":
            return self.fit_curves(
                data, validation_data=validation_data,
                **{**common, **options["curves"]},
            )  # fmt: skip
        if stage == "type1":
            return self.fit_bridge(
                data, kind="type1", validation_data=validation_data,
                **{**common, **options["bridges"]},
            )  # fmt: skip
        if stage == "type2" and type2 and len(self.modes) > 1:
            # Type II bridges read two modes' frozen features.
            frozen = {**options["bridges"], "trunk": "frozen"}
            return self.fit_bridge(
                data, kind="type2", pairs=[self.default_pair()],
                validation_data=validation_data, **{**common, **frozen},
            )  # fmt: skip
        if stage == "calibration" and validation_data is not None:
            self.calibrate(validation_data)
        return []
