"""`fit_bridge(trunk="shared")`: one trunk trained for every Type I head."""

import itertools
import json
import warnings
import zipfile

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

import keras_bridge as kb
from keras_bridge.members import SHARED, BridgeMember, SharedMember, parse

NAMES = ["mode_0", "mode_1", "shared", "shared_type1_0-1_r0.5"]


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def shared_ensemble(ensemble_files, digits):
    """The two digits modes and their curve, with a shared-trunk bridge.

    5 epochs (the default is 30): on the test set, with the ensemble's
    seed set to 0, 1 and 2 (benchmarks/session_ensemble_bounds.py), the
    shared network agreed with the anchor on 0.972, 0.983, 0.964, the
    head with its teacher on 0.931, 0.961, 0.953 and with the labels on
    0.942, 0.964, 0.947, well above the test's 0.85."""
    ens = kb.BridgeEnsemble.load(ensemble_files["curves"])
    ens.fit_bridge(digits.train, trunk="shared", epochs=5, verbose=0)
    return ens


def test_member_names_parse_back():
    member = BridgeMember("type1", (0, 2), 0.5, shared=True)
    assert member.name == "shared_type1_0-2_r0.5"
    assert member.sources == (SHARED,)
    assert parse(member.name) == member
    assert parse("shared") == SharedMember()
    assert parse("type1_0-2_r0.5").shared is False
    with pytest.raises(ValueError, match="Only Type I bridges"):
        BridgeMember("type2", (0, 1), 0.5, shared=True)


@pytest.mark.large
def test_shared_trunk_outputs_equal_its_parts(
    tiny_shared_ensemble, tiny_ensemble_file, digits
):
    ens = tiny_shared_ensemble
    assert ens.member_names() == NAMES
    # The modes are those the bridge was fitted on: the trunk is a copy.
    before = kb.BridgeEnsemble.load(tiny_ensemble_file)
    for mode, original in zip(ens.modes, before.modes):
        for a, b in zip(mode.get_weights(), original.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(ens.shared.get_weights(), ens.modes[0].get_weights())
    )
    x, _ = kb.data.to_numpy(digits.test)
    x = x[:29]
    trunk = kb.graph.feature_model(ens.shared, ens.feature_index, False)
    head = ens.bridges[parse("shared_type1_0-1_r0.5")]
    assert not head.base_logits
    by_hand = [
        np.asarray(ens.modes[0](x)),
        np.asarray(ens.modes[1](x)),
        np.asarray(ens.shared(x)),
        np.asarray(head(trunk(x))),
    ]
    members = np.stack([_softmax(z) for z in by_hand], axis=1)
    outputs = ens.predict(x)
    np.testing.assert_allclose(
        outputs["member_probabilities"], members, atol=1e-5
    )


@pytest.mark.large
def test_shared_trunk_is_computed_once(tiny_shared_ensemble):
    ens = tiny_shared_ensemble
    base = kb.flops(ens.backbone)
    alone = kb.flops(ens.inference_model(["shared"]))
    both = kb.flops(ens.inference_model(["shared", "shared_type1_0-1_r0.5"]))
    assert alone == pytest.approx(base, rel=0.01)
    # The head adds well under a second backbone pass.
    assert 0 < both - alone < 0.2 * base


@pytest.mark.large
def test_shared_heads_follow_their_teachers(shared_ensemble, digits):
    ens = shared_ensemble
    x, y = kb.data.to_numpy(digits.test)
    teacher = np.argmax(ens.point_model((0, 1), 0.5)(x, training=False), 1)
    members = np.asarray(ens.inference_model()(x)["member_probabilities"])
    anchor = np.argmax(ens.modes[0](x, training=False), 1)
    # Chance is about 0.1: the shared network keeps imitating the anchor
    # and the head its teacher.
    assert (members[:, 2].argmax(1) == anchor).mean() > 0.85
    assert (members[:, 3].argmax(1) == teacher).mean() > 0.85
    assert (members[:, 3].argmax(1) == y).mean() > 0.85


@pytest.mark.large
def test_report_has_the_shared_rows_and_expected_deep_ensembles(
    tiny_shared_ensemble, digits
):
    report = tiny_shared_ensemble.evaluate(
        digits.test, calibration_data=digits.validation
    )
    names = [row["name"] for row in report.rows]
    assert {"Shared trunk", "Shared trunk + 1 Type I"} <= set(names)
    assert "Single + 1 Type I" not in names
    assert report.row("Shared trunk")["flops"] == pytest.approx(1.0, abs=0.01)
    row = report.row("Shared trunk + 1 Type I")
    assert 1.0 < row["flops"] < 1.2
    single = report.row("mode 0")["cnll"]
    points = report.row("Single + 1 curve points")["cnll"]
    if single > points:
        assert row["captured"] == pytest.approx(
            (single - row["cnll"]) / (single - points)
        )
    # DE-k is the mean over subsets of k modes: DE-1 is the modes' mean.
    modes = [report.row(f"mode {i}") for i in range(2)]
    for key in ("accuracy", "nll", "cnll", "brier"):
        assert report.row("DE-1")[key] == pytest.approx(
            np.mean([m[key] for m in modes])
        )


def test_deep_ensemble_rows_do_not_depend_on_the_order_of_the_modes():
    modes = [kb.members.ModeMember(i) for i in range(4)]
    subsets = kb.evaluation.mode_subsets(4, 2)
    assert subsets == list(itertools.combinations(range(4), 2))
    rows = dict(kb.evaluation._configurations(modes, []))
    assert len(rows["DE-2"]) == 6
    assert all(len(draw) == 2 for draw in rows["DE-2"])
    subsets = kb.evaluation.mode_subsets(12, 6)
    assert len(subsets) == kb.evaluation.MAX_SUBSETS


@pytest.mark.large
def test_shared_trunk_round_trips_and_exports(
    tiny_shared_ensemble, digits, tmp_path
):
    ens = tiny_shared_ensemble
    x, _ = kb.data.to_numpy(digits.test)
    x = x[:17]
    # Called directly: a `predict` would trace each model once more.
    expected = {k: np.asarray(v) for k, v in ens.inference_model()(x).items()}
    loaded = kb.BridgeEnsemble.load(ens.save(tmp_path / "again.keras"))
    assert loaded.member_names() == NAMES
    for key, value in loaded.inference_model()(x).items():
        np.testing.assert_allclose(value, expected[key], atol=1e-5)
    path = ens.export(tmp_path / "serving" / "1", verbose=False)
    served = tf.saved_model.load(path).signatures["serving_default"]
    for key, value in served(inputs=tf.constant(x)).items():
        np.testing.assert_allclose(value.numpy(), expected[key], atol=1e-5)
    onnx_path = ens.export(
        tmp_path / "shared.onnx", format="onnx", verbose=False
    )
    session = ort.InferenceSession(
        onnx_path, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(None, {"inputs": x})):
        np.testing.assert_allclose(value, expected[name], atol=1e-5)
    lite = ens.export(
        tmp_path / "shared.tflite", format="litert", verbose=False
    )
    interpreter = tf.lite.Interpreter(model_path=lite)
    runner = interpreter.get_signature_runner("serving_default")
    for row in range(2):
        out = runner(inputs=x[row : row + 1])
        np.testing.assert_allclose(
            out["probabilities"], expected["probabilities"][row : row + 1],
            atol=1e-5,
        )  # fmt: skip


def test_bad_shared_requests_are_refused(tiny_ensemble, digits):
    ens = tiny_ensemble
    with pytest.raises(ValueError, match="`trunk` must be 'frozen' or"):
        ens.fit_bridge(digits.train, trunk="hydra")
    with pytest.raises(ValueError, match="Type II bridges read two"):
        ens.fit_bridge(digits.train, kind="type2", trunk="shared")
    with pytest.raises(ValueError, match="`keep_best=True`.*validation_data"):
        ens.fit_bridge(digits.train, trunk="shared", keep_best=True)
    with pytest.raises(ValueError, match="`augmentation` must be None"):
        ens.fit_bridge(digits.train, augmentation=lambda x: x)
    assert ens.shared is None and not ens.bridges


@pytest.mark.large
def test_a_failed_shared_call_changes_nothing(tiny_ensemble, digits):
    ens = tiny_ensemble

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("interrupted")

    weights = ens.modes[0].get_weights()
    with pytest.raises(RuntimeError, match="interrupted"):
        ens.fit_bridge(
            digits.train.take(2), trunk="shared", epochs=2,
            callbacks=[Crash()], verbose=0,
        )  # fmt: skip
    assert ens.shared is None and not ens.bridges
    for a, b in zip(weights, ens.modes[0].get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.large
def test_a_new_shared_trunk_drops_the_old_heads(tiny_shared_ensemble, digits):
    ens = tiny_shared_ensemble  # a shared trunk and its head at t = 0.5
    first = ens.shared
    with pytest.warns(UserWarning, match="heads of the old one are dropped"):
        ens.fit_bridge(
            digits.train.take(2), trunk="shared", t=0.25, epochs=1, verbose=0
        )
    assert ens.shared is not first
    assert ens.member_names() == [
        "mode_0", "mode_1", "shared", "shared_type1_0-1_r0.25",
    ]  # fmt: skip


@pytest.mark.large
def test_fit_trains_a_shared_trunk_and_a_frozen_type2(
    digits, make_mini_backbone, tmp_path
):
    backbone = make_mini_backbone()
    # A few batches: this checks which members a run builds and resumes.
    train, validation = digits.train.take(3), digits.validation.take(2)

    def run():
        ens = kb.BridgeEnsemble(
            backbone, feature_layer="features", num_modes=2, seed=0
        )
        ens.fit(
            train, validation_data=validation, run_dir=str(tmp_path / "run"),
            modes={"epochs": 1}, curves={"epochs": 1},
            bridges={"epochs": 1, "trunk": "shared"}, verbose=0,
        )  # fmt: skip
        return ens

    ens = run()
    pair = f"{ens.anchor}-{1 - ens.anchor}"  # the anchor's curve
    assert ens.member_names() == [
        "mode_0", "mode_1", "shared", f"shared_type1_{pair}_r0.5",
        f"type2_{pair}_r0.5",
    ]  # fmt: skip
    # Resuming the finished run gives the same ensemble, shared trunk too.
    again = run()
    x, _ = kb.data.to_numpy(digits.test)
    np.testing.assert_allclose(
        again.inference_model()(x[:9])["member_probabilities"],
        ens.inference_model()(x[:9])["member_probabilities"],
        atol=1e-5,
    )


def test_run_config_takes_the_trunk():
    config = kb.config.RunConfig(bridges={"trunk": "shared"})
    assert config.bridges.trunk == "shared"
    with pytest.raises(ValueError, match="trunk"):
        kb.config.RunConfig(bridges={"trunk": "hydra"})


def test_the_flops_plot_draws_the_shared_rows_as_one_family():
    def row(name, flops, cnll):
        return {
            "name": name, "members": round(flops), "flops": flops,
            "accuracy": 0.9, "nll": cnll, "cnll": cnll,
        }  # fmt: skip

    report = kb.EnsembleReport(
        [
            row("DE-1", 1.0, 0.35),
            row("DE-2", 2.0, 0.25),
            row("Shared trunk", 1.0, 0.34),
            row("Shared trunk + 1 Type I", 1.1, 0.31),
            row("Shared trunk + 2 Type I", 1.2, 0.28),
        ],
        bridges=[],
    )
    figure = kb.plots.flops_tradeoff(report)
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert "Shared trunk + k Type I" in labels
    line = figure.axes[0].lines[labels.index("Shared trunk + k Type I")]
    np.testing.assert_allclose(line.get_xdata(), [1.0, 1.1, 1.2])


@pytest.mark.large
def test_keep_best_keeps_the_epoch_of_the_lowest_val_kl(tiny_ensemble, digits):
    ens = tiny_ensemble
    (history,) = ens.fit_bridge(
        digits.train, epochs=4, learning_rate=0.05,
        validation_data=digits.validation, keep_best=True, verbose=0,
    )  # fmt: skip
    member = parse("type1_0-1_r0.5")
    teacher = ens.point_model((0, 1), 0.5)
    trunk = kb.graph.feature_model(ens.modes[0], ens.feature_index, True)
    head = ens.bridges[member]
    kls = []
    for x, _ in digits.validation:  # as Keras averages: over batches
        features, logits = trunk(x)
        student = head(features, logits=logits, training=False)
        kls.append(float(kb.distillation.kl_divergence(teacher(x), student)))
    assert np.mean(kls) == pytest.approx(min(history.history["val_kl"]), 1e-4)


@pytest.mark.large
def test_augmentation_reaches_the_distillation_inputs(tiny_ensemble, digits):
    seen = []

    class Spy(keras.layers.Layer):
        def call(self, x, training=None):
            seen.append(training)
            return x * 0.0

    ens = tiny_ensemble
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (history,) = ens.fit_bridge(
            digits.train, epochs=1, augmentation=Spy(), mixup_alpha=0.0,
            verbose=0,
        )  # fmt: skip
    # The distiller builds the augmentation and the heads itself (Keras
    # warns when a default `build()` meets unbuilt layers).
    assert not [w for w in caught if "build()" in str(w.message)]
    assert seen and all(flag is True for flag in seen)
    # Every training input was blanked, so each batch's rows are equal and
    # its agreement is 0 or 1: the epoch's is a whole number of batches.
    steps = sum(1 for _ in digits.train)
    batches = history.history["agreement"][0] * steps
    assert batches == pytest.approx(round(batches), abs=1e-4)


@pytest.mark.large
def test_files_keep_the_oldest_format_that_holds_them(
    tiny_ensemble, tiny_bridged_ensemble, tiny_bridged_files, tmp_path
):
    def config(path):
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))["config"]

    # Older keras-bridge versions read format 2 files: modes, curves and
    # bridges without curve points.
    plain = config(tiny_ensemble.save(tmp_path / "plain.keras"))
    assert not plain["metadata"]["points"] and not plain["points"]
    assert plain["metadata"]["format_version"] == 2
    assert "shared" not in plain and "statistics" not in plain
    # A bridge's teacher is stored as its statistics: format 4.
    bridged = config(tiny_bridged_ensemble.save(tmp_path / "bridged.keras"))
    assert bridged["metadata"]["format_version"] == 4
    assert "shared" not in bridged
    shared = config(tiny_bridged_files["shared"])
    assert shared["metadata"]["format_version"] == 4
    assert len(shared["shared"]) == 1
    # A shared trunk without curve points: format 3.
    ens = kb.BridgeEnsemble.load(tiny_bridged_files["shared"])
    ens.curve_points = {}
    trunk_only = config(ens.save(tmp_path / "trunk.keras"))
    assert trunk_only["metadata"]["format_version"] == 3
    assert "statistics" not in trunk_only
