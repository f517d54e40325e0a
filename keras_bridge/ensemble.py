"""`BridgeEnsemble`: the facade that owns an ensemble's state.

The flow is one way: train modes -> train curves -> distil bridges ->
build the inference graph -> export. Each step is done by a module that
takes plain values and returns new ones (`training`, `bridges`,
`inference`, `evaluation`, `export`, `saving`); only this class holds the
state, and it changes it only when a step has succeeded.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_bridge import (
    arguments,
    curve_training,
    data_checks,
    evaluation,
    mode_training,
    training,
)
from keras_bridge import backbone as backbone_lib
from keras_bridge import bridges as bridges_lib
from keras_bridge import curves as curves_lib
from keras_bridge import metrics as metrics_lib
from keras_bridge.backbone import prepare_backbone, resolve_feature_layer
from keras_bridge.checkpoints import Checkpoints
from keras_bridge.curve_model import (
    batchnorm_layers,
    check_same_architecture,
)
from keras_bridge.curve_points import CurvePoints
from keras_bridge.ensemble_fit import FitMixin
from keras_bridge.ensemble_reports import ReportsMixin
from keras_bridge.ensemble_saving import SavingMixin
from keras_bridge.inference import build_inference_model
from keras_bridge.members import (
    SHARED,
    ModeMember,
    check_point,
    resolve,
    resolve_pairs,
)
from keras_bridge.messages import print_msg, warn

#: `BridgeEnsemble.calibrate` warns below this many examples.
MIN_CALIBRATION_SIZE = 100


class BridgeEnsemble(FitMixin, ReportsMixin, SavingMixin):
    """A deep ensemble whose extra members are cheap bridge networks.

    Holds ``num_modes`` independently trained copies of a backbone (the
    modes), low-loss curves in weight space between pairs of modes, and
    bridges: small heads that predict a curve network from a feature map
    the modes already computed. A call that fails leaves the ensemble as
    it was, and no call changes a model it was given.

    Args:
        backbone: a functional (or Sequential) `keras.Model` from inputs to
            logits ``(batch, num_classes)``, used as an architecture (its
            weights are not trained). A trailing softmax is removed.
        feature_layer: the layer whose output the bridges read; ``None``
            picks the end of the stage before the last (see
            `keras_bridge.backbone.resolve_feature_layer`).
        num_modes: number of independently trained full networks.
        seed: seed of all training, or ``None`` for a random start.
        curve: a `keras_bridge.curves.Curve` or ``"bezier"`` /
            ``"polychain"``.
        strategy: a `tf.distribute.Strategy` every training runs under
            (e.g. `tf.distribute.MirroredStrategy` over several GPUs);
            ``None`` for the one entered with ``strategy.scope()`` around
            the calls, if any. Batches are global: each replica gets
            ``batch_size / num_replicas_in_sync`` examples.

    Example:

    >>> data = keras_bridge.data.load_digits()
    >>> backbone = keras_bridge.models.plain_cnn(
    ...     data.input_shape, data.num_classes, width=0.25)
    >>> ens = BridgeEnsemble(backbone, num_modes=2, seed=0)
    >>> _ = ens.fit_modes(data.train, epochs=1, verbose=0)  # 20+ for real
    >>> _ = ens.fit_curves(data.train, verbose=0)
    >>> _ = ens.fit_bridge(data.train, kind="type1", epochs=1, verbose=0)
    >>> report = ens.evaluate(data.test)
    >>> [row["name"] for row in report.rows][:4]
    ['mode 0', 'mode 1', 'DE-1', 'DE-2']
    """

    def __init__(
        self,
        backbone,
        feature_layer=None,
        num_modes=2,
        seed=None,
        curve="bezier",
        strategy=None,
    ):
        if strategy is not None and not isinstance(
            strategy, tf.distribute.Strategy
        ):
            raise ValueError(
                "`strategy` must be a `tf.distribute.Strategy` or None; "
                f"received strategy={strategy!r}."
            )
        self.strategy = strategy
        self.num_modes = arguments.positive_int(num_modes, "num_modes")
        if seed is not None:
            seed = arguments.positive_int(seed, "seed", minimum=0)
        self.backbone = prepare_backbone(backbone)
        self.feature_layer = resolve_feature_layer(self.backbone, feature_layer)
        self.seed = seed
        self.curve = curves_lib.get(curve)
        self.modes: list = []
        self.curves: dict = {}
        self.curve_checks: dict = {}
        self.bridges: dict = {}  # BridgeMember -> head, in fitting order
        self.shared = None  # the shared trunk's network (trunk="shared")
        self.temperature = 1.0
        self.mode_epochs = None
        self.mode_checks: dict = {}  # mode -> train minus validation acc.
        self.anchor = 0  # the mode of "Single + k Type I"
        self._points = CurvePoints()  # (pair, t) -> curve network at t
        self._predictors: dict = {}

    def _scope(self):
        """The scope training runs in: `strategy`'s, else the ambient
        one (a `strategy.scope()` the caller entered, or none)."""
        strategy = self.strategy or tf.distribute.get_strategy()
        return strategy.scope()

    @property
    def anchor(self) -> int:
        """The mode of "Single" and of "Single + k Type I": the index of
        the mode Type I bridges extend (by default the best mode on
        validation NLL after `fit_modes`). Set it to pick another mode;
        it must index a mode."""
        return self._anchor

    @anchor.setter
    def anchor(self, value) -> None:
        modes = len(self.modes)
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, np.integer))
            or not 0 <= value < max(modes, 1)
        ):
            raise ValueError(
                "`anchor` must be the index of a mode, an integer in "
                f"[0, {max(modes, 1)}); received anchor={value!r}"
                + (" (the ensemble has no modes yet)." if not modes else ".")
            )
        self._anchor = int(value)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.backbone.inputs[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.backbone.outputs[0].shape[-1])

    @property
    def feature_index(self) -> int:
        """Position of the feature layer in the backbone's layers."""
        return backbone_lib.feature_index(self.backbone, self.feature_layer)

    @property
    def curve_points(self) -> CurvePoints:
        """The curve networks made so far, by ``(pair, t)``: the teachers
        of the bridges, and the points `point_model` returns without
        ``bn_data``. Saved with the ensemble (a point as its BatchNorm
        statistics, rebuilt when first looked up after `load`: a
        `keras_bridge.curve_points.CurvePoints`); a curve fitted again
        drops its points. Do not train them: bridges share them."""
        return self._points

    @curve_points.setter
    def curve_points(self, points) -> None:
        self._points = CurvePoints(points)

    @property
    def _dtype(self):
        return self.backbone.inputs[0].dtype

    def _data(self, data, argument, stage, needs_labels=True):
        return data_checks.checked(
            data, argument, self.input_shape, self.num_classes, stage,
            needs_labels, self._dtype,
        )  # fmt: skip

    def _arrays(self, data, argument, stage):
        return data_checks.arrays(
            data, argument, self.input_shape, self.num_classes, stage,
            self._dtype,
        )  # fmt: skip

    def _prepare(self, stage, data, validation_data, labels, **options):
        """Checks a training call's data and counts before anything runs:
        ``(data, steps per epoch, options)``."""
        arguments.positive_int(options["epochs"], "epochs")
        arguments.training_options(options)
        backup_dir = options.pop("backup_dir", None)
        options["checkpoints"] = (
            None if backup_dir is None else Checkpoints(backup_dir)
        )
        data, steps = self._data(data, "data", stage, labels)
        if validation_data is not None:
            validation_data, _ = self._data(
                validation_data, "validation_data", stage, labels
            )
        return data, steps, {**options, "validation_data": validation_data}

    # Modes -------------------------------------------------------------

    def fit_modes(
        self,
        data,
        *,
        epochs: int = 30,
        validation_data=None,
        optimizer=None,
        learning_rate: float = 2e-3,
        callbacks=None,
        verbose="auto",
        backup_dir=None,
    ) -> list:
        """Trains ``num_modes`` independently initialised backbones.

        Each mode is a fresh copy of the backbone (seeded by ``seed + i``)
        trained with `keras.Model.fit` on cross-entropy, so callbacks and
        the progress bar work as usual. The new modes replace the old ones,
        and with them every curve and bridge, only once all have trained.
        After training, each mode's BatchNorm statistics are recomputed
        exactly on ``data`` (the moving averages lag the final weights).
        With ``validation_data``, the mode with the lowest validation NLL
        becomes the `anchor`: the "Single" network that Type I bridges
        extend (else mode 0), and a mode whose validation accuracy is far
        below its training accuracy is warned of and listed in
        ``mode_checks`` (gaps by mode; see
        `keras_bridge.mode_training.MODE_GAP_TOLERANCE`): `fit` and
        ``keras-bridge run`` stop there rather than build on it.

        Args:
            data: a batched `tf.data.Dataset` of ``(x, y)`` or NumPy
                arrays ``(x, y)``; integer or one-hot labels.
            epochs: epochs per mode.
            validation_data: like ``data``; passed to `fit`.
            optimizer: ``None`` for Adam with cosine decay of
                ``learning_rate`` to 0 over the run; an optimizer (copied
                per mode) or name, as `keras.Model.compile` takes it.
            learning_rate: peak learning rate of the default optimizer
                (the decay is sized to the run, so it stays an argument;
                an ``optimizer`` given carries its own).
            callbacks: Keras callbacks, used for every mode. The modes
                train through one compiled copy
                (`keras_bridge.training.ClassifierTrainer`: Keras traces
                the training step once), so a callback's ``model`` is
                that copy, named as the mode it trains.
            verbose: passed to `fit`.
            backup_dir: a folder for checkpoints after every epoch (see
                `keras_bridge.checkpoints`): the same call repeated after
                a kill loads the modes that finished and resumes the
                interrupted one from its last epoch.

        Returns:
            A list of `keras.callbacks.History`, one per training run
            (`keras.Model.fit` call), in order: here one per mode. Every
            ``fit*`` method returns such a list.
        """
        data, steps, options = self._prepare(
            "fit_modes", data, validation_data, True, epochs=epochs,
            optimizer=optimizer, learning_rate=learning_rate,
            callbacks=callbacks, verbose=verbose, backup_dir=backup_dir,
        )  # fmt: skip
        with self._scope():
            modes, histories = mode_training.train_modes(
                self.backbone, self.num_modes, data, steps, self.seed, options
            )
        anchor, checks = 0, {}
        if validation_data is not None:
            scores = mode_training.score_modes(
                modes, options["validation_data"]
            )
            checks = mode_training.mode_check(
                histories, [score["accuracy"] for score in scores]
            )
            anchor = int(np.argmin([score["nll"] for score in scores]))
            if verbose:
                print_msg(f"Anchor: mode {anchor}, the best on validation NLL.")
        self._replace_modes(modes)
        self.mode_epochs, self.anchor = epochs, anchor
        self.mode_checks = checks
        return histories

    def set_modes(self, models) -> None:
        """Uses copies of already-trained models as the modes.

        Args:
            models: a list of at least one functional model of the
                backbone's architecture, outputting logits. They are
                copied: later changes to them do not reach the ensemble.
                `num_modes` becomes their number; curves and bridges are
                dropped.
        """
        if not isinstance(models, (list, tuple)) or not models:
            raise ValueError(
                "`models` must be a non-empty list of trained models of the "
                f"backbone's architecture; received {models!r}."
            )
        models = [prepare_backbone(model) for model in models]
        check_same_architecture(
            [self.backbone, *models], "models (and the backbone)"
        )
        copies = [
            training.copy_model(model, f"mode_{index}")
            for index, model in enumerate(models)
        ]
        self._replace_modes(copies)
        self.mode_epochs, self.anchor = None, 0

    def _check_finite(self, stage, consequence="Nothing was kept.") -> None:
        """Refuses a mode, shared trunk or head with a NaN or inf weight
        (`keras_bridge.training.check_finite_weights`)."""
        shared = [] if self.shared is None else [self.shared]
        for model in [*self.modes, *shared, *self.bridges.values()]:
            training.check_finite_weights(model, stage, consequence)

    def _adopt(self, other) -> None:
        """Takes the state of ``other``, an ensemble of the same backbone
        (e.g. loaded from a run's checkpoint)."""
        check_same_architecture(
            [self.backbone, other.backbone], "the run's saved backbone"
        )
        if other.feature_layer != self.feature_layer:
            raise ValueError(
                "The run's saved ensemble reads the feature layer "
                f"{other.feature_layer!r}, this one {self.feature_layer!r}: "
                "use a new `run_dir`."
            )
        for key in (
            "modes", "num_modes", "curves", "curve_checks", "bridges",
            "shared", "temperature", "mode_epochs", "anchor", "curve_points",
        ):  # fmt: skip
            setattr(self, key, getattr(other, key))
        self._predictors = {}

    def _replace_modes(self, modes) -> None:
        self.modes, self.num_modes = modes, len(modes)
        self.mode_checks = {}
        self.curves, self.curve_checks, self.bridges = {}, {}, {}
        self.shared = None
        self._points, self._predictors = CurvePoints(), {}
        self.temperature = 1.0

    # Curves ------------------------------------------------------------

    def _pairs(self, pairs, argument="pairs") -> list:
        return resolve_pairs(pairs, len(self.modes), argument, self.anchor)

    def fit_curves(
        self,
        data,
        *,
        epochs: int | None = None,
        pairs=None,
        optimizer=None,
        learning_rate: float = 1e-2,
        callbacks=None,
        validation_data=None,
        verbose="auto",
        backup_dir=None,
    ) -> dict:
        """Trains a curve between each pair of modes.

        Only the interior control points train, with cross-entropy at one
        t ~ U(0, 1) per batch. With ``validation_data``, each curve's
        midpoint (BatchNorm recalibrated on ``data``) is compared with its
        ends and a warning is given when it is clearly worse. A curve
        fitted again replaces the old one and drops, with a warning, the
        bridges that imitated it.

        Args:
            data: training data, as in `fit_modes`.
            epochs: default: the modes' epochs (shorter gives poor
                midpoints), or 30.
            pairs: ``None`` for the `anchor` mode to every other mode
                (the Type I layout), ``"all"`` for every pair, or a list
                of pairs.
            optimizer, callbacks, verbose: as in `fit_modes`.
            learning_rate: peak learning rate of the default optimizer.
            validation_data: labelled data for the midpoint check.
            backup_dir: as in `fit_modes`, per curve.

        Returns:
            A list of `keras.callbacks.History`, one per curve, in the
            order of ``pairs`` (as in `fit_modes`).
        """
        pairs = self._pairs(pairs)
        epochs = (self.mode_epochs or 30) if epochs is None else epochs
        data, steps, options = self._prepare(
            "fit_curves", data, None, True, epochs=epochs,
            optimizer=optimizer, learning_rate=learning_rate,
            callbacks=callbacks, verbose=verbose, backup_dir=backup_dir,
        )  # fmt: skip
        checks = validation_data is not None
        if checks:
            x, y = self._arrays(
                validation_data, "validation_data", "fit_curves"
            )
        curves, points, scores, histories = {}, {}, {}, {}
        trainer = training.ClassifierTrainer()  # the curves: one trace
        for pair in pairs:
            ends = [self.modes[i] for i in pair]
            with self._scope():
                curves[pair], histories[pair] = curve_training.train_curve(
                    ends, pair, self.curve, data, steps, self.seed, options,
                    trainer,
                )  # fmt: skip
            if checks:
                points[(pair, 0.5)] = curve_training.curve_point(
                    curves[pair], 0.5, self.backbone, data
                )
                scores[pair] = curve_training.midpoint_check(
                    pair, ends, points[(pair, 0.5)], x, y
                )
        self._drop_dependents(curves)
        self.curves.update(curves)
        self.curve_checks.update(scores)
        self._points.update(points)
        return [histories[pair] for pair in pairs]

    def _drop_dependents(self, pairs) -> None:
        dropped = [b.name for b in self.bridges if b.pair in pairs]
        if dropped:
            warn(
                f"Refitting the curves {sorted(pairs)} drops the bridges "
                f"trained against the old curves: {dropped}.",
            )
        self.bridges = {
            b: h for b, h in self.bridges.items() if b.pair not in pairs
        }
        self._points = self._points.without_pairs(pairs)
        self.curve_checks = {
            k: v for k, v in self.curve_checks.items() if k not in pairs
        }
        self._predictors = {}

    def _curve(self, pair):
        pair = self._pairs([pair], "pair")[0]
        if pair not in self.curves:
            raise ValueError(
                f"`pair` must name a fitted curve; received {pair!r}, "
                f"fitted: {sorted(self.curves)}. Call `fit_curves` first."
            )
        return pair

    def default_pair(self) -> tuple:
        """The curve a call reads when it is given no ``pair``
        (`point_model`, `curve_profile`, `tune_bridge`, `fit`'s Type II
        bridge): the `anchor` mode's first fitted curve, else the first
        fitted curve; with no curve fitted yet, the anchor and the first
        other mode (whose straight line `curve_profile` measures).

        Example:

        >>> backbone = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
        >>> kb.BridgeEnsemble(backbone, num_modes=3).default_pair()
        (0, 1)
        """
        own = [p for p in sorted(self.curves) if p[0] == self.anchor]
        fitted = own or sorted(self.curves)
        if fitted:
            return fitted[0]
        return (self.anchor, 1 if self.anchor == 0 else 0)

    def point_model(self, pair=None, t: float = 0.5, *, bn_data=None):
        """The curve network of ``pair`` at position ``t`` as a plain model.

        ``pair`` and ``t`` say which network, so they may be passed by
        position; ``bn_data`` is keyword-only.

        Args:
            pair: the pair of mode indices of a fitted curve; default
                `default_pair`.
            t: the position on the curve, a float in [0, 1].
            bn_data: data to recompute BatchNorm statistics at ``t``.
                Needed for an interior point that no earlier call has
                made (the ensemble keeps no training data).

        Returns:
            A `keras.Model` of the backbone's architecture (logits). A
            cached point is shared: do not train it.
        """
        pair = self._curve(self.default_pair() if pair is None else pair)
        t = check_point(t, "t")
        key = (pair, t)
        if bn_data is None and key in self._points:
            return self._points[key]
        if bn_data is None and 0 < t < 1 and batchnorm_layers(self.backbone):
            raise ValueError(
                f"`bn_data` must be given: the curve {pair} at t={t:g} "
                "needs data to recompute its BatchNorm statistics."
            )
        if bn_data is not None:
            bn_data, _ = self._data(bn_data, "bn_data", "point_model", False)
        return curve_training.curve_point(
            self.curves[pair], t, self.backbone, bn_data
        )

    # Bridges -----------------------------------------------------------

    def member_names(self) -> list:
        """All members in their fixed order: modes, the shared trunk's
        network (if fitted), then bridges.

        Modes are ``"mode_0"`` ...; the shared network ``"shared"``;
        bridges ``"{kind}_{i}-{j}_r{t}"``, t the position on the curve
        of modes i and j they imitate or ``any`` (the letter ``r`` is
        kept from version 0.3 so that saved names do not change;
        ``"shared_type1_..."`` on the shared trunk), in the order they
        were fitted (see `keras_bridge.members`).
        """
        names = [ModeMember(i).name for i in range(len(self.modes))]
        names += [SHARED] if self.shared is not None else []
        return names + [bridge.name for bridge in self.bridges]

    def members(self, names=None) -> list:
        """The typed members called ``names`` (default: all), checked."""
        if not self.modes:
            raise ValueError(
                "The ensemble has no members yet: call `fit_modes` or "
                "`set_modes` first."
            )
        names = self.member_names() if names is None else names
        return resolve(
            names, len(self.modes), self.bridges, self.shared is not None
        )

    def fit_bridge(
        self,
        data,
        *,
        kind: str = "type1",
        pairs=None,
        t=0.5,
        head=None,
        trunk="frozen",
        epochs: int = 30,
        validation_data=None,
        optimizer=None,
        learning_rate: float = 6e-3,
        mixup_alpha: float = 0.4,
        augmentation=None,
        keep_best=False,
        callbacks=None,
        verbose="auto",
        backup_dir=None,
    ) -> list:
        """Trains bridges that imitate curve networks from mode features.

        For each fitted curve in ``pairs`` and each position ``t`` on it,
        a head learns to predict the curve network at t (its teacher) from
        the feature map of mode ``pair[0]`` (``kind="type1"``) or of both
        modes (``"type2"``), as a correction added to that mode's logits
        (the mean of both for Type II; see
        `keras_bridge.layers.BaseBridgeHead`, ``base_logits``). A teacher
        is BatchNorm-recalibrated on ``data``, unless an earlier call
        already made that network (then it is reused, so all bridges of
        one position share one teacher). Loss:
        KL(teacher || bridge) on mixup batches; labels are not used. The
        bridges of one call train together through `keras.Model.fit`, so
        callbacks work; logs are ``loss``, ``kl`` and ``agreement`` (with
        the teacher's top-1) and their ``val_`` twins. Modes and teachers
        are never changed, and checkpoints hold the heads only (and a
        shared trunk, below).

        With ``trunk="shared"`` (Type I only), the heads do not read a
        mode's frozen features: one trunk, a copy of the mode's network
        (``pair[0]``, the anchor by default), trains with every head of
        the call, each head distilling its teacher while the copy's own
        tail keeps distilling the mode (the "Hydra" layout). The copy
        becomes the member ``"shared"`` and its heads the members
        ``"shared_type1_..."``: "Shared trunk + k Type I" in the report,
        beside the modes' rows. Such heads predict logits from scratch
        unless ``head`` sets ``base_logits``. A later shared call
        replaces the shared trunk and its heads.

        Args:
            data: training data, ``x`` only or ``(x, y)``.
            kind: ``"type1"`` or ``"type2"``.
            pairs: fitted curves to bridge; default all of them.
            t: the position on the curve each bridge imitates, a float in
                [0, 1]; a list of them for one bridge per position and
                curve; or ``"any"`` for one t-conditioned head per curve.
            head: the head and its budget: a
                `keras_bridge.bridges.HeadSpec` or a dict of its fields
                (``slim``, ``width``, ``depth``, ``base_logits``,
                ``max_flops``); None for ``HeadSpec()``, the backbone's
                tail at the widest reduced width within 0.12 of a
                backbone pass per feature map read (Single + 4 Type I <=
                1.48x). A head over budget is refused with its cost. Or a
                fresh head layer, held to the default budget (its own
                ``base_logits`` applies: False unless it was built with
                True).
            trunk: ``"frozen"`` (heads read the modes' own features) or
                ``"shared"`` (see above).
            epochs: training epochs.
            validation_data: data for ``val_kl`` and ``val_agreement``.
            optimizer, learning_rate, callbacks, verbose: as in
                `fit_modes`.
            mixup_alpha: Beta parameter of input mixup; 0 turns it off.
            augmentation: None, or a Keras layer applied to each training
                batch before mixup (teacher and student see the same
                inputs), e.g. ``keras.Sequential([keras.layers.
                RandomTranslation(0.1, 0.1)])``.
            keep_best: keep the weights of the epoch with the lowest
                ``val_kl`` (``val_loss`` with a shared trunk, which also
                counts its own tail's KL to the anchor; needs
                ``validation_data``), as the paper's training does.
            backup_dir: as in `fit_modes`, for this call's bridges.

        Returns:
            A list of `keras.callbacks.History`, as in `fit_modes`: here
            one, as the bridges of one call train together.

        Example:

        >>> (history,) = ens.fit_bridge(data.train, kind="type1", epochs=2,
        ...     head={"max_flops": 0.12}, validation_data=data.validation,
        ...     verbose=0, callbacks=[keras.callbacks.EarlyStopping(
        ...         monitor="val_kl", mode="min", patience=5)])
        >>> sorted(history.history)
        ['agreement', 'kl', 'loss', 'val_agreement', 'val_kl', 'val_loss']
        """
        if trunk == "shared" and pairs is None:
            # One trunk, copied from one mode: the anchor's curves.
            own = [p for p in sorted(self.curves) if p[0] == self.anchor]
            pairs = own or None
        head = bridges_lib.HeadSpec.get(head)
        max_flops = None
        if isinstance(head, bridges_lib.HeadSpec):
            head, max_flops = head.architecture(), head.max_flops
        pairs, points = bridges_lib.check_request(
            kind, pairs, t, self.curves, len(self.modes), max_flops, trunk
        )
        if augmentation is not None and not isinstance(
            augmentation, keras.layers.Layer
        ):
            raise ValueError(
                "`augmentation` must be None or a Keras layer (e.g. "
                "`keras.layers.RandomTranslation`); received "
                f"augmentation={augmentation!r}."
            )
        if keep_best and validation_data is None:
            raise ValueError(
                "`keep_best=True` keeps the epoch of the lowest `val_kl`: "
                "pass `validation_data`."
            )
        data, steps, options = self._prepare(
            "fit_bridge", data, validation_data, False, epochs=epochs,
            optimizer=optimizer, learning_rate=learning_rate,
            callbacks=callbacks, verbose=verbose, mixup_alpha=mixup_alpha,
            backup_dir=backup_dir, augmentation=augmentation,
            keep_best=bool(keep_best),
        )  # fmt: skip
        with training.seeded(self.seed, training.BRIDGE_SEED_OFFSET):
            teachers = {}

            def teacher(pair, t):
                if (pair, t) in self._points:
                    return self._points[(pair, t)]
                if (pair, t) not in teachers:
                    teachers[(pair, t)] = curve_training.curve_point(
                        self.curves[pair], t, self.backbone, data
                    )
                return teachers[(pair, t)]

            sizing = {"head": head, "max_flops": max_flops, "trunk": trunk}
            with self._scope():
                new, specs, (cost, what) = bridges_lib.plan(
                    kind, pairs, points, sizing, self.backbone,
                    self.feature_layer, teacher,
                )  # fmt: skip
                if trunk == "shared":
                    source = self.modes[pairs[0][0]]
                    options["shared"] = {
                        "network": training.copy_model(source, SHARED),
                        "teacher": source,
                    }
            self._check_new_bridges(new)
            if verbose:
                print_msg(
                    f"Training {len(new)} {kind} bridge(s): "
                    f"{[b.name for b in new]}; head: {what}, {cost:.3f}x of "
                    "one backbone pass"
                    + (
                        f"; trunk: a copy of mode {pairs[0][0]}, trained with "
                        "the heads."
                        if trunk == "shared"
                        else "."
                    )
                )
            with self._scope():
                history = bridges_lib.distill(
                    self.modes, self.feature_index, specs, data, steps, options
                )
        self._points.update(teachers)
        if trunk == "shared":
            self._replace_shared(options["shared"]["network"], new)
        self._add_bridges(new)
        return [history]

    def _replace_shared(self, network, new) -> None:
        """Installs a new shared trunk; drops the heads of the old one."""
        dropped = [b.name for b in self.bridges if b.shared and b not in new]
        if dropped:
            warn(
                "`fit_bridge(trunk='shared')` trained a new shared trunk; "
                f"the heads of the old one are dropped: {dropped}.",
            )
        self.bridges = {b: h for b, h in self.bridges.items() if not b.shared}
        self.shared = network

    def _check_new_bridges(self, new) -> None:
        taken = {h.name: b for b, h in self.bridges.items() if b not in new}
        for head in new.values():
            if head.name in taken:
                raise ValueError(
                    f"`head` is named {head.name!r} like the head of bridge "
                    f"{taken[head.name].name!r}; give it another name."
                )

    def _add_bridges(self, new, stage="fit_bridge") -> None:
        """Installs the trained heads ``new``; says which it replaced."""
        replaced = [b.name for b in new if b in self.bridges]
        self.bridges.update(new)
        self._predictors = {}
        if replaced:
            warn(
                f"`{stage}` replaced the bridges {replaced} that were "
                "already fitted.",
            )

    def tune_bridge(
        self,
        data,
        validation_data,
        *,
        kind: str = "type1",
        pair=None,
        tuner: str = "hyperband",
        max_trials: int = 10,
        epochs: int = 20,
        max_flops=None,
        directory=None,
        overwrite: bool = False,
        verbose="auto",
        trunk: str = "frozen",
        callbacks=None,
    ):
        """Searches the head of one bridge with KerasTuner; installs the best.

        The bridge of ``pair`` at t = 0.5 is trained as in `fit_bridge`
        once per trial, with the head, learning rate and mixup strength of
        `keras_bridge.tuning.BridgeHyperModel`; the objective is
        ``val_kl`` (minimised). Only heads within ``max_flops`` are
        searched. The best completed trial's head becomes the ensemble's
        bridge; a bridge fitted before is replaced only when the tuned
        head has a lower validation KL, else it is kept (a warning says
        which, and ``result.installed`` is False). If the search fails,
        the ensemble is unchanged.

        ``validation_data`` is required, so it may be passed by position
        as the second data argument (as ``y`` in `keras.Model.evaluate`);
        every other argument is keyword-only.

        Args:
            data: training data, ``x`` only or ``(x, y)``.
            validation_data: data the objective is measured on.
            kind: ``"type1"`` or ``"type2"``.
            pair: a fitted curve; default the anchor mode's first curve.
            tuner: ``"hyperband"``, ``"random"`` or ``"bayesian"``.
            max_trials: the most trials to run (``"random"``,
                ``"bayesian"``). Hyperband runs many short trials and
                continues the best: it stops when its trials have trained
                as many epochs as ``max_trials`` full-length trials.
            epochs: epochs of a trial (Hyperband: of its longest trials).
            max_flops: the most the head may cost, as a fraction of one
                backbone pass; default 0.12 per feature map it reads. It
                bounds the search, so it is an argument here; ``fit_kwargs``
                pass it on inside ``head`` (see `fit_bridge`).
            directory: where KerasTuner keeps its trials; ``None`` for a
                temporary folder removed afterwards. With a folder and
                ``overwrite=False``, an earlier search there is resumed.
                Required in a distributed search (below): a folder the
                chief and every worker share.
            overwrite: start the search in ``directory`` afresh.
            verbose: KerasTuner's and `fit`'s verbosity.
            trunk: ``"frozen"``, or ``"shared"``: each trial trains the
                head with a fresh shared trunk (see `fit_bridge`), and
                the best installs both (replacing an earlier shared
                trunk and its heads). ``fit_kwargs`` do not hold it:
                pass ``trunk="shared"`` with them.
            callbacks: a list of `keras.callbacks.Callback` for every
                trial's `fit`, passed to the KerasTuner search (e.g.
                ``keras.callbacks.EarlyStopping(monitor="val_kl")``). As
                in KerasTuner, each trial gets a deep copy of them, so
                keep what must outlast a trial outside the callback
                object (a class attribute, a file).

        Returns:
            A `keras_bridge.tuning.TuningResult`: ``.trials``, ``.pareto``,
            ``.best`` and ``.fit_kwargs`` (to train other bridges alike).
            None on a worker of a distributed search.

        Distributed search: run the same script in several processes (on
        one machine or several), each with KerasTuner's environment
        variables ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``
        (the chief's address) and ``KERASTUNER_TUNER_ID`` (``"chief"``
        for one process, ``"tuner0"``, ``"tuner1"``, ... for the others).
        The chief hands out the trials and waits; the workers train them.
        When the search ends, the chief installs the best head and
        returns the result; each worker returns None and leaves its
        ensemble as it was. See docs/tuning.md.

        Example:

        >>> result = ens.tune_bridge(data.train, data.validation,
        ...     tuner="random", max_trials=1, epochs=1, verbose=0)
        >>> result.best["flops"] <= 0.12
        True
        """
        # KerasTuner loads only when a search runs, not with the ensemble.
        from keras_bridge import tuning

        tuning.check_search(tuner, max_trials, epochs, directory, overwrite)
        arguments.check_callbacks(callbacks)
        if validation_data is None:
            raise ValueError(
                "`validation_data` is required: the search minimises the "
                "bridge's KL to its teacher on it."
            )
        validation_data, _ = self._data(
            validation_data, "validation_data", "tune_bridge", False
        )
        with self._scope():
            hypermodel = tuning.BridgeHyperModel(
                self, data, kind=kind, pair=pair, max_flops=max_flops,
                trunk=trunk,
            )  # fmt: skip
        seed = self.seed
        result, model = tuning.search(
            hypermodel, hypermodel.data, validation_data,
            {"tuner": tuner, "max_trials": max_trials, "epochs": epochs,
             "directory": directory, "overwrite": overwrite,
             "seed": None if seed is None
             else seed + training.TUNING_SEED_OFFSET,
             "verbose": verbose, "strategy": self.strategy,
             "callbacks": callbacks},
        )  # fmt: skip
        if result is None:  # a worker of a distributed search
            return None
        result.installed = hypermodel.install(model, validation_data)
        return result

    def install_bridge(self, member, head, teacher, shared=None) -> None:
        """Makes ``head`` the bridge ``member``, a trained head from
        outside `fit_bridge` (e.g. `keras_bridge.tuning.BridgeHyperModel`'s
        `install` after a search of your own).

        A bridge ``member`` fitted before is replaced, with a warning.

        Args:
            member: a `keras_bridge.members.BridgeMember` of a fitted curve.
            head: the trained head (named unlike the other bridges' heads).
            teacher: the curve network it imitates; it becomes
                ``curve_points[(member.pair, member.point)]``.
            shared: for a head on a new shared trunk, the trunk's network:
                it replaces the shared trunk and the heads of the old one.
        """
        self._check_new_bridges({member: head})
        self._points[(member.pair, member.point)] = teacher
        if shared is not None:
            self._replace_shared(shared, {member: head})
        self._add_bridges({member: head}, "tune_bridge")

    # Inference ---------------------------------------------------------

    def inference_model(self, members=None, *, temperature=None) -> keras.Model:
        """One `keras.Model` from the backbone's input to the outputs.

        Outputs, by name: ``probabilities`` (temperature-scaled mean of
        the members' probabilities), ``class_ids``,
        ``member_probabilities`` (batch, members, classes) in the order of
        ``members``, ``predictive_entropy`` and ``mutual_information``.
        Every trunk runs once; bridges read its feature map.

        Args:
            members: member names (see `member_names`); default all.
            temperature: default the ensemble's `temperature`.
        """
        if temperature is None:
            temperature = self.temperature
        else:
            temperature = arguments.positive_float(temperature, "temperature")
        return build_inference_model(
            self.modes,
            self.feature_index,
            self.members(members),
            self.bridges,
            temperature,
            self.shared,
        )

    def predict(
        self, x, *, members=None, batch_size=None, verbose="auto"
    ) -> dict:
        """The serving outputs for ``x`` as a dict of NumPy arrays.

        Takes inputs as `keras.Model.predict` does: an array (batched
        here) or a batched `tf.data.Dataset`. Inputs are checked first
        (shape, finite values) and so are the members' weights.

        Args:
            x: a NumPy array or tensor of inputs of shape
                ``(batch, *input_shape)``, or a finite, batched
                `tf.data.Dataset` of ``x`` or ``(x, y)`` batches (labels
                are ignored; the dataset is read twice, once to check it).
            members: member names (see `member_names`); default all.
            batch_size: inputs per batch for an array; default 32, as in
                Keras. Leave it ``None`` for a dataset, which makes its own
                batches.
            verbose: 0 (silent), 1 or ``"auto"`` (a progress bar) or 2
                (one line when done), passed to `keras.Model.predict`.

        Returns:
            A dict of NumPy arrays, one row per input: ``probabilities``,
            ``class_ids``, ``member_probabilities``,
            ``predictive_entropy`` and ``mutual_information`` (see
            `inference_model`).

        Example:

        >>> outputs = ens.predict(x_test, verbose=0)
        >>> outputs["probabilities"].shape
        (360, 10)
        >>> batches = tf.data.Dataset.from_tensor_slices(x_test).batch(64)
        >>> ens.predict(batches, verbose=0)["class_ids"].shape
        (360,)
        """
        x, batch_size = self._prediction_inputs(x, batch_size)
        names = tuple(m.name for m in self.members(members))
        key = (names, self.temperature)
        if key not in self._predictors:
            self._predictors[key] = self.inference_model(list(names))
        # Every call: a member's weights may have been changed since.
        training.check_finite_weights(
            self._predictors[key], "predict", training.BROKEN_MEMBER
        )
        return self._predictors[key].predict(
            x, batch_size=batch_size, verbose=verbose
        )

    def _prediction_inputs(self, x, batch_size):
        """``(x, batch_size)`` checked for `predict`: an array of the
        ensemble's dtype and a batch size, or a checked dataset of inputs
        and ``None``."""
        if not isinstance(x, tf.data.Dataset):
            if batch_size is None:
                batch_size = data_checks.DEFAULT_BATCH_SIZE
            batch_size = arguments.positive_int(batch_size, "batch_size")
            x = data_checks.check_x(x, self.input_shape, dtype=self._dtype)
            return x, batch_size
        if batch_size is not None:
            raise ValueError(
                "`batch_size` must be None when `x` is a `tf.data.Dataset`, "
                "which makes its own batches; received "
                f"batch_size={batch_size!r}. Batch the dataset instead, "
                "e.g. `x.batch(32)`."
            )
        spec = x.element_spec
        if isinstance(spec, tuple) and len(spec) == 2:
            x = x.map(lambda features, labels: features)  # labels ignored
        x, _ = self._data(x, "x", "predict", needs_labels=False)
        return x, None

    def calibrate(self, data, *, members=None) -> float:
        """Fits, sets and returns `temperature`: the minimiser of the NLL
        of the ensemble of ``members`` on labelled ``data``, read once,
        batch by batch (only the probabilities are kept).

        Warns when ``data`` holds fewer than `MIN_CALIBRATION_SIZE`
        examples, or when the temperature found is at a bound of the
        search (`keras_bridge.metrics.TEMPERATURE_BOUNDS`): then it is
        not a fitted value but where the search stopped, usually because
        the data are too few or the ensemble is right (or wrong) on all
        of them.

        Example:

        >>> temperature = ens.calibrate(data.validation)
        >>> temperature == ens.temperature, 0.05 < temperature < 20
        (True, True)
        """
        data, _ = self._data(data, "data", "calibrate")
        model = self.inference_model(members, temperature=1.0)
        # Streamed: only the probabilities (N x C) are kept.
        found = evaluation.predict_outputs(
            data,
            {"probs": evaluation.batch_predictor(model, "probabilities")},
        )
        y = found["labels"]
        temperature = metrics_lib.fit_temperature(found["probs"], y)
        problems = []
        if len(y) < MIN_CALIBRATION_SIZE:
            problems.append(
                f"it was fitted on {len(y)} examples (fewer than "
                f"{MIN_CALIBRATION_SIZE})"
            )
        low, high = metrics_lib.TEMPERATURE_BOUNDS
        if not low * 1.01 < temperature < high / 1.01:
            problems.append(
                f"it is at a bound of the search [{low:g}, {high:g}]"
            )
        if problems:
            warn(
                f"The temperature {temperature:.4g} is unreliable: "
                + " and ".join(problems)
                + ". Calibrate on a larger held-out set (a few hundred "
                "examples or more).",
            )
        self.temperature = temperature
        return self.temperature
