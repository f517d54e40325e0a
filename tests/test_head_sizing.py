"""Bridge heads sized to a FLOPs budget, on backbones beyond ResNet."""

import keras
import numpy as np
import pytest

import keras_bridge as kb


def _se_backbone():
    """Conv stages with squeeze-and-excite (Reshape + Multiply), a
    depthwise conv and a projected skip connection."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = keras.layers.ReLU(name="features")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.Conv2D(32, 1)(y)
    squeeze = keras.layers.GlobalAveragePooling2D()(y)
    squeeze = keras.layers.Dense(8, activation="relu")(squeeze)
    squeeze = keras.layers.Dense(32, activation="sigmoid")(squeeze)
    squeeze = keras.layers.Reshape((1, 1, 32))(squeeze)
    y = keras.layers.Multiply()([y, squeeze])
    skip = keras.layers.Conv2D(32, 1)(x)
    x = keras.layers.Add()([y, skip])
    x = keras.layers.SeparableConv2D(48, 3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(24, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x))


def test_tail_rebuild_handles_squeeze_and_excite():
    backbone = _se_backbone()
    tail = kb.backbone.slim_tail(backbone, "features", 16, slim=2)
    widths = [
        layer.get_config().get("filters") or layer.get_config().get("units")
        for layer in tail.layers
    ]
    # Hidden widths halve; the classifier keeps its 5 classes.
    assert [w for w in widths if w] == [16, 4, 16, 16, 24, 12, 5]
    x = np.random.default_rng(0).random((2, 8, 8, 16), dtype="float32")
    assert tail(x).shape == (2, 5)


def _count(head):
    """FLOPs of one pass of ``head`` as the ensemble calls it: on the
    feature map and the logits of the mode it reads."""
    inputs = [keras.Input((8, 8, 16)), keras.Input((5,))]
    outputs = head(inputs[0], logits=[inputs[1]])
    return kb.flops(keras.Model(inputs, outputs))


def test_heads_are_sized_to_the_budget():
    backbone = _se_backbone()
    base = kb.flops(backbone)
    for budget in (0.5, 0.1, 0.03):
        head, build, cost, what = kb.bridges.size_head(
            backbone, "features", 1, False, None, max_flops=budget
        )
        # The reported cost is the head's own pass, by the same counter.
        # It corrects the logits of the mode it reads (one addition).
        assert head.base_logits
        counted = _count(head)
        assert cost == pytest.approx(counted / base)
        assert cost <= budget
        # A fresh head of the same architecture, with its own weights.
        other = build()
        assert other is not head
        assert _count(other) == counted


def test_a_head_over_budget_is_refused_with_its_cost():
    backbone = _se_backbone()
    with pytest.raises(ValueError) as info:
        kb.bridges.size_head(
            backbone, "features", 1, False, {"slim": 1}, max_flops=0.01
        )
    message = str(info.value)
    assert "`max_flops`=0.01" in message
    assert "the tail at 1/1 width costs" in message
    with pytest.raises(ValueError, match="`max_flops` must be a number > 0"):
        kb.bridges.size_head(backbone, "features", 1, False, None, 0)


class _Scale(keras.layers.Layer):
    """A custom layer Keras cannot rebuild from its config."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return self.factor * x

    def get_config(self):
        return {"name": self.name}  # without `factor`: not rebuildable


def test_fallback_head_is_sized_from_the_budget():
    # The tail holds a layer that cannot be cloned: no tail is rebuilt.
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="features")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    x = _Scale(2.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    backbone = keras.Model(inputs, keras.layers.Dense(4)(x))
    head, _, cost, what = kb.bridges.size_head(
        backbone, "features", 1, False, None, max_flops=0.2
    )
    assert isinstance(head, kb.layers.BridgeHead)
    assert what.startswith("a residual head") and cost <= 0.2
    # The widest residual head that fits: doubling its width would not.
    wider = kb.layers.BridgeHead(4, width=2 * head.width, depth=head.depth)
    wider_cost = kb.bridges.head_flops(wider, (12, 12, 32), 1)
    assert head.width == 32 or wider_cost > 0.2 * kb.flops(backbone)


@pytest.mark.large
def test_mobilenet_v3_small_gets_a_head_within_budget():
    backbone = keras.applications.MobileNetV3Small(
        weights=None,
        input_shape=(32, 32, 3),
        classes=10,
        classifier_activation=None,
        include_preprocessing=False,
    )
    ens = kb.BridgeEnsemble(backbone)
    head, _, cost, what = kb.bridges.size_head(
        ens.backbone, ens.feature_layer, 1, False, None, None
    )
    assert isinstance(head, kb.layers.TailHead)
    assert "entry projection" in what
    assert cost <= kb.bridges.DEFAULT_MAX_FLOPS
    assert head.tail.output.shape[-1] == 10


def test_fit_bridge_refuses_an_over_budget_head(tiny_ensemble, digits):
    before = tiny_ensemble.member_names()
    with pytest.raises(ValueError, match=r"costs \d\.\d+x"):
        tiny_ensemble.fit_bridge(
            digits.train, head={"slim": 1, "max_flops": 0.01}, epochs=1
        )
    with pytest.raises(ValueError, match="`max_flops` must be a number"):
        tiny_ensemble.fit_bridge(digits.train, head={"max_flops": -1})
    assert tiny_ensemble.member_names() == before


def test_head_dict_chooses_between_correction_and_scratch_heads():
    backbone = _se_backbone()
    scratch, *_ = kb.bridges.size_head(
        backbone, "features", 1, False, {"base_logits": False}, 0.5
    )
    assert not scratch.base_logits
    half, *_ = kb.bridges.size_head(
        backbone, "features", 1, False, {"base_logits": 0.5}, 0.5
    )
    assert half.base_logits == 0.5
    with pytest.raises(ValueError, match=r"`head\['base_logits'\]` must"):
        kb.bridges.size_head(
            backbone, "features", 1, False, {"base_logits": "no"}, 0.5
        )
