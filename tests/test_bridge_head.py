import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge.layers import BridgeHead, TailHead


def _features(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "shape", [(3, 4, 4, 8), (3, 7, 8)], ids=["image", "sequence"]
)
def test_residual_head_shapes_weights_and_training(shape):
    head = BridgeHead(5, width=6, depth=2)
    x = _features(shape)
    assert head(x).shape == (3, 5)
    # stem conv + stem BN (4) + 2 blocks x (2 convs + 2 BN x 4) + dense (2)
    assert len(head.weights) == 1 + 4 + 2 * (2 + 8) + 2
    assert len(head.trainable_weights) == 1 + 2 + 2 * (2 + 4) + 2

    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, head(inputs))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [np.array(w) for w in head.trainable_weights]
    model.fit(x, np.array([0, 1, 2]), epochs=1, verbose=0)
    after = [np.array(w) for w in head.trainable_weights]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(before, after))


def test_type2_input_is_concatenated_on_channels():
    head = BridgeHead(4, width=6, depth=1)
    a, b = _features((2, 4, 4, 3), 1), _features((2, 4, 4, 5), 2)
    out = head([a, b])
    assert out.shape == (2, 4)
    assert head._stem[0].kernel.shape == (1, 1, 8, 6)
    np.testing.assert_allclose(
        out, head(np.concatenate([a, b], axis=-1)), atol=1e-6
    )


def test_conditioned_head_depends_on_t():
    head = BridgeHead(4, width=6, depth=1, conditioned=True)
    x = _features((2, 4, 4, 3))
    low, high = head(x, t=0.1), head(x, t=0.9)
    assert np.abs(np.asarray(low) - np.asarray(high)).max() > 1e-4
    np.testing.assert_allclose(
        head(x, t=np.full((2, 1), 0.1, "float32")), low, atol=1e-6
    )
    with pytest.raises(ValueError, match="`t` is required"):
        head(x)


def test_base_logits_head_corrects_the_mean_logits_of_its_modes(tmp_path):
    head = BridgeHead(4, width=6, depth=1, base_logits=True)
    a, b = _features((2, 4, 4, 3), 1), _features((2, 4, 4, 3), 2)
    za, zb = _features((2, 4), 3), _features((2, 4), 4)
    out = np.asarray(head([a, b], logits=[za, zb]))
    own = np.asarray(head.head_call(np.concatenate([a, b], axis=-1)))
    np.testing.assert_allclose(out, own + (za + zb) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="`logits`.*required"):
        head([a, b])
    with pytest.raises(ValueError, match="`logits` are only taken"):
        BridgeHead(4, width=6, depth=1)(a, logits=za)
    # No gradient reaches the modes' logits; the head's weights get one.
    watched = tf.constant(za)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(watched)
        loss = keras.ops.sum(head([a, b], logits=[watched, zb]) ** 2)
    assert tape.gradient(loss, watched) is None
    assert all(
        g is not None for g in tape.gradient(loss, head.trainable_weights)
    )
    # The flag is part of the saved config.
    path = str(tmp_path / "model.keras")
    inputs = [keras.Input((4, 4, 3)), keras.Input((4,))]
    head = BridgeHead(4, width=6, depth=1, base_logits=True)
    model = keras.Model(inputs, head(inputs[0], logits=inputs[1]))
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded([a, za]), model([a, za]), atol=1e-6)
    assert loaded.layers[-1].base_logits


def test_base_logits_fraction_adds_that_fraction_of_the_logits(tmp_path):
    head = BridgeHead(4, width=6, depth=1, base_logits=0.25)
    x, z = _features((2, 4, 4, 3), 1), _features((2, 4), 3)
    out = np.asarray(head(x, logits=z))
    own = np.asarray(head.head_call(x))
    np.testing.assert_allclose(out, own + 0.25 * z, atol=1e-5)
    assert BridgeHead(4, base_logits=True).base_logits == 1.0
    assert not BridgeHead(4, base_logits=0).base_logits
    assert BridgeHead(4, base_logits=np.float32(0.5)).base_logits == 0.5
    for bad in (1.5, -0.1, float("nan"), "yes", None):
        with pytest.raises(ValueError, match="`base_logits` must be"):
            BridgeHead(4, base_logits=bad)
    path = str(tmp_path / "model.keras")
    inputs = [keras.Input((4, 4, 3)), keras.Input((4,))]
    model = keras.Model(inputs, head(inputs[0], logits=inputs[1]))
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded([x, z]), model([x, z]), atol=1e-6)
    assert loaded.layers[-1].base_logits == 0.25


def test_head_with_a_slim_tail_round_trips(tmp_path):
    backbone = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.5)
    tail = kb.backbone.slim_tail(backbone, "stage2", 33, slim=2)
    head = TailHead(10, tail, conditioned=True)
    inputs = keras.Input((4, 4, 32))
    model = keras.Model(inputs, head(inputs, t=0.3))
    x = _features((2, 4, 4, 32))
    expected = np.asarray(model(x))
    # The tail is the backbone's stage 3 at half width.
    assert tail.get_layer("stage3_block1_conv1").filters == 16
    assert tail.get_layer("logits").units == 10

    clone = TailHead.from_config(head.get_config())
    assert clone.conditioned and clone.tail is not tail
    assert [layer.get_config() for layer in clone.tail.layers] == [
        layer.get_config() for layer in tail.layers
    ]
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)


def test_features_without_spatial_axes_are_refused():
    with pytest.raises(ValueError, match="`features` must be a feature map"):
        BridgeHead(3)(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="num_classes"):
        BridgeHead(0)
    with pytest.raises(ValueError, match="`t` is only taken"):
        BridgeHead(3)(np.zeros((2, 4, 4, 8), "float32"), t=0.5)
    with pytest.raises(ValueError, match="`tail` must be a functional"):
        TailHead(3, tail="stage3")


def test_residual_head_round_trips_through_a_keras_file(tmp_path):
    head = BridgeHead(4, width=6, depth=1, conditioned=True)
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, head(inputs, t=0.7))
    x = _features((3, 4, 4, 8))
    expected = np.asarray(model(x))
    config = head.get_config()
    assert (config["width"], config["depth"], config["conditioned"]) == (
        6,
        1,
        True,
    )
    model.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
