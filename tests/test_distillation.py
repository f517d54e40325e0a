import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge.distillation import (
    BridgeDistiller,
    TeacherBank,
    agreement,
    kl_divergence,
    mixup,
    teacher_fidelity,
)


def _logits(shape, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=shape)).astype("float32")


def _numpy_kl(teacher, student):
    def log_softmax(z):
        z = np.asarray(z, "float64")
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1))


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_mixup_off_returns_the_input(alpha):
    x = tf.constant(_logits((4, 3)))
    assert mixup(x, alpha) is x


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_mixes_each_row_with_one_other_row(alpha):
    tf.random.set_seed(0)
    n = 16
    # Row i is the one-hot vector e_i (16 steps, 1 channel), so a mixed
    # row l e_i + (1 - l) e_p(i) shows its two sources and its weights.
    x = tf.constant(np.eye(n, dtype="float32")[:, :, None])
    for _ in range(5):
        out = np.asarray(mixup(x, alpha))
        assert out.shape == (n, n, 1)
        rows = out[:, :, 0]
        np.testing.assert_allclose(rows.sum(axis=1), np.ones(n), atol=1e-6)
        assert (rows >= 0).all()
        assert ((rows > 0).sum(axis=1) <= 2).all()
        # Besides its own e_i, each row holds at most one other input.
        off_diagonal = rows * (1 - np.eye(n))
        assert ((off_diagonal > 0).sum(axis=1) <= 1).all()


def test_kl_divergence_matches_numpy():
    teacher, student = _logits((6, 5), 1), _logits((6, 5), 2)
    np.testing.assert_allclose(
        float(kl_divergence(teacher, student)),
        _numpy_kl(teacher, student),
        atol=1e-5,
    )
    # Hand-computed: p = (1/2, 1/2), q = (e/(1+e), 1/(1+e)).
    q0 = np.e / (1 + np.e)
    expected = 0.5 * np.log(0.5 / q0) + 0.5 * np.log(0.5 / (1 - q0))
    np.testing.assert_allclose(
        float(kl_divergence(np.zeros((1, 2), "float32"), [[1.0, 0.0]])),
        expected,
        atol=1e-6,
    )


def test_kl_divergence_is_zero_for_equal_logits_and_shift_invariant():
    teacher, student = _logits((6, 5), 3), _logits((6, 5), 4)
    assert abs(float(kl_divergence(teacher, teacher))) < 1e-6
    shift = np.arange(6, dtype="float32")[:, None] * 3.0
    np.testing.assert_allclose(
        float(kl_divergence(teacher + shift, student - 2 * shift)),
        float(kl_divergence(teacher, student)),
        atol=1e-5,
    )


def test_agreement_is_the_fraction_of_equal_argmaxes():
    teacher = np.array(
        [[3, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]], dtype="float32"
    )
    student = np.array(
        [[1, 0, 0], [0, 2, 1], [0, 1, 2], [0, 5, 0]], dtype="float32"
    )
    assert float(agreement(teacher, student)) == 0.75
    assert float(agreement(teacher, teacher)) == 1.0


def test_teacher_fidelity_gives_floats():
    teacher = [[2, 0, 0], [0, 2, 0], [0, 0, 2], [1, 0, 0]]
    student = np.array(
        [[2, 0, 0], [0, 2, 0], [0, 0, 2], [0, 1, 0]], dtype="float32"
    )
    fidelity = teacher_fidelity(teacher, student)
    assert set(fidelity) == {"agreement", "kl"}
    assert all(type(value) is float for value in fidelity.values())
    assert fidelity["agreement"] == 0.75
    # Only the last row differs: p = (e, 1, 1) / (e + 2) and
    # q = (1, e, 1) / (e + 2), so KL = (e - 1) / (e + 2), over 4 rows.
    e = np.e
    np.testing.assert_allclose(fidelity["kl"], (e - 1) / (e + 2) / 4, atol=1e-6)


def _mode(name):
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="feat")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)


def _values(model):
    return [np.array(w) for w in model.weights]


def test_bridge_distiller_trains_only_the_head():
    keras.utils.set_random_seed(0)
    mode, teacher = _mode("mode"), _mode("teacher")
    # A confident teacher, so that there is something to learn.
    dense = teacher.layers[-1]
    dense.kernel.assign(10 * dense.kernel)
    feature_index = [layer.name for layer in mode.layers].index("feat")
    trunk = kb.graph.feature_model(mode, feature_index, name="trunk_0")
    head = kb.layers.BridgeHead(3, width=4, depth=1)
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 1)).astype("float32")
    kl_before = float(kl_divergence(teacher(x), head(trunk(x))))

    bridge = dict(head=head, sources=(0,), teachers=[teacher], points=[0.5])
    distiller = BridgeDistiller({0: trunk}, [bridge])

    # (a) Only the head is a weight of the distiller.
    # stem conv + BN (2), one block of 2 convs + 2 BN (6), dense (2)
    assert len(head.trainable_variables) == 1 + 2 + 6 + 2
    assert len(distiller.trainable_variables) == len(head.trainable_variables)
    assert all(
        a is b
        for a, b in zip(distiller.trainable_variables, head.trainable_variables)
    )
    own = {id(w) for w in distiller.weights}
    assert {id(w) for w in head.weights} <= own
    assert not own & {id(w) for w in mode.weights + teacher.weights}
    np.testing.assert_allclose(distiller(x)[0], head(trunk(x)), atol=1e-6)

    # (b) Fitting brings the head closer to its teacher, changes nothing
    # else and leaves the shared layers trainable.
    mode_before, teacher_before = _values(mode), _values(teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    history = distiller.fit(
        tf.data.Dataset.from_tensor_slices(x).batch(16),
        epochs=30,
        shuffle=False,  # a dataset is not shuffled by `fit`
        verbose=0,
    )
    kl_after = float(kl_divergence(teacher(x), head(trunk(x))))
    # 0.09 to 0.72 of the KL before for seeds 0-3 (0.35 for this one); a
    # head that does not learn stays at 1.
    assert kl_after < 0.85 * kl_before
    for before, after in zip(mode_before, _values(mode)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(teacher_before, _values(teacher)):
        np.testing.assert_array_equal(before, after)
    for model in (mode, teacher, trunk):
        assert model.trainable
        assert all(layer.trainable for layer in model.layers)

    # (c) The logs; with one bridge the loss is its KL.
    logs = history.history
    assert set(logs) == {"loss", "kl", "agreement"}
    assert all(len(values) == 30 for values in logs.values())
    np.testing.assert_allclose(logs["loss"], logs["kl"], rtol=1e-5)
    assert all(0.0 <= value <= 1.0 for value in logs["agreement"])
    # The head ends up agreeing with its teacher well above chance (1/3):
    # 0.80-0.83 in the last epoch for seeds 0-3, from 0.14-0.50 in the
    # first.
    assert logs["agreement"][-1] > 0.7


def _conditioned_fit(teachers, monkeypatch, bank):
    if not bank:
        monkeypatch.setattr(TeacherBank, "of", classmethod(lambda c, t: None))
    keras.utils.set_random_seed(0)
    mode = _mode("mode")
    feature_index = [layer.name for layer in mode.layers].index("feat")
    trunk = kb.graph.feature_model(mode, feature_index, name="trunk_0")
    head = kb.layers.BridgeHead(3, width=4, depth=1, conditioned=True)
    points = [i / (len(teachers) - 1) for i in range(len(teachers))]
    bridge = dict(head=head, sources=(0,), teachers=teachers, points=points)
    distiller = BridgeDistiller({0: trunk}, [bridge])
    distiller.compile(optimizer="adam", jit_compile=False)
    x = np.random.default_rng(1).normal(size=(48, 6, 6, 1)).astype("float32")
    distiller.fit(
        tf.data.Dataset.from_tensor_slices(x).batch(16),
        epochs=2,
        shuffle=False,  # a dataset is not shuffled by `fit`
        verbose=0,
    )
    monkeypatch.undo()
    return distiller, _values(head)


def test_teachers_of_one_architecture_train_as_a_bank_with_equal_results(
    monkeypatch,
):
    # Clones: one architecture, each with its own fresh weights.
    teachers = [keras.models.clone_model(_mode("teacher")) for _ in range(4)]
    banked, weights = _conditioned_fit(teachers, monkeypatch, bank=True)
    assert isinstance(banked._frozen.banks[0], TeacherBank)
    switched, switch_weights = _conditioned_fit(teachers, monkeypatch, False)
    assert switched._frozen.banks == [None]
    # The bank runs each drawn teacher's own weights: training is the
    # same as with one traced branch per teacher.
    for a, b in zip(weights, switch_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    x = np.random.default_rng(2).normal(size=(5, 6, 6, 1)).astype("float32")
    bank = banked._frozen.banks[0]
    for index, teacher in enumerate(teachers):
        np.testing.assert_allclose(bank(index, x), teacher(x), atol=1e-6)


def test_teachers_of_other_architectures_form_no_bank():
    wider = keras.Sequential(
        [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    mode = _mode("a")
    assert TeacherBank.of([mode, wider]) is None
    config = mode.get_config()
    config["layers"][-1]["config"]["activation"] = "relu"
    assert TeacherBank.of([mode, keras.Model.from_config(config)]) is None
    clone = keras.models.clone_model(mode)
    assert isinstance(TeacherBank.of([mode, clone]), TeacherBank)


def test_bridge_distiller_adds_the_heads_regularisation_losses():
    # A head rebuilt from an L2-regularised tail must train with its weight
    # decay: with a learning rate of 0 the logged loss of one step is the
    # KL plus exactly the regularisation of the head's weights.
    keras.utils.set_random_seed(0)
    backbone = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    tail = kb.backbone.slim_tail(backbone, "stage2", 8, 1)
    head = kb.layers.TailHead(10, tail)
    mode = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    index = [layer.name for layer in mode.layers].index("stage2")
    trunk = kb.graph.feature_model(mode, index, name="trunk_0")
    teacher = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    bridge = dict(head=head, sources=(0,), teachers=[teacher], points=[0.5])
    distiller = BridgeDistiller({0: trunk}, [bridge], mixup_alpha=0.0)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    distiller(x)
    penalty = float(sum(keras.ops.sum(loss) for loss in head.losses))
    assert head.losses and penalty > 0
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
    logs = distiller.fit(x, epochs=1, batch_size=16, verbose=0).history
    np.testing.assert_allclose(
        logs["loss"][0], logs["kl"][0] + penalty, rtol=1e-5
    )


def test_shared_trunk_trains_with_its_heads_and_imitates_its_teacher():
    keras.utils.set_random_seed(0)
    anchor, teacher, network = _mode("anchor"), _mode("teacher"), _mode("net")
    network.set_weights(anchor.get_weights())
    index = [layer.name for layer in network.layers].index("feat")
    trunk = kb.graph.feature_model(network, index, True, name="trunk_shared")
    head = kb.layers.BridgeHead(3, width=4, depth=1)
    bridge = dict(
        head=head, sources=(kb.members.SHARED,), teachers=[teacher],
        points=[0.5],
    )  # fmt: skip
    distiller = BridgeDistiller(
        {}, [bridge], shared={"trunk": trunk, "teacher": anchor}
    )
    # The trunk's weights are the distiller's too; the teachers' are not.
    own = {id(w) for w in distiller.trainable_variables}
    assert {id(w) for w in network.trainable_variables} <= own
    assert not own & {id(w) for w in anchor.weights + teacher.weights}
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 1)).astype("float32")
    anchor_before, network_before = _values(anchor), _values(network)
    kl_before = float(kl_divergence(teacher(x), head(trunk(x)[0])))
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    distiller.fit(x, epochs=20, batch_size=16, verbose=0)
    assert float(kl_divergence(teacher(x), head(trunk(x)[0]))) < kl_before
    # The trunk moved; the anchor it started from did not.
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(network_before, _values(network))
    )
    for before, after in zip(anchor_before, _values(anchor)):
        np.testing.assert_array_equal(before, after)
