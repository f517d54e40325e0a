"""Training helpers: optimizers, losses, per-batch curve points."""

import keras
import tensorflow as tf


def cardinality(dataset) -> int | None:
    """Number of batches of a `tf.data.Dataset`, or None when unknown."""
    if isinstance(dataset, tf.data.Dataset):
        count = int(dataset.cardinality())
        return count if count > 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def make_optimizer(optimizer, epochs: int, steps_per_epoch, learning_rate):
    """A fresh optimizer for one training run.

    ``None`` gives Adam with a cosine decay of ``learning_rate`` to zero
    over the run (constant when the number of steps is unknown). An
    optimizer instance is copied from its config, so one instance can
    configure several runs; a string is looked up by Keras.
    """
    if optimizer is None:
        schedule = learning_rate
        if steps_per_epoch:
            schedule = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=epochs * steps_per_epoch
            )
        return keras.optimizers.Adam(learning_rate=schedule)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(optimizer.get_config())
    return keras.optimizers.get(optimizer)


def compile_classifier(model, data, optimizer, epochs, learning_rate):
    """Compiles ``model`` for cross-entropy training on ``data``.

    The optimizer comes from `make_optimizer` (a fresh one per model), the
    loss from `classification_loss`, and accuracy is logged.

    Example:

    >>> compile_classifier(model, train_ds, None, 30, 2e-3)
    """
    model.compile(
        optimizer=make_optimizer(
            optimizer, epochs, cardinality(data), learning_rate
        ),
        loss=classification_loss(data),
        metrics=["accuracy"],
    )
    return model


def classification_loss(dataset):
    """Cross-entropy on logits matching the label format of the data."""
    spec = dataset.element_spec
    label_spec = spec[1] if isinstance(spec, tuple) else None
    if (
        label_spec is not None
        and len(label_spec.shape) == 2
        and (label_spec.shape[-1] not in (None, 1))
    ):
        return keras.losses.CategoricalCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def with_random_t(dataset, seed=None) -> tf.data.Dataset:
    """Adds one curve point t ~ U(0, 1) per batch: ``((x, t), y)``.

    Example:

    >>> curve_ds = with_random_t(train_ds, seed=0)
    """
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def add_t(batch, draw):
        x, y = batch
        t = tf.cast(draw % (2**24), "float32") / float(2**24)
        return (x, tf.fill([tf.shape(x)[0], 1], t)), y

    return tf.data.Dataset.zip((dataset, draws)).map(add_t)


def with_fixed_t(dataset, t: float) -> tf.data.Dataset:
    """Adds the same curve point t to every batch: ``((x, t), y)``."""

    def add_t(x, y):
        return (x, tf.fill([tf.shape(x)[0], 1], float(t))), y

    return dataset.map(add_t)
