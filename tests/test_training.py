"""`ClassifierTrainer`: several models fitted through one traced step."""

import collections

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


@pytest.fixture
def kept(monkeypatch):
    """No compiled copy kept from other tests."""
    monkeypatch.setattr(training, "_KEPT", collections.OrderedDict())


def test_a_trainer_gives_each_model_its_own_fit_and_traces_once(kept):
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

    # A later call (a new trainer) reuses the kept copy: the same step.
    model = _net(3)
    training.fit_classifier(model, data, 3, options, "later")
    assert seen[-1][1] is steps[0]
    # Other options (here the learning rate) compile another copy.
    other = {**options, "learning_rate": 5e-3}
    training.fit_classifier(_net(4), data, 3, other, "other options")
    assert seen[-1][1] is not steps[0]


def test_a_large_model_gets_a_copy_per_trainer(kept, monkeypatch):
    monkeypatch.setattr(training, "KEPT_MAX_PARAMETERS", 10)
    data, seen = _data(), []

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.model.train_function)

    options = {**OPTIONS, "epochs": 1, "callbacks": [Steps()]}
    trainer = training.ClassifierTrainer()
    for seed in (1, 2):
        trainer.fit(_net(seed), data, 3, options, "one call")
    training.fit_classifier(_net(3), data, 3, options, "another call")
    assert seen[0] is seen[1] and seen[2] is not seen[0]
    assert not training._KEPT


def test_a_model_that_diverges_in_a_trainer_is_refused_and_kept():
    data = _data().map(lambda x, y: (x * np.float32("inf"), y))
    trainer = training.ClassifierTrainer()
    model = _net(3)
    before = _weights(model)
    with pytest.raises(FloatingPointError, match=r"fit_modes \(mode 1/2\)"):
        trainer.fit(model, data, 3, OPTIONS, "fit_modes (mode 1/2)")
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, variable)
