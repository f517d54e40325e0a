"""One implementation of each shared check and formula (#19 item 11)."""

import keras
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge import inputs, metrics
from keras_bridge.layers import EnsembleOutputs
from keras_bridge.layers.ensemble_outputs import mutual_information

POSITIVE_CHECKS = {
    "temperature": lambda v: EnsembleOutputs(temperature=v).temperature,
    "max_flops": lambda v: kb.bridges.check_budget(v, 1),
    "learning_rate": lambda v: inputs.training_options({"learning_rate": v}),
}


@pytest.mark.parametrize("argument", sorted(POSITIVE_CHECKS))
def test_positive_numbers_are_checked_alike(argument):
    check = POSITIVE_CHECKS[argument]
    check(np.float32(0.5))  # NumPy scalars are numbers too
    for value in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError) as info:
            check(value)
        assert str(info.value) == (
            f"`{argument}` must be a finite number > 0; received "
            f"{argument}={value!r}."
        )


def test_zero_is_allowed_where_it_turns_a_feature_off():
    inputs.training_options({"learning_rate": 0.1, "mixup_alpha": 0})
    with pytest.raises(ValueError, match="`mixup_alpha` must be a finite "):
        inputs.training_options({"learning_rate": 0.1, "mixup_alpha": -1})


def test_mutual_information_is_one_formula_for_layer_and_report():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3, 16, 5))  # members, batch, classes
    members = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    members = members.transpose(1, 0, 2)  # batch, members, classes
    expected = metrics.entropy(members.mean(axis=1)) - metrics.entropy(
        members
    ).mean(axis=1)
    got = keras.ops.convert_to_numpy(mutual_information(members))
    assert got.dtype == np.float64  # the report's precision is kept
    np.testing.assert_allclose(got, expected, atol=1e-6)
    layer = EnsembleOutputs()([z.astype("float32") for z in logits])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer["mutual_information"]),
        expected,
        atol=1e-6,
    )
