"""Members that pay off: ensemble selection, report flags, OOD detection."""

import keras
import numpy as np
import pytest

import keras_bridge as kb


def test_ood_detection_matches_a_hand_computed_value():
    # 3 x 2 pairs (in, out); the out score is higher in 5 of 6, tied in 0.
    found = kb.metrics.ood_detection([0.1, 0.2, 0.3], [0.25, 0.4])
    assert found["auroc"] == pytest.approx(5 / 6)
    # Flagging both OOD inputs needs a threshold <= 0.25: 1 of 3 in-dist.
    assert found["fpr95"] == pytest.approx(1 / 3)
    perfect = kb.metrics.ood_detection([0.0, 0.1], [0.5, 0.9])
    assert perfect == {"auroc": 1.0, "fpr95": 0.0}


def test_selection_keeps_members_that_lower_the_cnll():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), labels] = 0.8
    # Two informative members, each wrong on another third of the inputs.
    first, second = good.copy(), good.copy()
    first[:100] = first[:100, [1, 2, 0]]
    second[100:200] = second[100:200, [1, 2, 0]]
    noise = rng.dirichlet([1, 1, 1], 300)
    members = np.stack([first, noise, second], axis=1)
    chosen = kb.metrics.select_members(members, labels)
    assert sorted(chosen) == [0, 2]
    assert kb.metrics.select_members(members, labels, max_members=1) in (
        [0],
        [2],
    )


def test_select_members_honours_requirements():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    onehot = np.eye(3)[labels]
    noise = rng.dirichlet(np.ones(3), (200, 3))
    # Member 0 is the best alone; it may only follow member 2.
    members = np.stack(
        [0.9 * onehot + 0.1 * noise[:, 0], 0.5 * onehot + 0.5 * noise[:, 1],
         0.6 * onehot + 0.4 * noise[:, 2]], axis=1,
    )  # fmt: skip
    assert kb.metrics.select_members(members, labels)[0] == 0
    chosen = kb.metrics.select_members(members, labels, requires=[[2], [], []])
    assert chosen[0] == 2 and chosen.index(0) > chosen.index(2)
    with pytest.raises(ValueError, match="`requires`"):
        kb.metrics.select_members(members, labels, requires=[[]])


@pytest.fixture(scope="session")
def ensemble_with_a_bad_mode(ensemble_files):
    """The two trained digits modes of `conftest.py` and a third built to
    hurt: a copy of mode 0 whose classifier is shifted by one class, so it
    is confidently wrong (whatever the random state; a mode left at its
    random start is near-uniform and can even help the calibrated NLL).
    One copy per worker: its tests only read it (`select_members`
    and `evaluate` change nothing)."""
    ens = kb.BridgeEnsemble.load(ensemble_files["curves"])
    wrong = keras.models.clone_model(ens.modes[0])
    wrong.set_weights(ens.modes[0].get_weights())
    classifier = wrong.layers[-1]
    kernel, bias = classifier.get_weights()
    classifier.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    ens.set_modes([*ens.modes, wrong])
    return ens


@pytest.mark.large
def test_select_members_drops_a_member_built_to_hurt(
    ensemble_with_a_bad_mode, digits
):
    ens = ensemble_with_a_bad_mode
    chosen = ens.select_members(digits.validation)
    assert "mode_2" not in chosen and chosen
    x, y = kb.data.to_numpy(digits.validation)

    # The selection is no worse than all members on the data it used.
    def cnll(members):
        p = ens.inference_model(members, temperature=1.0)(x)["probabilities"]
        p = np.asarray(p)
        return kb.metrics.calibrated_nll(p, y, p, y)

    assert cnll(chosen) <= cnll(ens.member_names())
    with pytest.raises(ValueError, match="`max_members`"):
        ens.select_members(digits.validation, max_members=0)


@pytest.mark.large
def test_report_adds_ood_columns(ensemble_with_a_bad_mode, digits):
    ens = ensemble_with_a_bad_mode
    x, _ = kb.data.to_numpy(digits.test)
    flipped = x[:, ::-1]
    report = ens.evaluate(digits.test, ood_data=flipped)
    row = report.row("DE-2")

    def mutual_information(outputs):
        members = np.asarray(outputs["member_probabilities"])
        mean_entropy = kb.metrics.entropy(members).mean(axis=1)
        return kb.metrics.entropy(members.mean(axis=1)) - mean_entropy

    # By hand, from the members' probabilities: DE-2 is the mean over the
    # three pairs of modes.
    found = []
    for pair in (
        ["mode_0", "mode_1"],
        ["mode_0", "mode_2"],
        ["mode_1", "mode_2"],
    ):
        model = ens.inference_model(pair, temperature=1.0)
        test, ood = model(x), model(flipped)
        found.append(
            kb.metrics.ood_detection(
                mutual_information(test), mutual_information(ood)
            )
        )
    # The report computes the mutual information in float32 (the serving
    # layer's function), this in float64: a near-tie may rank the other
    # way: the AUROC moves by one pair in len(x) ** 2 (2.6e-6 seen), the
    # FPR95 by at most one input in len(flipped).
    tolerance = {"auroc": 10 / len(x) ** 2, "fpr95": 1 / len(flipped)}
    for key in ("auroc", "fpr95"):
        expected = np.mean([f[key] for f in found])
        assert row[f"{key}_mi"] == pytest.approx(expected, abs=tolerance[key])
    # One member has no disagreement: its mutual information is 0.
    assert report.row("mode 0")["auroc_mi"] == pytest.approx(0.5)
    assert "AUROC MI" in str(report)
    with pytest.raises(ValueError, match="`ood_data` must yield inputs"):
        ens.evaluate(digits.test, ood_data=np.zeros((4, 9, 9, 1)))


@pytest.mark.large
def test_evaluate_changes_nothing(tiny_ensemble, digits):
    ens = tiny_ensemble
    ens.temperature = 2.5  # what a user set, or `calibrate` fitted
    x, _ = kb.data.to_numpy(digits.test)
    before = ens.predict(x)
    report = ens.evaluate(digits.test, calibration_data=digits.validation)
    assert report.row("DE-2")["cnll"] > 0  # calibrated columns were scored
    assert ens.temperature == 2.5
    after = ens.predict(x)
    for key, value in before.items():
        np.testing.assert_allclose(after[key], value, atol=1e-6)


@pytest.mark.large
def test_bridges_that_do_not_pay_off_are_flagged(tiny_bridged_ensemble, digits):
    ens = tiny_bridged_ensemble
    report = ens.evaluate(digits.test, calibration_data=digits.validation)
    (bridge,) = report.bridges
    x, y = kb.data.to_numpy(digits.validation)
    teacher = np.asarray(ens.point_model((0, 1), 0.5)(x)).argmax(1)
    probs = ens.predict(x, members=["mode_0", "type1_0-1_r0.5"])
    members = probs["member_probabilities"]
    assert bridge["val_agreement"] == pytest.approx(
        np.mean(members[:, 1].argmax(1) == teacher)
    )
    with_bridge = members.mean(1)
    change = kb.metrics.calibrated_nll(
        with_bridge, y, with_bridge, y
    ) - kb.metrics.calibrated_nll(members[:, 0], y, members[:, 0], y)
    assert bridge["val_cnll_change"] == pytest.approx(change, abs=1e-6)

    # Its standard error: of the per-input differences of calibrated NLL.
    def per_input(p):
        t = kb.metrics.fit_temperature(p, y)
        scaled = kb.metrics.temperature_scale(p, t)
        return -np.log(scaled[np.arange(len(y)), y])

    diff = per_input(with_bridge) - per_input(members[:, 0])
    se = diff.std(ddof=1) / np.sqrt(len(y))
    assert bridge["val_cnll_change_se"] == pytest.approx(se, rel=1e-4)
    low = bridge["val_agreement"] < 0.95
    worse = change > 2 * se
    selected = "type1_0-1_r0.5" in ens.select_members(digits.validation)
    assert bridge["selected"] == selected
    assert ("(< 95%)" in (bridge["note"] or "")) == low
    assert (bridge["flag"] is not None) == (worse and not selected)
    assert report.flagged == ([bridge] if worse and not selected else [])


class _Teacher:
    def __init__(self, classes):
        self.classes = classes

    def predict(self, x, verbose=0):
        return np.eye(3)[self.classes]


def _validation_case(bridge_quality):
    """Validation probabilities of mode 0 and a Type I bridge on 3 classes:
    the mode is right 70 % of the time; the bridge sees the labels with
    weight ``bridge_quality``; its teacher disagrees with it on 20 %."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    guess = np.where(rng.random(400) < 0.7, y, (y + 1) % 3)
    mode = 0.25 + 0.5 * np.eye(3)[guess]
    mode /= mode.sum(1, keepdims=True)
    bridge = (1 - bridge_quality) * mode + bridge_quality * np.eye(3)[y]
    bridge = (bridge + 0.01) / (bridge + 0.01).sum(1, keepdims=True)
    teacher = np.where(np.arange(400) % 5 == 0, (y + 2) % 3, bridge.argmax(1))
    return y, np.stack([mode, bridge], axis=1), _Teacher(teacher)


@pytest.mark.parametrize("quality", [0.6, -0.3], ids=["helps", "harms"])
def test_low_fidelity_is_a_note_and_a_flag_never_meets_selection(quality):
    y, probs, teacher = _validation_case(quality)
    mode = kb.members.ModeMember(0)
    bridge = kb.members.BridgeMember("type1", (0, 1), 0.5)
    index = {mode: 0, bridge: 1}
    selected = kb.evaluation.validation_selection(
        [mode, bridge], index, probs, y
    )
    rows = [{"member": bridge}]
    # Validation outputs as `evaluate` streams them: probabilities, the
    # teacher's logits, labels.
    calibration = kb.evaluation._Outputs(
        probs, {((0, 1), 0.5): teacher.predict(None)}, y
    )
    kb.evaluation._check_bridges(rows, index, calibration, selected)
    (row,) = rows
    assert row["val_agreement"] == pytest.approx(0.8, abs=0.01)
    assert "low fidelity" in row["note"]
    helps = row["val_cnll_change"] < 0
    assert helps == (quality > 0)
    # A bridge that lowers validation cNLL is chosen and never flagged.
    assert row["selected"] == helps
    assert (row["flag"] is None) == helps
