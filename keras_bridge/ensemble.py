"""`BridgeEnsemble`: modes, curves between them, and bridges."""

import itertools
import warnings

import keras
import numpy as np

from keras_bridge import bridges as bridges_lib
from keras_bridge import conversion, distillation, training
from keras_bridge import curves as curves_lib
from keras_bridge import metrics as metrics_lib
from keras_bridge.data import features_only
from keras_bridge.profile import CurveProfile
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
        self.bridges: dict = {}
        self.temperature: float = 1.0
        self._points: dict = {}
        self._predictors: dict = {}
        self._train_data = None
        self._mode_epochs = None

    @property
    def num_classes(self) -> int:
        return int(self.backbone.outputs[0].shape[-1])

    @property
    def feature_index(self) -> int:
        """Position of the feature layer in the backbone's layers."""
        names = [layer.name for layer in self.backbone.layers]
        return names.index(self.feature_layer)

    def _reset_downstream(self) -> None:
        self.curves, self.curve_checks = {}, {}
        self.bridges, self._points, self._predictors = {}, {}, {}
        self.temperature = 1.0

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
        self._reset_downstream()
        for index in range(self.num_modes):
            if self.seed is not None:
                keras.utils.set_random_seed(self.seed + index)
            model = keras.models.clone_model(self.backbone)
            model.name = f"mode_{index}"
            training.compile_classifier(
                model, data, optimizer, epochs, learning_rate
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
                    shuffle=False,  # the pipeline shuffles
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
        self._reset_downstream()

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
        self._train_data = data
        epochs = epochs or self._mode_epochs or 30
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
            training.compile_classifier(
                curve_model, data, optimizer, epochs, learning_rate
            )
            if verbose:
                print(f"Curve {i} -> {j}")
            histories[pair] = curve_model.fit(
                training.with_random_t(data, seed=self.seed),
                epochs=epochs,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
            )
            self.curves[pair] = curve_model
            self._points = {
                key: value
                for key, value in self._points.items()
                if key[0] != pair
            }
            if validation_data is not None:
                self.curve_checks[pair] = self._check_midpoint(
                    pair, validation_data
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

    def _check_midpoint(self, pair, validation_data) -> dict:
        x, y = _arrays(validation_data)
        scores = {}
        for name, t in (("start", 0.0), ("mid", 0.5), ("end", 1.0)):
            point = self.point_model(pair, t)
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
        key = (pair, float(t))
        if bn_data is None and key in self._points:
            return self._points[key]
        data = None
        if 0.0 < t < 1.0:
            data = self._data_or_default(bn_data)
        point = conversion.point_model(
            self.curves[pair], t, self.backbone, data=data
        )
        point.name = f"curve_{pair[0]}_{pair[1]}_t{t:g}"
        if bn_data is None:
            self._points[key] = point
        return point

    def curve_profile(
        self, data, pair=(0, 1), num_points: int = 11, bn_data=None
    ) -> CurveProfile:
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

    # Bridges -----------------------------------------------------------

    def get_bridge(self, name: str) -> bridges_lib.Bridge:
        """The bridge called ``name`` (see `member_names`)."""
        if name not in self.bridges:
            raise ValueError(
                f"`members` must name modes or fitted bridges; received "
                f"{name!r}. Known: {self.member_names()}."
            )
        return self.bridges[name]

    def member_names(self) -> list:
        """All members in their fixed order: modes, then bridges.

        Modes are ``"mode_0"`` ... ; bridges ``"{kind}_{i}-{j}_r{r}"``
        in the order they were fitted (an r-conditioned bridge,
        ``r = "any"``, is evaluated at r = 0.5 unless a member name
        asks for another point with ``"@r"``).
        """
        modes = [f"mode_{i}" for i in range(len(self.modes))]
        return modes + list(self.bridges)

    def fit_bridge(
        self,
        data=None,
        kind: str = "type1",
        pairs=None,
        points=(0.5,),
        epochs: int = 30,
        mixup_alpha: float = 0.4,
        optimizer=None,
        learning_rate: float = 2e-3,
        callbacks=None,
        validation_data=None,
        head=None,
        verbose="auto",
    ) -> keras.callbacks.History:
        """Trains bridges that imitate curve points from mode features.

        For each fitted curve in ``pairs`` and each point r, a `BridgeHead`
        learns to predict the curve network at r (its teacher, a plain
        model with BatchNorm recalibrated at r) from the feature map of
        mode ``pair[0]`` (``kind="type1"``) or of both modes
        (``kind="type2"``). Loss: KL(teacher || bridge) on a mixup batch
        that teacher and bridge both see; labels are not used. All the
        bridges of one call train together, and each mode's trunk runs
        once per step for all of them. Training goes through
        `keras.Model.fit`: Keras callbacks (EarlyStopping, ModelCheckpoint
        with ``save_weights_only=True``, BackupAndRestore, TensorBoard)
        and the progress bar work, and the logs name ``loss`` (the sum of
        the bridges' KL), ``kl`` and ``agreement`` (means over bridges;
        agreement is top-1 agreement with the teacher) and their ``val_``
        twins. Callbacks infer the direction of ``val_loss``; give
        ``mode="min"`` for ``val_kl`` and ``mode="max"`` for
        ``val_agreement``.

        Args:
            data: batched `tf.data.Dataset` of ``x`` or ``(x, y)``;
                defaults to the training data.
            kind: ``"type1"`` or ``"type2"``.
            pairs: fitted curves to bridge; default all of them.
            points: curve points r in [0, 1], or ``"any"`` for one
                r-conditioned head per curve, trained with r drawn per
                batch from 11 evenly spaced points.
            epochs: training epochs.
            mixup_alpha: Beta parameter of input mixup; 0 turns it off.
            optimizer: None for Adam with cosine decay of
                ``learning_rate``; an optimizer instance or name.
            learning_rate: peak learning rate of the default optimizer.
            callbacks: Keras callbacks.
            validation_data: data for ``val_kl`` and ``val_agreement``.
            head: None (the backbone's tail at half width), a dict of
                ``slim`` or ``width``/``depth`` (see
                `keras_bridge.bridges.make_head`), or a `BridgeHead`.
            verbose: passed to `fit`.

        Returns:
            The `keras.callbacks.History` of the training.

        Example:

        >>> ens.fit_bridge(data.train, kind="type1", epochs=30,
        ...     validation_data=data.validation,
        ...     callbacks=[keras.callbacks.EarlyStopping(patience=5)])
        """
        if kind not in bridges_lib.KINDS:
            raise ValueError(
                f"`kind` must be 'type1' or 'type2'; received kind={kind!r}."
            )
        if kind == "type2" and len(self.modes) < 2:
            raise ValueError(
                "`kind='type2'` bridges read two modes; the ensemble has "
                f"{len(self.modes)}. Train at least 2 modes first."
            )
        if not self.curves:
            raise ValueError(
                "Bridges imitate curve points: call `fit_curves` before "
                "`fit_bridge`."
            )
        points = bridges_lib.check_points(points)
        pairs = (
            sorted(self.curves)
            if pairs is None
            else [tuple(p) for p in self._resolve_pairs(pairs)]
        )
        missing = [p for p in pairs if p not in self.curves]
        if missing:
            raise ValueError(
                f"`pairs` must name fitted curves; {missing} are not "
                f"fitted (fitted: {sorted(self.curves)})."
            )
        data = self._data_or_default(data)
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed + 2000)
        new, specs = bridges_lib.plan(self, kind, pairs, points, head)
        trunks = bridges_lib.trunks_for(self, specs)
        distiller = distillation.BridgeDistiller(
            trunks, specs, mixup_alpha=mixup_alpha
        )
        # Built before `fit`, as BackupAndRestore requires.
        distiller(next(iter(features_only(data))))
        distiller.compile(
            optimizer=training.make_optimizer(
                optimizer, epochs, training.cardinality(data), learning_rate
            ),
            jit_compile=False,
        )
        history = distiller.fit(
            data,
            epochs=epochs,
            validation_data=validation_data,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
        for bridge in new:
            self.bridges[bridge.name] = bridge
        self._predictors = {}
        return history

    # Inference ---------------------------------------------------------

    def inference_model(
        self, members=None, temperature: float | None = None
    ) -> keras.Model:
        """One `keras.Model` from the backbone's input to the outputs.

        Outputs, by name: ``probabilities`` (temperature-scaled mean of
        the members' probabilities), ``class_ids``,
        ``member_probabilities`` (batch, members, classes) in the order of
        ``members``, ``predictive_entropy`` and ``mutual_information``.
        Every trunk runs once; bridges read its feature map.

        Args:
            members: member names (see `member_names`); default all.
            temperature: default the ensemble's fitted `temperature`
                (see `calibrate`).

        Returns:
            A functional `keras.Model`.
        """
        members = list(members or self.member_names())
        if not self.modes:
            raise ValueError(
                "The ensemble has no members yet: call `fit_modes` first."
            )
        for name in members:
            base, _ = bridges_lib.parse_member(name)
            if base not in self.member_names():
                self.get_bridge(base)
        temperature = self.temperature if temperature is None else temperature
        return bridges_lib.build_inference_model(self, members, temperature)

    def predict(self, x, members=None, batch_size: int = 256) -> dict:
        """The serving outputs for ``x`` as a dict of NumPy arrays.

        Example:

        >>> outputs = ens.predict(x_test)
        >>> outputs["probabilities"].shape
        (360, 10)
        """
        key = (tuple(members or self.member_names()), self.temperature)
        if key not in self._predictors:
            self._predictors[key] = self.inference_model(members)
        return self._predictors[key].predict(
            x, batch_size=batch_size, verbose=0
        )

    def calibrate(self, data, members=None) -> float:
        """Fits the temperature of the ensemble's mean on ``data``.

        Sets and returns `temperature`, the minimiser of the NLL of the
        ensemble of ``members`` on ``data``.
        """
        x, y = _arrays(data)
        model = self.inference_model(members, temperature=1.0)
        outputs = model.predict(x, batch_size=256, verbose=0)
        self.temperature = metrics_lib.fit_temperature(
            outputs["probabilities"], y
        )
        return self.temperature

    def evaluate(self, data, calibration_data=None):
        """Scores every configuration of the ensemble.

        Rows: each mode; DE-1 .. DE-M; Single + k Type I bridges;
        DE-m + n Type II bridges; Single + k curve points at full cost;
        r-conditioned bridges. See `keras_bridge.evaluation`.

        Args:
            data: test data, batched ``(x, y)``.
            calibration_data: validation data for temperature scaling;
                the ensemble's own `temperature` is fitted on it too.

        Returns:
            An `keras_bridge.evaluation.EnsembleReport`.
        """
        from keras_bridge import evaluation

        if calibration_data is not None:
            self.calibrate(calibration_data)
        return evaluation.evaluate(self, data, calibration_data)

    # Deployment --------------------------------------------------------

    def export(
        self,
        path,
        format: str = "tf_saved_model",
        members=None,
        overwrite: bool = False,
        verbose: bool = True,
    ) -> str:
        """Exports the ensemble for serving, as one multi-output model.

        ``format="tf_saved_model"`` writes a SavedModel that TF Serving
        loads: give it a version folder, ``<base>/<model_name>/<version>``.
        Its ``serving_default`` signature takes ``inputs`` (any batch
        size) and returns ``probabilities``, ``class_ids``,
        ``member_probabilities``, ``predictive_entropy`` and
        ``mutual_information``; the ``members`` signature returns each
        member's probabilities under its `keras_bridge.export.serving_name`.
        ``format="onnx"`` writes one ``.onnx`` file with the same input and
        outputs (needs ``pip install keras-bridge[onnx]``).

        Both are written to a temporary path and moved into place at the
        end: a crash never leaves a half-written version, and an existing
        one is only replaced with ``overwrite=True``.

        Args:
            path: the SavedModel's version folder or the ``.onnx`` file.
            format: ``"tf_saved_model"`` or ``"onnx"``.
            members: member names to serve (see `member_names`); default
                all, in that order.
            overwrite: replace an existing ``path``.
            verbose: print where the model was written.

        Returns:
            The absolute path written.

        Example:

        >>> ens.export("serving/digits/1")
        >>> ens.export("digits.onnx", format="onnx")
        """
        from keras_bridge import export

        return export.export(self, path, format, members, overwrite, verbose)

    def save(self, filepath, overwrite: bool = True) -> None:
        """Saves the whole ensemble to one ``.keras`` file.

        Modes, curves, bridges, the materialised curve points, the
        temperature and the metadata go into a Keras archive (written to
        a temporary file, then renamed into place).
        `BridgeEnsemble.load` reads it back with Keras' ``safe_mode``;
        `keras.saving.load_model` alone gives a model that returns the
        serving outputs.

        Args:
            filepath: path ending in ``.keras``.
            overwrite: replace an existing file.

        Example:

        >>> ens.save("ensemble.keras")
        >>> ens2 = BridgeEnsemble.load("ensemble.keras")
        """
        from keras_bridge import saving

        saving.save_ensemble(self, filepath, overwrite=overwrite)

    @classmethod
    def load(cls, filepath, safe_mode: bool = True) -> "BridgeEnsemble":
        """Loads an ensemble written by `save`.

        Args:
            filepath: the ``.keras`` file.
            safe_mode: Keras' ``safe_mode`` (no arbitrary code is run).

        Returns:
            A `BridgeEnsemble` whose predictions equal the saved one's.
        """
        from keras_bridge import saving

        return saving.load_ensemble(filepath, safe_mode=safe_mode)


def _softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype="float64")
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def _arrays(data):
    from keras_bridge.data import to_numpy

    return to_numpy(data)
