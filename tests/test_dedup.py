"""One implementation of each shared check and formula (#19 item 11)."""

import keras
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge import arguments, metrics
from keras_bridge.layers import EnsembleOutputs
from keras_bridge.layers.ensemble_outputs import mutual_information
from keras_bridge.members import BridgeMember

POSITIVE_CHECKS = {
    "temperature": lambda v: EnsembleOutputs(temperature=v).temperature,
    "learning_rate": lambda v: arguments.training_options({"learning_rate": v}),
    "max_flops": lambda v: kb.bridges.check_budget(v, 1),
}


@pytest.mark.parametrize("argument", sorted(POSITIVE_CHECKS))
def test_positive_numbers_are_checked_alike(argument):
    check = POSITIVE_CHECKS[argument]
    check(np.float32(0.5))  # NumPy scalars are numbers too
    # An infinite budget prices any head (the tuner's search space).
    unbounded = argument == "max_flops"
    if unbounded:
        assert check(float("inf")) == float("inf")
    kind = "a number" if unbounded else "a finite number"
    bad = [0, -1.0, float("nan"), True, "1"]
    for value in bad + ([] if unbounded else [float("inf")]):
        with pytest.raises(ValueError) as info:
            check(value)
        assert str(info.value) == (
            f"`{argument}` must be {kind} > 0; received {argument}={value!r}."
        )


def test_zero_is_allowed_where_it_turns_a_feature_off():
    arguments.training_options({"learning_rate": 0.1, "mixup_alpha": 0})
    with pytest.raises(ValueError, match="`mixup_alpha` must be a finite "):
        arguments.training_options({"learning_rate": 0.1, "mixup_alpha": -1})


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


def test_head_layers_and_serving_outputs_clean_names_alike():
    for member in (
        BridgeMember("type1", (0, 1), 0.5),
        BridgeMember("type2", (0, 2), "any"),
    ):
        served = kb.members.serving_name(member.name)
        assert kb.bridges.head_name(member) == "head_" + served
        assert kb.export.serving_name(member.name) == served
        assert served.isidentifier()


def test_one_feature_index_for_the_ensemble_and_its_archive(tmp_path):
    backbone = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    index = kb.backbone.feature_index(backbone, "stage2")
    assert backbone.layers[index].name == "stage2"
    ens = kb.BridgeEnsemble(backbone, feature_layer="stage2", seed=0)
    assert ens.feature_index == index


def _dense_model(units):
    inputs = keras.Input((4,))
    return keras.Model(
        inputs, keras.layers.Dense(2)(keras.layers.Dense(units)(inputs))
    )


def test_curve_layer_and_curve_model_check_architectures_alike():
    narrow, wide = _dense_model(3), _dense_model(5)
    described = (
        r"received Dense '\w+' with weight shapes \[\(4, 5\), \(5,\)\], "
        r"expected Dense '\w+' with \[\(4, 3\), \(3,\)\]\."
    )
    with pytest.raises(
        ValueError, match="`end_layer` must match.*" + described
    ):
        kb.layers.CurveLayer(narrow.layers[1], end_layer=wide.layers[1])
    with pytest.raises(
        ValueError, match="share one architecture.*" + described
    ):
        kb.curve_model.to_curve_model(narrow, wide)


def _resnet():
    return kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)


@pytest.mark.parametrize(
    "head, words",
    [
        ({"width": "a"}, "`head['width']` must be an integer >= 1"),
        ({"width": 8, "depth": -1}, "`head['depth']` must be an integer >= 0"),
        ({"slim": 0.5}, "`head['slim']` must be a finite number >= 1"),
    ],
)
def test_a_bad_head_is_named_not_reported_as_over_budget(head, words):
    with pytest.raises(ValueError) as info:
        kb.bridges.size_head(_resnet(), "stage2", 1, False, head, 0.5)
    assert str(info.value).startswith(words)


def test_a_tail_that_is_not_a_cut_is_refused_once():
    with pytest.raises(ValueError) as info:
        kb.backbone.slim_tail(_resnet(), "stage2_block1_conv1", 16)
    assert str(info.value) == (
        "The tail after `feature_layer` 'stage2_block1_conv1' cannot be "
        "rebuilt: some path from the input to the output avoids it."
    )


class _Twice(keras.layers.Layer):
    """A layer Keras cannot locate unless it is passed in."""

    def call(self, x):
        return 2 * x


def test_loading_an_unregistered_class_names_it(tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(_Twice()(x))
    backbone = keras.Model(inputs, keras.layers.Dense(3)(x))
    ens = kb.BridgeEnsemble(backbone, feature_layer="features", seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    path = str(tmp_path / "custom.keras")
    ens.save(path)
    with pytest.raises(ValueError, match="uses the class '_Twice', which is"):
        kb.BridgeEnsemble.load(path)
    loaded = kb.BridgeEnsemble.load(path, custom_objects={"_Twice": _Twice})
    assert loaded.member_names() == ["mode_0", "mode_1"]


@pytest.mark.parametrize(
    "build, argument, minimum",
    [
        (lambda v: kb.curves.Bezier(v), "degree", 1),
        (lambda v: kb.curves.PolyChain(v), "num_bends", 2),
        (lambda v: kb.layers.BridgeHead(v), "num_classes", 1),
        (lambda v: kb.layers.BridgeHead(3, width=v), "width", 1),
    ],
)
def test_counts_are_checked_alike(build, argument, minimum):
    build(np.int64(minimum))  # NumPy integers are integers too
    for value in (True, 2.5, minimum - 1):
        with pytest.raises(ValueError) as info:
            build(value)
        assert str(info.value) == (
            f"`{argument}` must be an integer >= {minimum}; received "
            f"{argument}={value!r}."
        )
