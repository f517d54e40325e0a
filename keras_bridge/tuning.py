"""Tuning a bridge head with KerasTuner.

`BridgeHyperModel` is a `keras_tuner.HyperModel` over one bridge: its
head (the backbone's tail at a reduced width, or a residual conv head),
the learning rate and the mixup strength. `BridgeEnsemble.tune_bridge`
runs a search with it and installs the best head; users who want full
control run any KerasTuner tuner on it themselves.

Cost: only heads within the FLOPs budget enter the default search space
(each candidate is sized before the search, so no trial is spent on a
head that cannot be used). A head over budget from a hyperparameter
space of the user's own is refused with
`keras_tuner.errors.FailedTrialError` before any training (a failed
trial, which costs no training but counts towards ``max_trials``).
"""

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time

import keras
import keras_tuner
import numpy as np

from keras_bridge import (
    arguments,
    compat,
    curve_training,
    data_checks,
    distillation,
    plots,
    training,
)
from keras_bridge import bridges as bridges_lib
from keras_bridge import metrics as metrics_lib
from keras_bridge.checkpoints import jsonable
from keras_bridge.graph import feature_model
from keras_bridge.members import (
    DEFAULT_POINT,
    SHARED,
    BridgeMember,
    check_point,
)
from keras_bridge.messages import warn

#: The tuners `BridgeEnsemble.tune_bridge` accepts.
TUNERS = ("random", "bayesian", "hyperband")
#: What a search minimises: KL(teacher || bridge) on validation data.
OBJECTIVE = "val_kl"
#: Mixup strengths (Beta parameter) the search draws from.
MIXUP_ALPHAS = (0.0, 0.2, 0.4, 1.0)
#: Residual head depths the search draws from.
HEAD_DEPTHS = (1, 2)


def _head_config(values: dict) -> dict:
    """The `fit_bridge` ``head`` argument of a set of hyperparameters."""
    if values.get("head") == "residual":
        return {
            "width": int(values["head_width"]),
            "depth": int(values.get("head_depth") or 1),
        }
    return {"slim": values["tail_slim"]}


class BridgeHyperModel(keras_tuner.HyperModel):
    """A KerasTuner hypermodel over one bridge of a `BridgeEnsemble`.

    Each model it builds is a `keras_bridge.distillation.BridgeDistiller`
    training one fresh head against the bridge's teacher (the curve
    network at ``point``); its logs are ``kl``, ``agreement`` and their
    ``val_`` twins, so the objective is
    ``keras_tuner.Objective("val_kl", "min")``.

    Hyperparameters (named for what they change):

    - ``head``: ``"tail"`` (the backbone's layers after the feature layer,
      rebuilt at 1/``tail_slim`` width) or ``"residual"`` (a residual
      conv head of ``head_width`` channels and ``head_depth`` blocks,
      offered for the widths where two blocks fit the budget);
    - ``learning_rate``: Adam's initial learning rate (cosine decay to 0
      over the trial's epochs);
    - ``mixup_alpha``: Beta parameter of input mixup, 0 for none.

    The default choices of ``tail_slim`` and ``head_width`` hold only
    heads that fit ``max_flops``; a head over budget (from a space of your
    own) raises `keras_tuner.errors.FailedTrialError` in `fit`, before
    training.
    The ensemble is not changed until `install` is called.

    Args:
        ensemble: a `BridgeEnsemble` with fitted curves.
        data: training data (``x`` or ``(x, y)``); recalibrates the
            teacher's BatchNorm statistics (unless `fit_bridge` already
            made that curve network) and sets the steps of the
            learning-rate schedule.
        kind: ``"type1"`` or ``"type2"``.
        pair: the fitted curve; default `BridgeEnsemble.default_pair`
            (the anchor mode's first curve).
        t: the position on the curve, in [0, 1], the bridge imitates.
        max_flops: the most the head may cost, as a fraction of one
            backbone pass; default 0.12 per feature map it reads.
        trunk: ``"frozen"``, or ``"shared"`` for a Type I head on a
            shared trunk (each trial trains a fresh copy of mode
            ``pair[0]`` with the head; see `BridgeEnsemble.fit_bridge`).

    Example:

    >>> import keras_tuner
    >>> hypermodel = kb.tuning.BridgeHyperModel(ens, data.train)
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.head_cost <= 0.12  # the defaults: a head within budget
    True

    With a tuner of your own (``tuner.search(data.train,
    validation_data=data.validation, epochs=20)`` with
    ``objective=keras_tuner.Objective("val_kl", "min")``), install the
    best with ``hypermodel.install(tuner.get_best_models(1)[0])``.
    """

    def __init__(
        self,
        ensemble,
        data,
        *,
        kind: str = "type1",
        pair=None,
        t: float = DEFAULT_POINT,
        max_flops=None,
        trunk: str = "frozen",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._keras_session = compat.keras_session()  # for `build`
        point = check_point(t)
        pairs = [ensemble.default_pair() if pair is None else pair]
        pairs, _ = bridges_lib.check_request(
            kind, pairs, (point,), ensemble.curves, len(ensemble.modes),
            max_flops, trunk,
        )  # fmt: skip
        pair = ensemble.default_pair() if pair is None else pairs[0]
        self.data, self.steps_per_epoch = data_checks.checked(
            data, "data", ensemble.input_shape, ensemble.num_classes,
            "tune_bridge", False, ensemble.backbone.inputs[0].dtype,
        )  # fmt: skip
        data = self.data
        self.ensemble = ensemble
        self.member = BridgeMember(kind, pair, point, shared=trunk == "shared")
        self.max_flops = bridges_lib.check_budget(
            max_flops, len(self.member.sources)
        )
        self.teacher = ensemble.curve_points.get((pair, point))
        if self.teacher is None:
            self.teacher = curve_training.curve_point(
                ensemble.curves[pair], point, ensemble.backbone, data
            )
        # With logits: the default heads add their output to them.
        self._trunks = {
            i: feature_model(
                ensemble.modes[i],
                ensemble.feature_index,
                True,
                name=f"trunk_{i}",
            )
            for i in self.member.sources
            if i != SHARED
        }
        self._sample = next(iter(data.take(1)))
        self._sample = (
            self._sample[0] if isinstance(self._sample, tuple) else self._sample
        )[:1]
        self._costs = {}
        self.slims, self.widths, self.deep_widths = self._space()

    def cost(self, head: dict) -> float:
        """FLOPs of the head ``head`` (a `fit_bridge` ``head`` dict),
        relative to one backbone pass; ``inf`` if it cannot be built."""
        key = tuple(sorted(head.items()))
        if key not in self._costs:
            try:
                *_, cost, _ = bridges_lib.size_head(
                    self.ensemble.backbone,
                    self.ensemble.feature_layer,
                    len(self.member.sources),
                    self.member.conditioned,
                    head,
                    float("inf"),
                )
            except ValueError:
                cost = float("inf")
            self._costs[key] = cost
        return self._costs[key]

    def _space(self):
        """The tail slims and residual widths (at depth 1, and at depth 2)
        that fit the budget."""
        slims = [
            slim
            for slim in bridges_lib.TAIL_SLIMS
            if self.cost({"slim": slim}) <= self.max_flops
        ]
        channels = int(
            self.ensemble.backbone.get_layer(self.ensemble.feature_layer)
            .output.shape[-1]
        )  # fmt: skip
        widths = [
            width
            for width in bridges_lib.residual_widths(channels)
            if self.cost({"width": width, "depth": 1}) <= self.max_flops
        ]
        deep_widths = [
            width
            for width in widths
            if self.cost({"width": width, "depth": 2}) <= self.max_flops
        ]
        if not slims and not widths:
            raise ValueError(
                f"No bridge head fits `max_flops`={self.max_flops:g} (a "
                "fraction of one backbone pass). Raise `max_flops`, or "
                "choose an earlier `feature_layer`."
            )
        return slims, widths, deep_widths

    def declare(self, hp) -> dict:
        """Declares the hyperparameters on ``hp``; returns their values."""
        families = (["tail"] if self.slims else []) + (
            ["residual"] if self.widths else []
        )
        hp.Choice("head", families)
        if self.slims:
            with hp.conditional_scope("head", "tail"):
                hp.Choice("tail_slim", self.slims)
        if self.widths:
            with hp.conditional_scope("head", "residual"):
                hp.Choice("head_width", self.widths)
                if self.deep_widths:
                    with hp.conditional_scope("head_width", self.deep_widths):
                        hp.Choice("head_depth", HEAD_DEPTHS)
        hp.Float("learning_rate", 3e-4, 1e-2, sampling="log", default=6e-3)
        hp.Choice("mixup_alpha", MIXUP_ALPHAS, default=0.4)
        return hp.values

    def build(self, hp) -> keras.Model:
        """A `BridgeDistiller` with a fresh head chosen by ``hp``; its
        ``head_cost`` is the head's FLOPs relative to one backbone.

        Keras' session is the one the hypermodel was made in, whether or
        not the tuner cleared it since (KerasTuner does before each
        trial): the caller's dtype policy, logging and traceback
        settings, layer names and random seed hold in every trial and
        after the search."""
        compat.restore_keras_session(self._keras_session)
        values = self.declare(hp)
        head = _head_config(values)
        if self.member.shared:
            head["base_logits"] = False
        shared = self._shared()
        first, *_ = bridges_lib.size_head(
            self.ensemble.backbone,
            self.ensemble.feature_layer,
            len(self.member.sources),
            self.member.conditioned,
            head,
            float("inf"),
            name=bridges_lib.head_name(self.member),
        )
        distiller = self._distiller(first, shared, values["mixup_alpha"])
        distiller.head_cost = self.cost(head)
        return distiller

    def _distiller(self, head, shared, mixup_alpha=0.0):
        distiller = distillation.BridgeDistiller(
            self._trunks,
            [
                {
                    "head": head,
                    "sources": self.member.sources,
                    "teachers": [self.teacher],
                    "points": [self.member.point],
                }
            ],
            mixup_alpha=mixup_alpha,
            shared=shared,
        )
        distiller(self._sample)  # builds the head before weights load
        return distiller

    def validation_kl(self, model, validation_data) -> float:
        """The KL of ``model``'s head (a distiller from `build`) to its
        teacher on ``validation_data``: the search's objective."""
        if not model.compiled:  # a head fitted before: never trained here
            model.compile(optimizer="adam", jit_compile=False)
        logs = model.evaluate(validation_data, verbose=0, return_dict=True)
        return float(logs["kl"])

    def _fitted(self):
        """A distiller of the bridge fitted before (`fit_bridge`), if
        any, to compare the search's best with."""
        head = self.ensemble.bridges.get(self.member)
        if head is None:
            return None
        shared = None
        if self.member.shared:
            network = self.ensemble.shared
            trunk = feature_model(
                network, self.ensemble.feature_index, True, name="trunk_fit"
            )
            shared = {
                "trunk": trunk,
                "teacher": self.ensemble.modes[self.member.pair[0]],
                "network": network,
            }
        return self._distiller(head, shared)

    def _shared(self):
        """A fresh shared trunk for one trial (the distiller's ``shared``
        argument), or None."""
        if not self.member.shared:
            return None
        source = self.ensemble.modes[self.member.pair[0]]
        network = training.copy_model(source, SHARED)
        trunk = feature_model(
            network, self.ensemble.feature_index, True, name="trunk_shared"
        )
        return {"trunk": trunk, "teacher": source, "network": network}

    def fit(self, hp, model, *args, **kwargs):
        """Compiles ``model`` for the trial's epochs and trains it; a head
        over budget is refused first (`FailedTrialError`)."""
        cost = getattr(model, "head_cost", 0.0)
        if cost > self.max_flops:
            raise keras_tuner.errors.FailedTrialError(
                f"The head {_head_config(hp.values)} costs {cost:.3f}x of "
                f"one backbone pass, over `max_flops`={self.max_flops:g}."
            )
        epochs = kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0)
        model.compile(
            optimizer=training.make_optimizer(
                None, max(epochs, 1), self.steps_per_epoch,
                hp.get("learning_rate"),
            ),
            jit_compile=False,
        )  # fmt: skip
        compat.build_for_fit(model, args[0] if args else kwargs.get("x"))
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(
            training.StopOnNonFinite(
                "tune_bridge", self.ensemble.num_classes, "agreement"
            )
        )
        kwargs["shuffle"] = False  # datasets come shuffled
        return model.fit(*args, callbacks=callbacks, **kwargs)

    def _is_installed(self, model) -> bool:
        """Whether ``model``'s head (and shared trunk) is the ensemble's
        bridge already: same config and learned weights (a search resumed
        after it installed its best head finds that head again). The
        BatchNorm statistics are left out: `install` recomputes a shared
        trunk's."""
        head = self.ensemble.bridges.get(self.member)
        pairs = [(head, model.heads[0])]
        if model.shared_network is not None:
            pairs.append((self.ensemble.shared, model.shared_network))
        for current, new in pairs:
            if current is None or _plain(current) != _plain(new):
                return False
            mine, theirs = _learned(current), _learned(new)
            if len(mine) != len(theirs) or not all(
                np.array_equal(a, b) for a, b in zip(mine, theirs)
            ):
                return False
        return True

    def install(self, model, validation_data=None) -> bool:
        """Makes the head of ``model`` (built by this hypermodel, e.g.
        ``tuner.get_best_models(1)[0]``) the ensemble's bridge.

        With ``validation_data`` (``x`` batches), a bridge fitted before
        is kept, with a warning, when its validation KL to the teacher is
        no higher than the new head's. Returns whether ``model``'s head
        was installed."""
        heads = getattr(model, "heads", None)
        if not heads or heads[0].name != bridges_lib.head_name(self.member):
            raise ValueError(
                "`model` must be a model built by this hypermodel (a "
                "BridgeDistiller of the bridge "
                f"{self.member.name!r}); received {model!r}."
            )
        training.check_finite_weights(heads[0], "tune_bridge")
        if self._is_installed(model):  # a finished search, resumed
            return True
        fitted = None if validation_data is None else self._fitted()
        if fitted is not None:
            old = self.validation_kl(fitted, validation_data)
            new = self.validation_kl(model, validation_data)
            if old <= new:
                warn(
                    f"`tune_bridge` kept the bridge {self.member.name!r} "
                    f"fitted before: its validation KL {old:.4f} is no "
                    f"higher than the best tuned head's ({new:.4f}).",
                )
                return False
        network = model.shared_network
        if network is not None:
            spec = {"head": heads[0], "sources": self.member.sources}
            bridges_lib.recalibrate_shared(
                model.shared_trunk, [{**spec, "points": [self.member.point]}],
                self.data,
            )  # fmt: skip
            training.check_finite_weights(network, "tune_bridge")
        self.ensemble.install_bridge(
            self.member, heads[0], self.teacher, network
        )
        return True


def _plain(model):
    """``model``'s config as JSON reads it back (a saved and loaded
    model's shapes are lists, a built one's tuples)."""
    return json.loads(json.dumps(model.get_config(), default=jsonable))


def _learned(model) -> list:
    """``model``'s weights without BatchNorm's moving statistics."""
    return [
        np.asarray(variable)
        for variable in model.weights
        if variable.name not in ("moving_mean", "moving_variance")
    ]


@dataclasses.dataclass
class TuningResult:
    """What `BridgeEnsemble.tune_bridge` found.

    Attributes:
        member: the name of the tuned bridge.
        pair: its curve (train the other curves' bridges with
            ``pairs=[p for p in ens.curves if p != result.pair]``).
        trials: one dict per trial: ``trial_id``, ``status``
            (``"COMPLETED"``, ``"FAILED"``, ...), ``hyperparameters``,
            ``flops`` (the head's cost relative to one backbone pass),
            ``epochs``, ``val_kl`` (best epoch) and ``val_agreement`` (at
            that epoch).
        pareto: the completed trials no other completed trial beats on
            both FLOPs and val KL, by increasing FLOPs.
        best: the best trial.
        installed: whether the best trial's head was installed; False
            when a bridge fitted before scored a validation KL no higher
            (it was kept).
        fit_kwargs: the best hyperparameters as `fit_bridge` keyword
            arguments (``head``, its budget ``max_flops`` included,
            ``learning_rate`` and ``mixup_alpha``), to train other
            bridges the same way.
        seconds: wall time of the search.

    Example:

    >>> result = TuningResult("type1_0-1_r0.5", (0, 1), [], [], {}, {}, 0.0)
    >>> result.completed
    []
    """

    member: str
    pair: tuple
    trials: list
    pareto: list
    best: dict
    fit_kwargs: dict
    seconds: float
    installed: bool = True

    @property
    def completed(self) -> list:
        """The trials that trained to the end."""
        return [t for t in self.trials if t["status"] == "COMPLETED"]

    def plot(self, path=None, ax=None):
        """The Pareto front of FLOPs vs val KL (`keras_bridge.plots.pareto`);
        saved as a PNG when ``path`` is given."""
        return plots.pareto(self.trials, self.pareto, path=path, ax=ax)

    def __str__(self) -> str:
        lines = [
            f"Tuning of {self.member}: {len(self.completed)} of "
            f"{len(self.trials)} trials completed in {self.seconds:.0f} s",
            f"{'trial':>6} {'status':>10} {'FLOPs':>6} {'val KL':>8} "
            f"{'agree':>6}  hyperparameters",
        ]
        for trial in self.trials:
            mark = "*" if trial is self.best else " "
            lines.append(
                f"{trial['trial_id']:>5}{mark} {trial['status']:>10} "
                f"{_fmt(trial['flops'], '{:.3f}')} "
                f"{_fmt(trial['val_kl'], '{:8.4f}')} "
                f"{_fmt(trial['val_agreement'], '{:6.4f}')}  "
                f"{trial['hyperparameters']}"
            )
        return "\n".join(lines)

    __repr__ = __str__


def _fmt(value, spec) -> str:
    return "-" if value is None else spec.format(value)


def _trial_row(trial, hypermodel, epochs) -> dict:
    values = dict(trial.hyperparameters.values)
    epochs = values.pop("tuner/epochs", epochs)
    for key in [k for k in values if k.startswith("tuner/")]:
        values.pop(key)
    row = {
        "trial_id": trial.trial_id,
        "status": str(trial.status),
        "hyperparameters": values,
        "flops": None,
        "epochs": epochs,
        "val_kl": None,
        "val_agreement": None,
    }
    if "head" in values:
        cost = hypermodel.cost(_head_config(values))
        row["flops"] = None if np.isinf(cost) else float(cost)
    if trial.status == "COMPLETED" and trial.metrics.exists(OBJECTIVE):
        step = trial.metrics.get_best_step(OBJECTIVE)
        row["val_kl"] = float(trial.metrics.get_best_value(OBJECTIVE))
        if trial.metrics.exists("val_agreement"):
            for observation in trial.metrics.get_history("val_agreement"):
                if observation.step == step:
                    row["val_agreement"] = float(observation.mean())
    if trial.message and row["status"] != "COMPLETED":
        row["message"] = trial.message.strip().splitlines()[-1]
    return row


def _tuner(name, hypermodel, max_trials, epochs, directory, options):
    common = {
        "objective": keras_tuner.Objective(OBJECTIVE, "min"),
        "directory": directory,
        "project_name": hypermodel.member.name.replace("@", "_at_"),
        "max_consecutive_failed_trials": max_trials,
        "distribution_strategy": options.pop("strategy", None),
        **options,
    }
    if name == "hyperband":
        tuner = keras_tuner.Hyperband(
            hypermodel, max_epochs=epochs, hyperband_iterations=None,
            **common,
        )  # fmt: skip
        # Hyperband takes no trial cap: its budget is the epochs of
        # `max_trials` full-length trials.
        tuner.oracle.max_trials = hyperband_trials(
            tuner.oracle, max_trials * epochs
        )
        return tuner
    search = {
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
    }[name]
    return search(hypermodel, max_trials=max_trials, **common)


def hyperband_trials(oracle, budget: int) -> int:
    """How many trials a Hyperband oracle runs, in its order (brackets
    from the most aggressive, rounds of successive halving, a trial that
    continues another training only its extra epochs), before its trials
    have trained ``budget`` epochs in all; at least one."""
    spent, trials = 0, 0
    brackets = compat.hyperband_brackets(oracle)
    while True:
        for rounds in reversed(brackets):
            start = 0
            for epochs, size in rounds:
                for _ in range(size):
                    if spent + epochs - start > budget:
                        return max(trials, 1)
                    spent, trials = spent + epochs - start, trials + 1
                start = epochs


def check_search(tuner, max_trials, epochs, directory, overwrite) -> None:
    """Validates the search arguments of `BridgeEnsemble.tune_bridge`."""
    if tuner not in TUNERS:
        raise ValueError(
            f"`tuner` must be one of {TUNERS}; received tuner={tuner!r}."
        )
    arguments.positive_int(max_trials, "max_trials")
    arguments.positive_int(epochs, "epochs")
    if directory is not None and os.path.isfile(directory):
        raise ValueError(
            f"`directory` must be a folder; {directory!r} is a file."
        )
    if not isinstance(overwrite, bool):
        raise ValueError(
            f"`overwrite` must be True or False; received {overwrite!r}."
        )
    if distributed_role() is not None and directory is None:
        raise ValueError(
            "KerasTuner's distributed search (KERASTUNER_TUNER_ID="
            f"{os.environ['KERASTUNER_TUNER_ID']!r}) needs `directory`: a "
            "folder the chief and every worker share, where the workers "
            "write their trials and the chief reads the best."
        )


#: KerasTuner's distributed search: the chief's address and port, and each
#: process's id (``"chief"`` for the chief, any other for a worker).
DISTRIBUTED_VARIABLES = (
    "KERASTUNER_ORACLE_IP",
    "KERASTUNER_ORACLE_PORT",
    "KERASTUNER_TUNER_ID",
)


def distributed_role():
    """``"chief"`` or ``"worker"`` in KerasTuner's distributed search
    (`DISTRIBUTED_VARIABLES` set), else None; a `ValueError` naming the
    missing variable when only some are set.

    Example:

    >>> distributed_role() is None  # no KERASTUNER_* variables here
    True
    """
    found = [name for name in DISTRIBUTED_VARIABLES if name in os.environ]
    if not found:
        return None
    missing = [name for name in DISTRIBUTED_VARIABLES if name not in found]
    if missing:
        raise ValueError(
            f"KerasTuner's distributed search needs {missing} as well as "
            f"{found}: set all of {list(DISTRIBUTED_VARIABLES)} (see "
            "docs/tuning.md), or none."
        )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def search(hypermodel, data, validation_data, options):
    """Runs a KerasTuner search over ``hypermodel``'s bridge.

    In KerasTuner's distributed search (`distributed_role`), the chief
    hands out trials and waits for them, and the workers train them,
    writing into the shared ``directory``; then the chief returns the
    result and a worker returns ``(None, None)``.

    Args:
        hypermodel: a `BridgeHyperModel`.
        data, validation_data: checked, batched datasets.
        options: ``tuner``, ``max_trials``, ``epochs``, ``directory``,
            ``overwrite``, ``seed``, ``verbose`` and ``callbacks`` of
            `BridgeEnsemble.tune_bridge` (each trial trains with deep
            copies of the callbacks, as KerasTuner does).

    Returns:
        ``(result, model)``: the `TuningResult` and the best trial's
        trained distiller (its head is the best head), not yet installed.

    Raises:
        RuntimeError: when no trial completed.
    """
    directory = options["directory"]
    role = distributed_role()
    temporary = directory is None
    if temporary:
        directory = tempfile.mkdtemp(prefix="tune_bridge-")
    verbose = options["verbose"]
    epochs = options["epochs"]
    try:
        with training.seeded(options["seed"]), _keeps_session():
            started = time.perf_counter()
            found = _tuner(
                options["tuner"], hypermodel, options["max_trials"], epochs,
                directory, {"overwrite": options["overwrite"],
                            "seed": options["seed"],
                            "strategy": options.get("strategy")},
            )  # fmt: skip
            verbosity = 1 if verbose == "auto" else int(verbose)
            if role == "chief":  # it hands out trials and trains none
                compat.serve_oracle(found, verbosity)
            else:
                found.search(
                    data, validation_data=validation_data, epochs=epochs,
                    verbose=verbosity,
                    callbacks=list(options.get("callbacks") or []),
                )  # fmt: skip
            if role == "worker":  # the chief has the results
                return None, None
            seconds = time.perf_counter() - started
            trials = [
                _trial_row(trial, hypermodel, epochs)
                for trial in sorted(
                    found.oracle.trials.values(), key=lambda t: int(t.trial_id)
                )
            ]
            best_trials = found.oracle.get_best_trials(1)
            if not best_trials:
                reasons = {t.get("message") for t in trials} - {None}
                raise RuntimeError(
                    f"No trial of the search completed ({len(trials)} tried): "
                    f"{'; '.join(sorted(reasons)) or 'no trial ran'}."
                )
            model = found.load_model(best_trials[0])
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    best = next(t for t in trials if t["trial_id"] == best_trials[0].trial_id)
    return _result(hypermodel, trials, best, seconds), model


@contextlib.contextmanager
def _keeps_session():
    """Puts back Keras' session when the block ends, even if a trial's
    build failed after KerasTuner cleared it."""
    session = compat.keras_session()
    try:
        yield
    finally:
        compat.restore_keras_session(session)


def _result(hypermodel, trials, best, seconds) -> TuningResult:
    values = best["hyperparameters"]
    return TuningResult(
        member=hypermodel.member.name,
        pair=hypermodel.member.pair,
        trials=trials,
        pareto=metrics_lib.pareto_front(trials),
        best=best,
        fit_kwargs={
            "head": {
                **_head_config(values),
                "max_flops": hypermodel.max_flops,
            },
            "learning_rate": float(values["learning_rate"]),
            "mixup_alpha": float(values["mixup_alpha"]),
        },
        seconds=seconds,
    )
