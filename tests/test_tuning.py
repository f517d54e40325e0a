import warnings

import keras
import keras_tuner
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge import bridges, compat, tuning
from keras_bridge.distillation import kl_divergence
from keras_bridge.graph import feature_model


def _val_kl(ens, member, data):
    """KL(teacher || bridge) as Keras' ``val_kl`` averages it: the mean
    over validation batches of each batch's mean."""
    teacher = ens._points[(member.pair, member.point)]
    trunk = feature_model(ens.modes[member.sources[0]], ens.feature_index, True)
    head = ens.bridges[member]
    kls = []
    for x, _ in data:
        features, logits = trunk(x)
        student = head(features, logits=logits, training=False)
        kls.append(float(kl_divergence(teacher(x), student)))
    return float(np.mean(kls))


@pytest.mark.large
def test_search_installs_the_best_completed_head(
    tiny_ensemble, digits, tmp_path
):
    class Epochs(keras.callbacks.Callback):
        # Each trial trains with a deep copy: the count lives on the class.
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            type(self).seen.append(sorted(logs))

    ens = tiny_ensemble
    # Two batches: the checks are of the search's bookkeeping, not quality.
    train = digits.train.take(2)
    result = ens.tune_bridge(
        train,
        validation_data=digits.validation,
        tuner="random",
        max_trials=2,
        epochs=1,
        directory=str(tmp_path),
        verbose=0,
        callbacks=[Epochs()],
    )
    completed = result.completed
    assert len(result.trials) == 2 and len(completed) == 2
    # The callbacks ran in every trial: one epoch each.
    assert len(Epochs.seen) == 2
    assert all("val_kl" in logs for logs in Epochs.seen)  # the objective
    assert all(t["flops"] <= bridges.DEFAULT_MAX_FLOPS for t in completed)
    assert result.best["val_kl"] == min(t["val_kl"] for t in completed)
    member = kb.members.BridgeMember("type1", (0, 1), 0.5)
    assert result.member == member.name and member in ens.bridges
    # The installed head is the best trial's best epoch.
    measured = _val_kl(ens, member, digits.validation)
    assert measured == pytest.approx(result.best["val_kl"], rel=1e-4)
    # The front holds exactly the completed trials no other one beats.
    front = [t["trial_id"] for t in result.pareto]
    for trial in completed:
        beaten = any(
            o["flops"] <= trial["flops"]
            and o["val_kl"] <= trial["val_kl"]
            and (o["flops"], o["val_kl"]) != (trial["flops"], trial["val_kl"])
            for o in completed
        )
        assert (trial["trial_id"] in front) == (not beaten)
    # Other bridges train the same way from the best hyperparameters.
    kwargs = result.fit_kwargs
    assert set(kwargs) == {"head", "learning_rate", "mixup_alpha"}
    assert kwargs["head"]["max_flops"] == pytest.approx(0.12)
    # A second call with the same directory resumes: no trial reruns, and
    # the head it finds is the one installed (no warning of a kept or a
    # replaced bridge: it is the same head), also in an ensemble saved and
    # loaded in between (as `keras-bridge tune --resume` does).
    ens = kb.BridgeEnsemble.load(ens.save(tmp_path / "tuned.keras"))
    installed = ens.bridges[member]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ens.tune_bridge(
            train, validation_data=digits.validation, tuner="random",
            max_trials=2, epochs=1, directory=str(tmp_path), verbose=0,
            callbacks=[Epochs()],
        )  # fmt: skip
    assert not [w for w in caught if "bridge" in str(w.message)], [
        str(w.message) for w in caught
    ]
    assert again.installed and ens.bridges[member] is installed
    assert len(Epochs.seen) == 2
    assert sorted(t["trial_id"] for t in again.trials) == sorted(
        t["trial_id"] for t in result.trials
    )
    assert again.best["val_kl"] == result.best["val_kl"]


@pytest.mark.large
def test_search_space_holds_exactly_the_heads_within_budget(
    tiny_ensemble, digits
):
    ens = tiny_ensemble
    # On mini_backbone the tail fits 30 % of a pass at some widths only
    # (0.11 to 0.44) and no residual head does; at 200 % every tail does,
    # and a residual head at depth 1 (1.84), not at depth 2 (3.57).
    for budget in (0.3, 2.0):
        hypermodel = tuning.BridgeHyperModel(
            ens, digits.train.take(2), max_flops=budget
        )
        for slim in bridges.TAIL_SLIMS:
            fits = hypermodel.cost({"slim": slim}) <= budget
            assert (slim in hypermodel.slims) == fits
        assert hypermodel.slims  # the tail at some width fits
        for width in hypermodel.widths:
            assert hypermodel.cost({"width": width, "depth": 1}) <= budget
        for width in hypermodel.deep_widths:
            assert hypermodel.cost({"width": width, "depth": 2}) <= budget
    assert hypermodel.widths


@pytest.mark.large
def test_a_head_over_budget_fails_its_trial_before_training(
    tiny_ensemble, digits
):
    ens = tiny_ensemble
    hypermodel = tuning.BridgeHyperModel(ens, digits.train, max_flops=0.5)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("head", "residual")
    hp.Fixed("head_width", 64)
    hp.Fixed("head_depth", 2)
    model = hypermodel.build(hp)
    cost = hypermodel.cost({"width": 64, "depth": 2})
    assert cost > 0.5 and model.head_cost == cost
    before = [w.numpy().copy() for w in model.trainable_weights]
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="max_flops"):
        hypermodel.fit(hp, model, digits.train, epochs=1, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert f"{cost:.3f}x" in str(
        pytest.raises(
            keras_tuner.errors.FailedTrialError,
            hypermodel.fit, hp, model, digits.train, epochs=1, verbose=0,
        ).value
    )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"tuner": "grid"}, "tuner"),
        ({"max_trials": 0}, "max_trials"),
        ({"epochs": 1.5}, "epochs"),
        ({"max_flops": -1}, "max_flops"),
        ({"max_flops": 1e-6}, "max_flops"),
        ({"kind": "type3"}, "kind"),
        ({"pair": (0, 5)}, "pair"),
    ],
)
@pytest.mark.large
def test_bad_search_arguments_leave_the_ensemble_as_it_was(
    tiny_bridged_ensemble, digits, kwargs, argument
):
    ens = tiny_bridged_ensemble
    before = dict(ens.bridges)
    assert before
    with pytest.raises(ValueError, match=argument):
        ens.tune_bridge(
            digits.train, validation_data=digits.validation, verbose=0,
            **kwargs,
        )  # fmt: skip
    assert ens.bridges == before


@pytest.mark.large
def test_validation_data_is_required(tiny_bridged_ensemble, digits):
    ens = tiny_bridged_ensemble
    before = dict(ens.bridges)
    with pytest.raises(ValueError, match="validation_data"):
        ens.tune_bridge(digits.train, validation_data=None)
    assert ens.bridges == before


@pytest.mark.large
def test_installing_a_foreign_model_is_refused(tiny_ensemble, digits):
    ens = tiny_ensemble
    hypermodel = tuning.BridgeHyperModel(ens, digits.train)
    foreign = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="built by this hypermodel"):
        hypermodel.install(foreign)
    assert not ens.bridges


def test_default_pair_is_the_anchors_first_curve():
    class Fake:
        curves = {(0, 1): None, (2, 0): None, (2, 1): None}
        anchor = 2

    assert kb.BridgeEnsemble.default_pair(Fake) == (2, 0)
    Fake.anchor = 1
    assert kb.BridgeEnsemble.default_pair(Fake) == (0, 1)
    Fake.curves = {}  # no curve yet: the anchor and the first other mode
    assert kb.BridgeEnsemble.default_pair(Fake) == (1, 0)


@pytest.mark.large
def test_search_with_a_shared_trunk_installs_trunk_and_head(
    tiny_ensemble, digits, tmp_path
):
    ens = tiny_ensemble
    anchor = ens.modes[0].get_weights()
    result = ens.tune_bridge(
        digits.train.take(2), validation_data=digits.validation,
        tuner="random", max_trials=1, epochs=1, directory=str(tmp_path),
        verbose=0, trunk="shared",
    )  # fmt: skip
    assert result.member == "shared_type1_0-1_r0.5"
    assert ens.member_names() == [
        "mode_0", "mode_1", "shared", "shared_type1_0-1_r0.5",
    ]  # fmt: skip
    # The trunk trained as a copy: the anchor mode is as it was.
    for a, b in zip(anchor, ens.modes[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(ens.shared.get_weights(), anchor)
    )
    x, _ = kb.data.to_numpy(digits.test)
    probs = np.asarray(ens.inference_model()(x[:8])["member_probabilities"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # Resumed, the search finds the trunk and head it installed (their
    # BatchNorm statistics recomputed since): no warning, nothing replaced.
    trunk, head = ens.shared, ens.bridges[kb.members.parse(result.member)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ens.tune_bridge(
            digits.train.take(2), validation_data=digits.validation,
            tuner="random", max_trials=1, epochs=1, directory=str(tmp_path),
            verbose=0, trunk="shared",
        )  # fmt: skip
    assert not [w for w in caught if "bridge" in str(w.message)], [
        str(w.message) for w in caught
    ]
    assert again.installed and ens.shared is trunk
    assert ens.bridges[kb.members.parse(result.member)] is head


@pytest.mark.large
def test_a_better_bridge_fitted_before_is_kept(bridged_ensemble, digits):
    # The trained ensemble's Type I head had 20 epochs on a real teacher
    # (the tiny ensemble's near-uniform teacher leaves every head within
    # noise of it, so which one wins there is chance).
    ens = bridged_ensemble
    member = kb.members.BridgeMember("type1", (0, 1), 0.5)
    fitted = ens.bridges[member]
    before = _val_kl(ens, member, digits.validation)
    # One batch of one epoch: a head far from its teacher.
    with pytest.warns(UserWarning, match="kept the bridge 'type1_0-1_r0.5'"):
        result = ens.tune_bridge(
            digits.train.take(1), validation_data=digits.validation,
            tuner="random", max_trials=1, epochs=1, verbose=0,
        )  # fmt: skip
    assert result.best["val_kl"] > before
    assert result.installed is False and ens.bridges[member] is fitted
    assert _val_kl(ens, member, digits.validation) == pytest.approx(before)


@pytest.mark.large
def test_a_search_leaves_the_callers_keras_session(tiny_ensemble, digits):
    """KerasTuner clears Keras' session before it builds each trial's
    model (`keras.backend.clear_session`). The caller's Keras settings,
    layer-name counters and global seed (all in that session) hold after
    the search."""
    interactive = keras.config.is_interactive_logging_enabled()
    filtering = keras.config.is_traceback_filtering_enabled()
    # Both away from their defaults, which a cleared session restores.
    keras.config.disable_interactive_logging()
    keras.config.disable_traceback_filtering()
    try:
        before = keras.layers.Dense(1).name
        session = compat.keras_session()
        tiny_ensemble.tune_bridge(
            digits.train.take(1), validation_data=digits.validation.take(1),
            tuner="random", max_trials=1, epochs=1, verbose=0,
        )  # fmt: skip
        assert not keras.config.is_interactive_logging_enabled()
        assert not keras.config.is_traceback_filtering_enabled()
        assert compat.keras_session() == session  # the seed's too
        # Cleared, the counters would name a new Dense "dense" again.
        after = keras.layers.Dense(1).name
        assert after != "dense" and after != before, (before, after)
    finally:
        if interactive:
            keras.config.enable_interactive_logging()
        if filtering:
            keras.config.enable_traceback_filtering()


def test_bad_callbacks_are_refused_before_the_search(tiny_ensemble, digits):
    with pytest.raises(ValueError, match="`callbacks` must be a list of"):
        tiny_ensemble.tune_bridge(
            digits.train, validation_data=digits.validation, verbose=0,
            callbacks=keras.callbacks.EarlyStopping(),
        )  # fmt: skip
    assert not tiny_ensemble.bridges
