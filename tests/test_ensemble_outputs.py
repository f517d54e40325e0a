import keras
import numpy as np
import pytest

from keras_bridge.layers import EnsembleOutputs

KEYS = {
    "probabilities",
    "class_ids",
    "member_probabilities",
    "predictive_entropy",
    "mutual_information",
}


def _member_logits(members=3, batch=4, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (2 * rng.normal(size=(batch, classes))).astype("float32")
        for _ in range(members)
    ]


def _softmax(z):
    z = np.asarray(z, "float64")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _entropy(p):
    return -np.sum(p * np.log(p), axis=-1)


def _reference(member_logits, temperature):
    members = np.stack([_softmax(z) for z in member_logits], axis=1)
    mean = members.mean(axis=1)
    probabilities = _softmax(np.log(mean) / temperature)
    return {
        "probabilities": probabilities,
        "class_ids": probabilities.argmax(axis=-1),
        "member_probabilities": members,
        "predictive_entropy": _entropy(probabilities),
        "mutual_information": _entropy(mean) - _entropy(members).mean(axis=1),
    }


def _numpy(outputs):
    return {key: np.asarray(value) for key, value in outputs.items()}


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_outputs_match_numpy(temperature):
    logits = _member_logits()
    outputs = _numpy(EnsembleOutputs(temperature)(logits))
    expected = _reference(logits, temperature)
    assert set(outputs) == KEYS
    assert outputs["probabilities"].shape == (4, 5)
    assert outputs["member_probabilities"].shape == (4, 3, 5)
    for key in ("predictive_entropy", "mutual_information"):
        assert outputs[key].shape == (4,)
    assert outputs["class_ids"].dtype == np.int32
    np.testing.assert_array_equal(outputs["class_ids"], expected["class_ids"])
    # Temperature never changes the predicted class.
    np.testing.assert_array_equal(
        outputs["class_ids"],
        expected["member_probabilities"].mean(axis=1).argmax(axis=-1),
    )
    for key in KEYS - {"class_ids"}:
        np.testing.assert_allclose(
            outputs[key], expected[key], atol=1e-5, err_msg=key
        )
    np.testing.assert_allclose(
        outputs["probabilities"].sum(axis=-1), np.ones(4), atol=1e-6
    )


def test_temperature_one_is_the_mean_of_the_members():
    logits = _member_logits(seed=1)
    outputs = _numpy(EnsembleOutputs()(logits))
    mean = np.mean([_softmax(z) for z in logits], axis=0)
    np.testing.assert_allclose(outputs["probabilities"], mean, atol=1e-6)
    # Entropy of the mean = mutual information + mean member entropy.
    np.testing.assert_allclose(
        outputs["predictive_entropy"] - outputs["mutual_information"],
        _entropy(outputs["member_probabilities"]).mean(axis=1),
        atol=1e-5,
    )


def test_mutual_information_is_nonnegative_and_zero_for_equal_members():
    for seed in range(5):
        logits = _member_logits(members=4, batch=8, seed=seed)
        outputs = _numpy(EnsembleOutputs()(logits))
        assert (outputs["mutual_information"] >= -1e-6).all()
    same = _member_logits(members=1, seed=7) * 3
    outputs = _numpy(EnsembleOutputs(temperature=2.0)(same))
    np.testing.assert_allclose(
        outputs["mutual_information"], np.zeros(4), atol=1e-6
    )
    np.testing.assert_allclose(
        outputs["member_probabilities"][:, 0],
        outputs["member_probabilities"][:, 2],
    )


def test_config_round_trip_keeps_temperature():
    layer = EnsembleOutputs(temperature=1.5, name="outputs")
    config = layer.get_config()
    assert config["temperature"] == 1.5
    clone = EnsembleOutputs.from_config(config)
    assert clone.temperature == 1.5
    assert clone.name == "outputs"
    logits = _member_logits(seed=2)
    for key, value in _numpy(layer(logits)).items():
        np.testing.assert_array_equal(_numpy(clone(logits))[key], value)


def test_saved_model_gives_the_same_outputs(tmp_path):
    inputs = [keras.Input((5,)) for _ in range(2)]
    outputs = EnsembleOutputs(temperature=0.7, name="ensemble")(inputs)
    model = keras.Model(inputs, outputs)
    logits = _member_logits(members=2, seed=3)
    expected = _numpy(model(logits))

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("ensemble").temperature == 0.7
    got = _numpy(loaded(logits))
    assert set(got) == KEYS
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="`temperature`"):
        EnsembleOutputs(temperature=temperature)
