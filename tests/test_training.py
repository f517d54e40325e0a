"""`ClassifierTrainer`: several models fitted through one traced step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_bridge import training

OPTIONS = {
    "epochs": 2, "optimizer": None, "learning_rate": 1e-2,
    "callbacks": None, "verbose": 0,
}  # fmt: skip


def _net(seed):
    """Dropout (a seed state), BatchNormalization (moving statistics) and
    a frozen layer: every kind of weight a mode has."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="frozen", trainable=False)(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name=f"net_{seed}")


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def _weights(model):
    return [np.array(v) for v in model.variables]


def _fit_alone(model, data, callbacks):
    """What `fit_classifier` computes, as plain Keras on ``model``."""
    model.compile(
        optimizer=training.make_optimizer(None, 2, 3, 1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    model.fit(data, epochs=2, callbacks=callbacks, verbose=0, shuffle=False)


def test_a_trainer_gives_each_model_its_own_fit_and_traces_once():
    data, seen = _data(), []

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append((self.model.name, self.model.train_function))

    alone = []
    for seed in (1, 2):
        model = _net(seed)
        _fit_alone(model, data, [])
        alone.append(_weights(model))

    options = {**OPTIONS, "callbacks": [Steps()]}
    trainer, models, histories = training.ClassifierTrainer(), [], []
    for seed in (1, 2):
        models.append(_net(seed))
        histories.append(trainer.fit(models[-1], data, 3, options, "shared"))
    # Each model got the weights of its own plain fit, to the bit: the
    # optimizer restarted, the seed state and statistics came from each
    # model ...
    for model, expected in zip(models, alone):
        for value, variable in zip(expected, model.variables):
            np.testing.assert_array_equal(value, variable)
    # ... the callbacks and histories name each model, and the second fit
    # ran the first one's traced step.
    names, steps = zip(*seen)
    assert names == ("net_1", "net_2")
    assert steps[0] is steps[1]
    assert [h.model for h in histories] == models
    assert all(len(h.history["loss"]) == 2 for h in histories)
    kernels = [model.layers[2].kernel for model in models]
    assert not np.allclose(*kernels)  # two models, two results


def test_a_model_that_diverges_in_a_trainer_is_refused_and_kept():
    data = _data().map(lambda x, y: (x * np.float32("inf"), y))
    trainer = training.ClassifierTrainer()
    model = _net(3)
    before = _weights(model)
    with pytest.raises(FloatingPointError, match=r"fit_modes \(mode 1/2\)"):
        trainer.fit(model, data, 3, OPTIONS, "fit_modes (mode 1/2)")
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, variable)
    # The trainer starts the next model afresh: its own plain fit.
    model, expected = _net(1), _net(1)
    trainer.fit(model, _data(), 3, OPTIONS, "after a failure")
    _fit_alone(expected, _data(), [])
    for value, variable in zip(_weights(expected), model.variables):
        np.testing.assert_array_equal(value, variable)
