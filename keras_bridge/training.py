"""Training any network of an ensemble: seeds, optimizers, the divergence
check and fits that resume from a backup.

Each function takes plain values (models, datasets, counts) and returns
new models; none changes a model it is given.
"""

import contextlib
import math
import random

import keras
import numpy as np

from keras_bridge import compat
from keras_bridge.messages import print_msg

#: Seeds of the stages are ``seed + offset`` (+ the mode or pair index), so
#: a stage's randomness does not depend on what ran before it.
MODE_SEED_OFFSET = 0
CURVE_SEED_OFFSET = 1000
BRIDGE_SEED_OFFSET = 2000
TUNING_SEED_OFFSET = 3000
#: Data that a run's units load themselves (`keras_bridge.cluster`) are
#: loaded under ``seed + DATA_SEED_OFFSET``.
DATA_SEED_OFFSET = 4000
#: A stage whose epoch loss exceeds this multiple of its first batch's
#: has diverged (`StopOnNonFinite`).
DIVERGENCE_FACTOR = 10
#: Accuracy (or agreement) up to ``1 / num_classes`` plus this is chance.
CHANCE_MARGIN = 0.02
#: Why `predict` and `evaluate` refuse a member with a NaN or inf weight.
BROKEN_MEMBER = (
    "Its outputs would be meaningless: refit or reload the member (only "
    "code outside keras-bridge changes a member's weights)."
)


@contextlib.contextmanager
def seeded(seed, offset: int = 0):
    """Runs the block under `keras.utils.set_random_seed(seed + offset)`,
    then puts the caller's random state back, so a seeded stage is
    reproducible and leaves the user's process as it found it. A ``seed``
    of ``None`` seeds nothing.

    Restored: Python's `random`, NumPy's global generator, Keras' global
    seed and `SeedGenerator`, TensorFlow's global seed and the position
    in its sequence of operation seeds. Not restored: TensorFlow's kernel
    cache, which every `tf.random.set_seed` clears, so an eager random op
    given its own ``seed`` (``tf.random.uniform([1], seed=1)``) restarts
    its sequence afterwards, as after any `tf.random.set_seed`.

    Example:

    >>> np.random.seed(1)
    >>> with seeded(0):
    ...     inside = np.random.rand()
    >>> float(np.random.rand()) == np.random.RandomState(1).rand()
    True
    """
    if seed is None:
        yield
        return
    library_state = compat.global_random_state()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed + offset)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        compat.restore_global_random_state(library_state)


def make_optimizer(optimizer, epochs: int, steps_per_epoch, learning_rate):
    """A fresh optimizer for one training run.

    ``None`` gives Adam with a cosine decay of ``learning_rate`` to zero
    over the run. An optimizer instance is copied from its config, so one
    instance can configure several runs; a string is looked up by Keras.

    Example:

    >>> type(make_optimizer(None, 10, 17, 2e-3)).__name__
    'Adam'
    """
    if optimizer is None:
        schedule = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=epochs * steps_per_epoch
        )
        return keras.optimizers.Adam(learning_rate=schedule)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(optimizer.get_config())
    return keras.optimizers.get(optimizer)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops a stage with `FloatingPointError` when it diverges.

    Unlike `keras.callbacks.TerminateOnNaN`, which ends training quietly
    and leaves NaN weights, the error names the stage, so the caller keeps
    its state as it was. A stage diverges when a batch's loss is not
    finite, when an epoch's mean loss is more than `DIVERGENCE_FACTOR`
    times the larger of the first batch's loss and ``log(num_classes)``
    (what a uniform guess scores), or when training ends with its
    ``score`` metric (accuracy, or agreement with a teacher) at chance
    while its loss went up.

    Args:
        stage: what is being trained, e.g. ``"fit_modes (mode 2/5)"``.
        num_classes: the number of classes; None checks non-finite losses
            only.
        score: the metric checked for chance level at the end.

    Example:

    >>> check = StopOnNonFinite("fit_modes (mode 1/1)", num_classes=10)
    >>> check.on_train_batch_end(0, {"loss": 2.3})
    >>> check.on_epoch_end(0, {"loss": 4.0e6, "accuracy": 0.1})
    Traceback (most recent call last):
    ...
    FloatingPointError: fit_modes (mode 1/1): the training diverged: ...
    """

    def __init__(self, stage: str, num_classes=None, score="accuracy"):
        super().__init__()
        self.stage = stage
        self.num_classes = num_classes
        self.score = score
        self._epoch = 0
        self._reference = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"{self.stage}: the training loss became {float(loss)} at "
                f"epoch {self._epoch + 1}, batch {batch + 1}: the inputs are "
                "finite, so the training diverged. Lower the learning rate. "
                "Nothing was kept."
            )
        if self._reference is None and self.num_classes:
            self._reference = max(float(loss), math.log(self.num_classes))

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self._reference is None or loss is None:
            return
        if float(loss) > DIVERGENCE_FACTOR * self._reference:
            self._diverged(
                f"its mean loss at epoch {epoch + 1}, {float(loss):.4g}, is "
                f"over {DIVERGENCE_FACTOR}x its first batch's "
                f"({self._reference:.4g})"
            )

    def on_train_end(self, logs=None):
        logs = logs or {}
        loss, score = logs.get("loss"), logs.get(self.score)
        if self._reference is None or loss is None or score is None:
            return
        chance = 1.0 / self.num_classes + CHANCE_MARGIN
        if score <= chance and float(loss) > 1.5 * self._reference:
            self._diverged(
                f"it ended with {self.score} {float(score):.4f}, chance "
                f"level, and a loss {float(loss):.4g} above its first "
                f"batch's ({self._reference:.4g})"
            )

    def _diverged(self, why: str):
        raise FloatingPointError(
            f"{self.stage}: the training diverged: {why}. Lower the "
            "learning rate. Nothing was kept."
        )


def copy_model(model, name: str) -> keras.Model:
    """A copy of ``model`` with its own weights, equal to ``model``'s:
    training the copy leaves ``model`` as it was.

    Example:

    >>> model = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> copy = copy_model(model, "shared")
    >>> copy.name, copy.weights[0] is model.weights[0]
    ('shared', False)
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.name = name
    return copy


def check_finite_weights(
    model, stage: str, consequence: str = "Nothing was kept."
) -> None:
    """Raises `FloatingPointError` when a weight of ``model`` is not
    finite; the message ends in ``consequence``."""
    for variable in model.weights:
        value = np.asarray(variable)
        if (
            np.issubdtype(value.dtype, np.floating)
            and not np.isfinite(value).all()
        ):
            raise FloatingPointError(
                f"{stage}: the weight {variable.path!r} is not finite (NaN "
                f"or inf). {consequence}"
            )


def fit_classifier(model, data, steps, options, stage, trainer=None):
    """Compiles ``model`` for cross-entropy on integer labels and fits it.

    ``options`` holds ``epochs``, ``optimizer``, ``learning_rate``,
    ``callbacks``, ``validation_data`` and ``verbose``. With a
    `ClassifierTrainer`, ``model`` is fitted through it (same result,
    traced once for all its models). Returns the History.
    """
    if trainer is not None:
        return trainer.fit(model, data, steps, options, stage)
    _compile_classifier(model, steps, options)
    compat.build_for_fit(model, data)
    return _fit_compiled(model, data, options, stage)


def _compile_classifier(model, steps, options) -> None:
    model.compile(
        optimizer=make_optimizer(
            options["optimizer"], options["epochs"], steps,
            options["learning_rate"],
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )  # fmt: skip


def _fit_compiled(model, data, options, stage):
    history = model.fit(
        data,
        epochs=options["epochs"],
        validation_data=options.get("validation_data"),
        callbacks=[
            StopOnNonFinite(stage, int(model.outputs[0].shape[-1])),
            *(options["callbacks"] or []),
        ],
        verbose=options["verbose"],
        shuffle=False,  # the pipeline shuffles
    )
    check_finite_weights(model, stage)
    return history


class ClassifierTrainer:
    """Fits several models of one architecture, with one set of
    `fit_classifier` options, through one compiled copy.

    Keras traces a model's training and validation steps at its first
    `fit` (seconds for a small network, often most of a short run). Each
    model given to `fit` is loaded into the copy, whose optimizer starts
    from its initial state every time; the copy trains, and its weights go
    back to the model. The result is the model's own `fit_classifier`;
    only the steps are traced once (the modes of one `fit_modes` call).
    Callbacks see the copy, named as the model.

    Example:

    >>> data = keras_bridge.data.load_digits()
    >>> backbone = keras_bridge.models.plain_cnn(
    ...     data.input_shape, data.num_classes, width=0.25)
    >>> options = {"epochs": 1, "optimizer": None, "learning_rate": 2e-3,
    ...            "callbacks": None, "verbose": 0}
    >>> trainer = ClassifierTrainer()
    >>> models = [fresh_copy(backbone, f"mode_{i}") for i in range(2)]
    >>> histories = [trainer.fit(m, data.train.take(4), 4, options, "demo")
    ...              for m in models]
    >>> [h.model is m for h, m in zip(histories, models)]
    [True, True]
    """

    def __init__(self):
        self._copy = None
        self._start = None  # the optimizer's variables before training

    def fit(self, model, data, steps, options, stage):
        """`fit_classifier` of ``model``; returns its History."""
        if self._copy is None:
            self._copy = keras.models.clone_model(model)
            _compile_classifier(self._copy, steps, options)
            compat.build_for_fit(self._copy, data)
            self._start = [v.numpy() for v in self._copy.optimizer.variables]
        else:
            _assign(self._copy.optimizer.variables, self._start)
        _assign(self._copy.variables, model.variables)
        self._copy.name = model.name
        history = _fit_compiled(self._copy, data, options, stage)
        _assign(model.variables, self._copy.variables)
        history.set_model(model)
        return history


def _assign(targets, sources) -> None:
    """Gives each variable of ``targets`` the value of the variable (or
    array) at its place in ``sources``."""
    for target, source in zip(targets, sources, strict=True):
        target.assign(getattr(source, "value", source))


def frozen_layers(model, frozen: bool = False) -> list:
    """The leaf layers of ``model`` that do not train: set
    ``trainable=False`` themselves or inside a model that is (nested
    models are walked), in graph order.

    Example:

    >>> model = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> model.get_layer("stem_conv").trainable = False
    >>> [layer.name for layer in frozen_layers(model)]
    ['stem_conv']
    """
    found = []
    for layer in model.layers:
        inner = frozen or not layer.trainable
        if isinstance(layer, keras.Model):
            found += frozen_layers(layer, inner)
        elif inner and layer.weights:
            found.append(layer)
    return found


def fresh_copy(backbone, name: str) -> keras.Model:
    """A newly initialised copy of ``backbone`` to train as a mode, whose
    frozen layers (`frozen_layers`: pretrained weights, say) keep the
    backbone's weights, the same in every mode.

    Example:

    >>> backbone = keras_bridge.models.resnet(
    ...     (8, 8, 1), 10, depth=8, width=0.25)
    >>> backbone.get_layer("stem_conv").trainable = False
    >>> mode = fresh_copy(backbone, "mode_0")
    >>> kernel = lambda m: m.get_layer("stem_conv").kernel.numpy()
    >>> bool((kernel(mode) == kernel(backbone)).all())
    True
    """
    if not backbone.trainable_weights:
        raise ValueError(
            "`backbone` has no trainable weights (every layer is frozen), "
            "so its modes would all be the same network. Unfreeze at "
            "least its last layers (`layer.trainable = True`)."
        )
    model = keras.models.clone_model(backbone)
    model.name = name
    pairs = zip(frozen_layers(backbone), frozen_layers(model), strict=True)
    for source, target in pairs:
        target.set_weights(source.get_weights())
    return model


def resumable_fit(model, data, steps, options, stage, unit, trainer=None):
    """`fit_classifier` (through ``trainer``, if given), resumed from
    ``options["checkpoints"]`` (a `keras_bridge.checkpoints.Checkpoints`
    or None) as ``unit``: a unit that finished before is loaded, not
    trained again."""
    checkpoints = options.get("checkpoints")
    if options["verbose"]:
        heading = stage.split("(")[-1].rstrip(")")  # "mode 1/3"
        print_msg(heading[0].upper() + heading[1:])
    if checkpoints is None:
        return fit_classifier(model, data, steps, options, stage, trainer)
    if checkpoints.finished(unit):
        checkpoints.restore(unit, model)
        if options["verbose"]:
            print_msg(f"{unit}: finished before, loaded from the backup.")
        return checkpoints.history(unit)
    callbacks = [*(options["callbacks"] or []), *checkpoints.callbacks(unit)]
    try:
        history = fit_classifier(
            model, data, steps, {**options, "callbacks": callbacks}, stage,
            trainer,
        )  # fmt: skip
    except FloatingPointError:
        # A retry (at a lower learning rate) must not resume the divergence.
        checkpoints.discard(unit)
        raise
    checkpoints.finish(unit, model, history)
    return history
