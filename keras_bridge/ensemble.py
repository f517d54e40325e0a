"""`BridgeEnsemble`: modes, curves between them, and bridges."""

import itertools
import warnings

import keras
import numpy as np

from keras_bridge import conversion, training
from keras_bridge import curves as curves_lib
from keras_bridge import metrics as metrics_lib
from keras_bridge.splitting import prepare_backbone, resolve_feature_layer


class BridgeEnsemble:
    """A deep ensemble whose extra members are cheap bridge networks.

    Holds ``num_modes`` independently trained copies of a backbone (the
    modes), a low-loss curve in weight space between pairs of modes, and
    bridges: small heads that predict the curve's midpoint network from a
    feature map the modes already computed.

    Args:
        backbone: a functional (or Sequential) `keras.Model` from inputs to
            logits, of shape ``(batch, num_classes)``. It is used as an
            architecture: its weights are not trained. A trailing softmax
            is removed with a warning.
        feature_layer: name of the layer whose output the bridges read.
            ``None`` picks the end of the stage before the last (see
            `keras_bridge.splitting.resolve_feature_layer`); for
            `keras_bridge.models.resnet` that is ``"stage2"``.
        num_modes: number of independently trained full networks.
        seed: seed of the modes' initialisations and of curve training;
            ``None`` for a random start.
        curve: the curve family between modes: a
            `keras_bridge.curves.Curve` or ``"bezier"`` / ``"polychain"``.

    Example:

    >>> data = keras_bridge.data.load_digits()
    >>> backbone = keras_bridge.models.resnet(
    ...     data.input_shape, data.num_classes, depth=8, width=0.5)
    >>> ens = BridgeEnsemble(backbone, num_modes=2, seed=0)
    >>> ens.fit_modes(data.train, epochs=20)
    >>> ens.fit_curves(data.train)
    >>> profile = ens.curve_profile(data.validation)
    >>> print(profile)
    """

    def __init__(
        self,
        backbone,
        feature_layer: str | None = None,
        num_modes: int = 2,
        seed: int | None = None,
        curve="bezier",
    ):
        if not isinstance(num_modes, int) or num_modes < 1:
            raise ValueError(
                "`num_modes` must be an integer >= 1; received "
                f"num_modes={num_modes!r}."
            )
        self.backbone = prepare_backbone(backbone)
        self.feature_layer = resolve_feature_layer(self.backbone, feature_layer)
        self.num_modes = num_modes
        self.seed = seed
        self.curve = curves_lib.get(curve)
        self.modes: list = []
        self.curves: dict = {}
        self.curve_checks: dict = {}
        self._train_data = None
        self._mode_epochs = None

    @property
    def num_classes(self) -> int:
        return int(self.backbone.outputs[0].shape[-1])

    # Modes -------------------------------------------------------------

    def fit_modes(
        self,
        data,
        epochs: int = 30,
        validation_data=None,
        optimizer=None,
        learning_rate: float = 2e-3,
        callbacks=None,
        verbose="auto",
    ) -> list:
        """Trains ``num_modes`` independently initialised backbones.

        Each mode is a fresh copy of the backbone (new random weights from
        its initialisers, seeded by ``seed + i``), compiled with
        cross-entropy on logits and accuracy, and trained with
        `keras.Model.fit`, so callbacks and the progress bar work as usual.

        Args:
            data: batched `tf.data.Dataset` of ``(x, y)``, integer or
                one-hot labels.
            epochs: epochs per mode.
            validation_data: passed to `fit`.
            optimizer: ``None`` for Adam with cosine decay of
                ``learning_rate``; an optimizer instance (copied for each
                mode) or name.
            learning_rate: peak learning rate of the default optimizer.
            callbacks: Keras callbacks, used for every mode.
            verbose: passed to `fit`.

        Returns:
            The list of `keras.callbacks.History`, one per mode.
        """
        histories = []
        self.modes = []
        self.curves, self.curve_checks = {}, {}
        steps = training.cardinality(data)
        for index in range(self.num_modes):
            if self.seed is not None:
                keras.utils.set_random_seed(self.seed + index)
            model = keras.models.clone_model(self.backbone)
            model.name = f"mode_{index}"
            model.compile(
                optimizer=training.make_optimizer(
                    optimizer, epochs, steps, learning_rate
                ),
                loss=training.classification_loss(data),
                metrics=["accuracy"],
            )
            if verbose:
                print(f"Mode {index + 1}/{self.num_modes}")
            histories.append(
                model.fit(
                    data,
                    epochs=epochs,
                    validation_data=validation_data,
                    callbacks=callbacks,
                    verbose=verbose,
                )
            )
            self.modes.append(model)
        self._train_data = data
        self._mode_epochs = epochs
        return histories

    def set_modes(self, models) -> None:
        """Uses already-trained models as the modes.

        Args:
            models: a list of functional models of the backbone's
                architecture, outputting logits.
        """
        models = [prepare_backbone(model) for model in models]
        if not models:
            raise ValueError("`models` must hold at least one model.")
        conversion.check_same_architecture(
            [self.backbone, *models], "models (and the backbone)"
        )
        self.modes = models
        self.num_modes = len(models)
        self.curves, self.curve_checks = {}, {}

    # Curves ------------------------------------------------------------

    def _resolve_pairs(self, pairs) -> list:
        if len(self.modes) < 2:
            raise ValueError(
                "Curves join two modes: call `fit_modes` or `set_modes` "
                f"with at least 2 modes first (have {len(self.modes)})."
            )
        count = len(self.modes)
        if pairs is None:
            return [(0, j) for j in range(1, count)]
        if pairs == "all":
            return list(itertools.combinations(range(count), 2))
        resolved = []
        for pair in pairs:
            i, j = (int(p) for p in pair)
            if not (0 <= i < count and 0 <= j < count and i != j):
                raise ValueError(
                    "`pairs` must hold pairs of distinct mode indices in "
                    f"[0, {count}); received {pair!r}."
                )
            resolved.append((i, j))
        return resolved

    def fit_curves(
        self,
        data=None,
        epochs: int | None = None,
        pairs=None,
        optimizer=None,
        learning_rate: float = 1e-2,
        callbacks=None,
        validation_data=None,
        verbose="auto",
    ) -> dict:
        """Trains a curve between each pair of modes.

        Only the curve's interior control points are trained, with
        cross-entropy on the labels at one t ~ U(0, 1) per batch. Afterwards
        the network at t = 0.5 (BatchNorm recalibrated on ``data``) is
        compared with its endpoints on ``validation_data`` and a warning is
        given when it is clearly worse.

        Args:
            data: batched `tf.data.Dataset` of ``(x, y)``; defaults to the
                data given to `fit_modes`.
            epochs: defaults to the modes' epochs (shorter curve training
                gives poor midpoints).
            pairs: ``None`` for mode 0 to every other mode (the Type I
                layout), ``"all"`` for every pair, or a list of pairs.
            optimizer, callbacks, verbose: as in `fit_modes`.
            learning_rate: peak learning rate of the default optimizer;
                higher than the modes' since the interior control points
                start on the straight line, far from a good network.
            validation_data: data for the midpoint check.

        Returns:
            A dict from pair to `keras.callbacks.History`.
        """
        data = self._data_or_default(data)
        epochs = epochs or self._mode_epochs or 30
        steps = training.cardinality(data)
        histories = {}
        for pair in self._resolve_pairs(pairs):
            i, j = pair
            if self.seed is not None:
                keras.utils.set_random_seed(self.seed + 1000 + 31 * i + j)
            curve_model = conversion.to_curve_model(
                self.modes[i],
                self.modes[j],
                curve=self.curve,
                name=f"curve_{i}_{j}",
            )
            curve_model.compile(
                optimizer=training.make_optimizer(
                    optimizer, epochs, steps, learning_rate
                ),
                loss=training.classification_loss(data),
                metrics=["accuracy"],
            )
            if verbose:
                print(f"Curve {i} -> {j}")
            histories[pair] = curve_model.fit(
                training.with_random_t(data, seed=self.seed),
                epochs=epochs,
                callbacks=callbacks,
                verbose=verbose,
            )
            self.curves[pair] = curve_model
            if validation_data is not None:
                self.curve_checks[pair] = self._check_midpoint(
                    pair, validation_data, data
                )
        return histories

    def _data_or_default(self, data):
        if data is not None:
            return data
        if self._train_data is None:
            raise ValueError(
                "`data` must be given: no training data is known yet."
            )
        return self._train_data

    def _check_midpoint(self, pair, validation_data, bn_data) -> dict:
        x, y = _arrays(validation_data)
        scores = {}
        for name, t in (("start", 0.0), ("mid", 0.5), ("end", 1.0)):
            point = self.point_model(pair, t, bn_data=bn_data)
            probabilities = _softmax(point.predict(x, verbose=0))
            scores[name] = metrics_lib.accuracy(probabilities, y)
        ends = (scores["start"] + scores["end"]) / 2
        scores["gap"] = ends - scores["mid"]
        if scores["gap"] > 0.02:
            warnings.warn(
                f"The curve {pair[0]} -> {pair[1]} is poor: its midpoint's "
                f"validation accuracy {scores['mid']:.4f} is "
                f"{100 * scores['gap']:.1f} points below its endpoints' "
                "mean. Train the curve longer (as long as the modes).",
                stacklevel=3,
            )
        return scores

    def point_model(self, pair=(0, 1), t: float = 0.5, bn_data=None):
        """The curve network of ``pair`` at ``t`` as a plain model.

        Args:
            pair: the pair of mode indices of a fitted curve.
            t: float in [0, 1].
            bn_data: data to recompute BatchNorm statistics at t; defaults
                to the training data.

        Returns:
            A `keras.Model` of the backbone's architecture (logits).
        """
        pair = tuple(pair)
        if pair not in self.curves:
            raise ValueError(
                "`pair` must name a fitted curve; received "
                f"{pair!r}, fitted: {sorted(self.curves)}. Call "
                "`fit_curves` first."
            )
        data = None
        if 0.0 < t < 1.0:
            data = self._data_or_default(bn_data)
        return conversion.point_model(
            self.curves[pair], t, self.backbone, data=data
        )

    def curve_profile(
        self, data, pair=(0, 1), num_points: int = 11, bn_data=None
    ) -> "CurveProfile":
        """Accuracy and NLL along the curve (or the straight line).

        When no curve is fitted for ``pair`` yet, the straight line between
        the two modes is measured: the barrier curve training removes.
        BatchNorm statistics are recomputed at every point.

        Args:
            data: batched `tf.data.Dataset` of ``(x, y)`` to score on.
            pair: the two mode indices.
            num_points: evenly spaced t values from 0 to 1.
            bn_data: data for BatchNorm statistics (default: training data).

        Returns:
            A `CurveProfile` (printable; `.t`, `.accuracy`, `.nll`).
        """
        pair = tuple(pair)
        self._resolve_pairs([pair])
        curve_model = self.curves.get(pair)
        kind = "curve"
        if curve_model is None:
            kind = "line"
            curve_model = conversion.to_curve_model(
                self.modes[pair[0]],
                self.modes[pair[1]],
                curve=curves_lib.Bezier(1),
            )
        x, y = _arrays(data)
        bn = self._data_or_default(bn_data)
        ts = np.linspace(0.0, 1.0, num_points)
        accuracy, nll = [], []
        progress = keras.utils.Progbar(num_points, unit_name="point")
        for t in ts:
            point = conversion.point_model(
                curve_model,
                float(t),
                self.backbone,
                data=bn if 0.0 < t < 1.0 else None,
            )
            probabilities = _softmax(point.predict(x, verbose=0))
            accuracy.append(metrics_lib.accuracy(probabilities, y))
            nll.append(metrics_lib.nll(probabilities, y))
            progress.add(1)
        return CurveProfile(kind, pair, ts, np.array(accuracy), np.array(nll))


class CurveProfile:
    """Accuracy and NLL at evenly spaced points of a curve or line.

    Attributes:
        kind: ``"curve"`` (a fitted curve) or ``"line"`` (straight line).
        pair: the two mode indices.
        t: the points.
        accuracy: accuracy at each point.
        nll: negative log-likelihood at each point.
    """

    def __init__(self, kind, pair, t, accuracy, nll):
        self.kind, self.pair = kind, pair
        self.t, self.accuracy, self.nll = t, accuracy, nll

    @property
    def barrier(self) -> float:
        """Largest NLL along the path minus the mean NLL of its ends."""
        return float(self.nll.max() - (self.nll[0] + self.nll[-1]) / 2)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "pair": list(self.pair),
            "t": self.t.tolist(),
            "accuracy": self.accuracy.tolist(),
            "nll": self.nll.tolist(),
        }

    def __str__(self) -> str:
        lines = [
            f"{self.kind} {self.pair[0]} -> {self.pair[1]}: "
            f"NLL barrier {self.barrier:.4f}",
            f"{'t':>6} {'accuracy':>9} {'nll':>8}",
        ]
        for t, acc, nll in zip(self.t, self.accuracy, self.nll):
            lines.append(f"{t:6.2f} {acc:9.4f} {nll:8.4f}")
        return "\n".join(lines)

    __repr__ = __str__


def _softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype="float64")
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def _arrays(data):
    from keras_bridge.data import to_numpy

    return to_numpy(data)
