"""Training the curves between modes, and checking their midpoints.

Each function takes plain values (models, datasets, counts) and returns
new models; none changes a model it is given.
"""

import keras
import tensorflow as tf

from keras_bridge import metrics as metrics_lib
from keras_bridge.curve_model import point_model, to_curve_model
from keras_bridge.messages import warn
from keras_bridge.metrics import softmax
from keras_bridge.training import CURVE_SEED_OFFSET, resumable_fit, seeded

#: A curve whose midpoint's validation accuracy is this much below its
#: endpoints' mean is reported as poor.
MIDPOINT_TOLERANCE = 0.02


def with_random_t(dataset, seed=None) -> tf.data.Dataset:
    """Adds one curve point t ~ U(0, 1) per batch: ``((x, t), y)``.

    Example:

    >>> data = keras_bridge.data.load_digits()
    >>> curve_ds = with_random_t(data.train, seed=0)
    >>> (x, t), y = next(iter(curve_ds))
    >>> tuple(t.shape), bool(keras.ops.all(t == t[0]))  # one t per batch
    ((64, 1), True)
    """
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def add_t(batch, draw):
        x, y = batch
        t = tf.cast(draw % (2**24), "float32") / float(2**24)
        return (x, tf.fill([tf.shape(x)[0], 1], t)), y

    return tf.data.Dataset.zip((dataset, draws)).map(add_t)


def train_curve(ends, pair, curve, data, steps, seed, options, trainer=None):
    """Trains the interior control points of a curve between the two
    models ``ends``; they are not changed. A
    `keras_bridge.training.ClassifierTrainer` given as ``trainer`` fits it
    (as it fitted other curves). Returns ``(model, history)``."""
    i, j = pair
    with seeded(seed, CURVE_SEED_OFFSET + 31 * i + j):
        curve_model = to_curve_model(*ends, curve, name=f"curve_{i}_{j}")
        history = resumable_fit(
            curve_model,
            with_random_t(data, seed=seed),
            steps,
            {**options, "validation_data": None},
            f"fit_curves (curve {i} -> {j})",
            curve_model.name,
            trainer,
        )
    return curve_model, history


def midpoint_check(pair, ends, midpoint, x, y) -> dict:
    """Validation accuracy of a curve's ends and midpoint, with a warning
    when the midpoint is clearly worse (see `MIDPOINT_TOLERANCE`)."""
    scores = {}
    for name, model in (
        ("start", ends[0]),
        ("mid", midpoint),
        ("end", ends[1]),
    ):
        logits = model.predict(x, verbose=0)
        scores[name] = metrics_lib.accuracy(softmax(logits), y)
    scores["gap"] = (scores["start"] + scores["end"]) / 2 - scores["mid"]
    if scores["gap"] > MIDPOINT_TOLERANCE:
        warn(
            f"The curve {pair[0]} -> {pair[1]} is poor: its midpoint's "
            f"validation accuracy {scores['mid']:.4f} is "
            f"{100 * scores['gap']:.1f} points below its endpoints' "
            "mean. Train the curve longer (as long as the modes).",
        )
    return scores


def curve_point(curve_model, t, template, bn_data) -> keras.Model:
    """The curve at ``t`` as a plain model, BatchNorm recalibrated on
    ``bn_data`` at interior points."""
    data = bn_data if 0.0 < t < 1.0 else None
    return point_model(curve_model, t, template, data=data)
