"""Training the modes and checking them: the ensemble's full networks.

Each function takes plain values (models, datasets, counts) and returns
new models; none changes a model it is given.
"""

import numpy as np

from keras_bridge import metrics as metrics_lib
from keras_bridge.curve_model import recalibrate_batchnorm
from keras_bridge.messages import warn
from keras_bridge.metrics import softmax
from keras_bridge.training import (
    MODE_SEED_OFFSET,
    ClassifierTrainer,
    fresh_copy,
    resumable_fit,
    seeded,
)

#: A mode whose validation accuracy is this much below its training
#: accuracy (last epoch) is reported: usually BatchNorm moving statistics
#: that lag the weights after few steps, sometimes overfitting.
MODE_GAP_TOLERANCE = 0.2


def train_mode(
    backbone, index, num_modes, data, steps, seed, options, recalibrate=True,
    trainer=None,
):  # fmt: skip
    """Trains mode ``index`` of ``num_modes``: a fresh copy of ``backbone``
    (`fresh_copy`) under the mode's own seed, resumed from
    ``options["checkpoints"]`` as the unit ``mode_<index>``, so it does not
    depend on the other modes (a cluster trains them apart). With
    ``recalibrate``, its BatchNorm statistics are then recomputed exactly
    on ``data``. A `keras_bridge.training.ClassifierTrainer` given as
    ``trainer`` fits it (as it fitted other modes). Returns ``(model,
    history)``."""
    with seeded(seed, MODE_SEED_OFFSET + index):
        model = fresh_copy(backbone, f"mode_{index}")
        stage = f"fit_modes (mode {index + 1}/{num_modes})"
        history = resumable_fit(
            model, data, steps, options, stage, model.name, trainer
        )
        if recalibrate:
            # Exact statistics for the final weights: the moving averages
            # lag them (badly after few steps), and every later stage
            # builds on the modes (curve points get the same).
            recalibrate_batchnorm(model, data)
    return model, history


def train_modes(backbone, num_modes, data, steps, seed, options):
    """Trains ``num_modes`` fresh copies of ``backbone`` (`train_mode`),
    through one `keras_bridge.training.ClassifierTrainer`.

    Returns:
        ``(modes, histories)``: new models named ``mode_<i>``.
    """
    trainer, modes, histories = ClassifierTrainer(), [], []
    for index in range(num_modes):
        model, history = train_mode(
            backbone, index, num_modes, data, steps, seed, options,
            trainer=trainer,
        )  # fmt: skip
        modes.append(model)
        histories.append(history)
    return modes, histories


def score_modes(modes, validation_data) -> list:
    """The NLL and accuracy of each mode on ``validation_data`` (batched
    ``(x, y)`` with integer labels): ``[{"nll": ..., "accuracy": ...}]``."""
    scores = []
    for model in modes:
        nll, correct, count = 0.0, 0, 0
        for x, y in validation_data:
            probabilities = softmax(model(x, training=False))
            y = np.asarray(y)
            nll += metrics_lib.nll(probabilities, y) * len(y)
            correct += int((probabilities.argmax(axis=1) == y).sum())
            count += len(y)
        scores.append({"nll": nll / count, "accuracy": correct / count})
    return scores


def mode_check(histories, val_accuracies=None) -> dict:
    """Warns of modes whose validation accuracy is more than
    `MODE_GAP_TOLERANCE` below their last training accuracy; returns the
    gaps by mode index (modes without both figures are skipped).

    Args:
        histories: the modes' `keras.callbacks.History`.
        val_accuracies: the modes' validation accuracy as they are now
            (after `fit_modes` recomputed their BatchNorm statistics);
            default each history's last ``val_accuracy``.

    Example:

    >>> history = keras.callbacks.History()
    >>> history.history = {"accuracy": [0.9], "val_accuracy": [0.88]}
    >>> mode_check([history])
    {0: 0.02}
    """
    gaps = {}
    for index, history in enumerate(histories):
        logs = getattr(history, "history", None) or {}
        val = (
            (logs.get("val_accuracy") or [None])[-1]
            if val_accuracies is None
            else val_accuracies[index]
        )
        if not logs.get("accuracy") or val is None:
            continue
        train = logs["accuracy"][-1]
        gaps[index] = round(float(train - val), 6)
        if gaps[index] > MODE_GAP_TOLERANCE:
            warn(
                f"Mode {index}'s validation accuracy {val:.4f} is far below "
                f"its training accuracy {train:.4f}, although its BatchNorm "
                "statistics were recomputed on the training data: it "
                "overfits, or the validation data differ from the training "
                "data (preprocessing, labels), and every later stage would "
                "build on it. See the FAQ, 'A mode scores much worse on "
                "validation than in training'.",
            )
    return gaps


def stop_on_broken_modes(gaps) -> None:
    """Raises `RuntimeError` when a mode of ``gaps`` (`mode_check`'s) is
    too broken to build curves and bridges on: what `fit` and
    ``keras-bridge run`` do after `fit_modes`.

    Example:

    >>> stop_on_broken_modes({0: 0.02, 1: 0.65})
    Traceback (most recent call last):
    ...
    RuntimeError: Stopped after `fit_modes`: mode 1 scores 0.65 lower ...
    """
    broken = {
        i: gap for i, gap in sorted(gaps.items()) if gap > MODE_GAP_TOLERANCE
    }
    if broken:
        described = ", ".join(
            f"mode {i} scores {g:.2f}" for i, g in broken.items()
        )
        raise RuntimeError(
            f"Stopped after `fit_modes`: {described} lower in accuracy on "
            "validation than in training (more than "
            f"{MODE_GAP_TOLERANCE}), so curves, bridges and the report "
            "would build on broken modes. Check that the validation data "
            "are preprocessed and labelled like the training data, or "
            "train longer or with more regularisation. See the FAQ, 'A "
            "mode scores much worse on validation than in training'."
        )
