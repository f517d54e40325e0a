import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import keras_bridge as kb

#: One worker runs this module: its tests share `served`.
pytestmark = pytest.mark.xdist_group("served")

SERVING_OUTPUTS = {
    "probabilities": ("float32", [-1, 10]),
    "class_ids": ("int32", [-1]),
    "member_probabilities": ("float32", [-1, 5, 10]),
    "predictive_entropy": ("float32", [-1]),
    "mutual_information": ("float32", [-1]),
}
MEMBER_OUTPUTS = [
    "mode_0",
    "mode_1",
    "type1_0_1_r0_5",
    "type2_0_1_r0_5",
    "type1_0_1_rany",
]


@pytest.fixture(scope="session")
def batches(digits):
    x, _ = kb.data.to_numpy(digits.test)
    return {"batch1": x[:1], "batch17": x[5:22]}


@pytest.fixture(scope="session")
def five_members(doc_ensemble_file):
    """An ensemble of every kind of member (the docstrings' small one:
    two modes, a Type I, a Type II and a conditioned bridge), for the
    tests that export, save or predict with it and change nothing."""
    ens = kb.BridgeEnsemble.load(doc_ensemble_file)
    assert ens.member_names() == [
        "mode_0", "mode_1", "type1_0-1_r0.5", "type2_0-1_r0.5",
        "type1_0-1_rany",
    ]  # fmt: skip
    return ens


@pytest.fixture(scope="session")
def served(five_members, batches, shared_folder):
    """An export, answered by `tf_serving_client.py` in a fresh process:
    once per test run."""
    client = os.path.join(os.path.dirname(__file__), "tf_serving_client.py")

    def serve(base):
        path = five_members.export(base / "digits" / "1", verbose=False)
        np.savez(base / "inputs.npz", **batches)
        subprocess.run(
            [sys.executable, client, path, str(base / "inputs.npz"),
             str(base / "results.npz")],
            check=True,
            capture_output=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip

    base = shared_folder("session-served", serve)
    with open(base / "results.json") as handle:
        report = json.load(handle)
    path = str(base / "digits" / "1")
    return path, dict(np.load(base / "results.npz")), report


@pytest.mark.large
def test_serving_signatures_follow_the_contract(served):
    path, _, report = served
    assert report["keras_bridge_imported"] is False
    default = report["signatures"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"] == {
        "inputs": {"dtype": "float32", "shape": [-1, 8, 8, 1]}
    }
    outputs = {
        key: (value["dtype"], value["shape"])
        for key, value in default["outputs"].items()
    }
    assert outputs == SERVING_OUTPUTS
    members = report["signatures"]["members"]
    assert members["method_name"] == "tensorflow/serving/predict"
    assert sorted(members["outputs"]) == sorted(MEMBER_OUTPUTS)
    with open(os.path.join(path, "assets.extra", "keras_bridge.json")) as f:
        metadata = json.load(f)
    assert metadata["serving_names"] == MEMBER_OUTPUTS
    assert os.path.basename(path) == "1"


@pytest.mark.large
def test_served_outputs_equal_predict(served, five_members, batches):
    _, results, _ = served
    for batch, x in batches.items():
        expected = five_members.predict(x)
        for key, value in expected.items():
            for route in ("session/serving_default", "grpc"):
                served_value = results[f"{route}/{batch}/{key}"]
                assert served_value.shape == value.shape
                np.testing.assert_allclose(served_value, value, atol=1e-5)
        for index, name in enumerate(MEMBER_OUTPUTS):
            np.testing.assert_allclose(
                results[f"session/members/{batch}/{name}"],
                expected["member_probabilities"][:, index],
                atol=1e-5,
            )


@pytest.mark.large
def test_bad_requests_get_a_clear_error(served):
    _, _, report = served
    shape_error = report["errors"]["shape"]
    assert "Cannot feed value of shape (1, 7, 8, 1)" in shape_error
    assert "(None, 8, 8, 1)" in shape_error
    dtype_error = report["errors"]["dtype"]
    assert "expected to be a float tensor but is a int32" in dtype_error


@pytest.mark.large
def test_onnx_matches_keras(five_members, batches, tmp_path):
    ens = five_members
    path = ens.export(tmp_path / "digits.onnx", format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["inputs"]
    names = [o.name for o in session.get_outputs()]
    assert set(names) == set(SERVING_OUTPUTS)
    noise = np.random.default_rng(0).random((17, 8, 8, 1), dtype="float32")
    for x in (*batches.values(), noise, noise[:1]):
        expected = ens.predict(x)
        for name, value in zip(names, session.run(None, {"inputs": x})):
            np.testing.assert_allclose(value, expected[name], atol=1e-5)
    metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(metadata["keras_bridge"])["members"] == (
        ens.member_names()
    )


@pytest.mark.large
def test_export_never_leaves_a_partial_version(
    tiny_ensemble, tmp_path, monkeypatch
):
    ens = tiny_ensemble  # safe writes need no trained members
    path = tmp_path / "digits" / "1"
    ens.export(path, members=["mode_0"], verbose=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ens.export(path, overwrite=False, verbose=False)
    with pytest.raises(ValueError, match="is a folder; this writes a file"):
        ens.export(tmp_path / "digits" / "1", format="onnx", verbose=False)
    for format, name in (("onnx", "model_out"), ("litert", "m.onnx")):
        with pytest.raises(
            ValueError, match=r"`filepath` must end in '\."
        ) as e:
            ens.export(tmp_path / name, format=format, verbose=False)
        assert name in str(e.value) and format in str(e.value)
        assert not (tmp_path / name).exists()

    # A crash after the SavedModel is written, before it is in place.
    monkeypatch.setattr(kb.export.saved_model, "METADATA_FILE", None)
    with pytest.raises(TypeError):
        ens.export(tmp_path / "digits" / "2", verbose=False)
    with pytest.raises(TypeError):
        ens.export(path, overwrite=True, verbose=False)
    assert os.listdir(tmp_path / "digits") == ["1"]
    with open(path / "assets.extra" / "keras_bridge.json") as handle:
        assert json.load(handle)["members"] == ["mode_0"]
    monkeypatch.undo()

    ens.export(path, verbose=False)  # an earlier export: replaced
    assert os.listdir(tmp_path / "digits") == ["1"]
    with open(path / "assets.extra" / "keras_bridge.json") as handle:
        assert json.load(handle)["members"] == ens.member_names()


def test_export_replaces_only_an_earlier_export_by_default(
    tiny_ensemble, tmp_path
):
    ens = tiny_ensemble
    # Not written by keras-bridge: a SavedModel, an empty folder, a file.
    users = tmp_path / "serving" / "1"
    os.makedirs(users)
    (users / "saved_model.pb").write_text("the user's model")
    os.makedirs(tmp_path / "serving" / "2")
    (tmp_path / "m.onnx").write_text("the user's ONNX model")
    for path, format in (
        (users, "tf_saved_model"),
        (tmp_path / "serving" / "2", "tf_saved_model"),
        (tmp_path / "m.onnx", "onnx"),
    ):
        with pytest.raises(FileExistsError, match="not a keras-bridge") as e:
            ens.export(path, format=format, verbose=False)
        assert "overwrite=True" in str(e.value)
    assert (users / "saved_model.pb").read_text() == "the user's model"
    assert os.listdir(tmp_path / "serving" / "2") == []
    assert (tmp_path / "m.onnx").read_text() == "the user's ONNX model"
    # The same default as `save`: an earlier export is replaced.
    first = ens.export(
        tmp_path / "m.onnx", format="onnx", overwrite=True, verbose=False
    )
    info = kb.export.read_onnx_metadata(first)
    ens.export(first, format="onnx", members=["mode_1"], verbose=False)
    assert kb.export.read_onnx_metadata(first)["members"] == ["mode_1"]
    assert info["members"] == ens.member_names()


@pytest.mark.large
def test_export_and_load_take_keras_arguments(tiny_ensemble, tmp_path):
    ens = tiny_ensemble
    path = ens.export(tmp_path / "m.onnx", "onnx", False, opset_version=15)
    opsets = [o.version for o in onnx.load(path).opset_import if not o.domain]
    assert opsets == [15]
    with pytest.raises(ValueError, match="applies only to format='onnx'"):
        ens.export(tmp_path / "1", opset_version=15)
    with pytest.raises(ValueError, match="`verbose` must be True or False"):
        ens.export(tmp_path / "1", "tf_saved_model", ["mode_0"])
    saved = ens.save(tmp_path / "e.keras")
    loaded = kb.BridgeEnsemble.load(saved, custom_objects={}, safe_mode=True)
    assert loaded.member_names() == ens.member_names()
    with pytest.raises(TypeError):
        kb.BridgeEnsemble.load(saved, {})  # by keyword, as Keras' order
    assert sorted(os.listdir(tmp_path)) == ["e.keras", "m.onnx"]


@pytest.mark.large
def test_bad_export_requests_are_refused(
    tiny_ensemble, make_mini_backbone, tmp_path
):
    with pytest.raises(ValueError, match="`format` must be one of"):
        tiny_ensemble.export(tmp_path / "m", format="coreml")
    backbone = make_mini_backbone()
    untrained = kb.BridgeEnsemble(backbone, feature_layer="features")
    with pytest.raises(ValueError, match="no members yet.*fit_modes"):
        untrained.export(tmp_path / "m" / "1")
    with pytest.raises(ValueError, match="Nothing to save.*fit_modes"):
        untrained.save(tmp_path / "new" / "e.keras")
    with pytest.raises(ValueError, match="`filepath` must end in '.keras'"):
        tiny_ensemble.save(tmp_path / "e.h5")
    assert os.listdir(tmp_path) == []
    with pytest.warns(UserWarning, match="numbered version folders"):
        tiny_ensemble.export(tmp_path / "m", members=["mode_0"])


@pytest.mark.large
def test_save_and_load_round_trip(five_members, digits, tmp_path):
    ens = five_members
    x, _ = kb.data.to_numpy(digits.test)
    path = tmp_path / "new" / "ensemble.keras"
    ens.save(path)
    loaded = kb.BridgeEnsemble.load(path)
    assert loaded.member_names() == ens.member_names()
    assert loaded.temperature == ens.temperature
    assert loaded.feature_layer == ens.feature_layer
    assert loaded.curve_checks == ens.curve_checks
    assert sorted(loaded.curves) == sorted(ens.curves)
    expected = ens.predict(x)
    outputs = loaded.predict(x)
    for key in expected:
        np.testing.assert_array_equal(outputs[key], expected[key])
    # The curve and its materialised points come back too (called
    # directly: a `predict` would trace each model once more).
    t = np.full((len(x), 1), 0.3, "float32")
    np.testing.assert_allclose(
        loaded.curves[(0, 1)]([x, t], training=False),
        ens.curves[(0, 1)]([x, t], training=False),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        loaded.point_model((0, 1), 0.5)(x, training=False),
        ens.point_model((0, 1), 0.5)(x, training=False),
    )
    # Plain Keras loading gives a model of the serving outputs.
    archive = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        archive(x)["probabilities"], expected["probabilities"], atol=1e-6
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ens.save(path, overwrite=False)
    assert os.listdir(tmp_path / "new") == ["ensemble.keras"]
