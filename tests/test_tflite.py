"""TFLite (LiteRT) export: outputs, quantisation, safe writes.

The interpreter is `tf.lite.Interpreter`, which TF 2.21 still ships (it
warns that LiteRT's `ai_edge_litert` replaces it; both read the same
file). Every call runs at batch 1, as on a device.
"""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_bridge as kb

#: One worker runs this module: its tests share `litert_files`.
pytestmark = pytest.mark.xdist_group("litert")

SERVING_OUTPUTS = [
    "class_ids",
    "member_probabilities",
    "mutual_information",
    "predictive_entropy",
    "probabilities",
]

#: Largest change of any probability (ensemble or member) that a
#: quantisation may cause, against the float32 file, in units of its
#: relative rounding step s: float16 keeps 11 significant bits (s =
#: 2**-11); dynamic range stores int8 weights per channel and feeds each
#: matrix product 8-bit activations (s = 1/254 of the largest value). If
#: the 8 weight layers on a member's path all erred by s the same way,
#: its logits (which span about 8 units on trained digits) would move by
#: about 8 * 8 * s, and a probability moves by at most half as much:
#: 32 s. The bound is 40 s (float16 0.02, dynamic range 0.15). Errors do not all
#: add up: on digits ensembles of three seeds the largest was 5 s to 7 s
#: (float16 <= 0.0024, dynamic range <= 0.026), so the bounds hold for
#: any seed and still catch a broken conversion (outputs off by O(1)).
TOLERANCE = {"float16": 0.02, "dynamic_range": 0.15}


def _runner(path):
    with warnings.catch_warnings():
        # The message starts with blanks: match anywhere.
        warnings.filterwarnings("ignore", r"(?s).*tf.lite.Interpreter is")
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    return interpreter, interpreter.get_signature_runner("serving_default")


def _run_one_by_one(runner, x) -> dict:
    outputs = [runner(inputs=x[i : i + 1]) for i in range(len(x))]
    return {
        name: np.concatenate([output[name] for output in outputs])
        for name in SERVING_OUTPUTS
    }


@pytest.fixture(scope="session")
def x_test(digits):
    return kb.data.to_numpy(digits.test)[0]


@pytest.fixture(scope="session")
def litert_files(read_only_bridged, shared_folder):
    """The trained ensemble's LiteRT files, float32 and both quantised,
    converted once per test run for the tests that only read them (a
    conversion is most of a test's time)."""
    kinds = ("float32", "dynamic_range", "float16")

    def convert(folder):
        for kind in kinds:
            read_only_bridged.export(
                folder / "files" / f"{kind}.tflite",
                format="litert",
                quantization=None if kind == "float32" else kind,
                verbose=False,
            )

    folder = shared_folder("session-litert", convert) / "files"
    return {kind: str(folder / f"{kind}.tflite") for kind in kinds}


@pytest.mark.large
def test_tflite_outputs_equal_predict(read_only_bridged, x_test, litert_files):
    ens = read_only_bridged
    path = litert_files["float32"]
    interpreter, runner = _runner(path)
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["inputs"], "outputs": SERVING_OUTPUTS}
    }
    x = x_test[:8]
    outputs = _run_one_by_one(runner, x)
    # One batch of 17 (one trace); its first 8 rows are x's outputs.
    expected17 = ens.predict(x_test[:17])
    expected = {key: value[:8] for key, value in expected17.items()}
    assert sorted(outputs) == sorted(expected) == SERVING_OUTPUTS
    for name in ("probabilities", "member_probabilities"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5)
    for name in ("predictive_entropy", "mutual_information"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5)
    assert outputs["class_ids"].dtype == np.int32
    np.testing.assert_array_equal(outputs["class_ids"], expected["class_ids"])
    # Any batch size: the signature runner resizes the input.
    batch = runner(inputs=x_test[:17])
    np.testing.assert_allclose(
        batch["probabilities"], expected17["probabilities"], atol=1e-5
    )
    info = kb.export.read_litert_metadata(path)
    assert info["members"] == ens.member_names()
    assert info["serving_names"] == [
        kb.export.serving_name(m) for m in ens.member_names()
    ]
    assert info["temperature"] == ens.temperature


@pytest.mark.large
def test_quantized_files_are_smaller_and_close(
    tiny_ensemble, x_test, litert_files
):
    exported = litert_files
    size = {kind: os.path.getsize(path) for kind, path in exported.items()}
    # Sizes depend on the architecture only, not on the weights' values.
    assert size["dynamic_range"] < size["float16"] < size["float32"]
    reference = _run_one_by_one(_runner(exported["float32"])[1], x_test)
    probabilities = reference["probabilities"]
    top2 = np.sort(probabilities, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    for kind, tolerance in TOLERANCE.items():
        outputs = _run_one_by_one(_runner(exported[kind])[1], x_test)
        assert kb.export.read_litert_metadata(exported[kind]) == (
            kb.export.read_litert_metadata(exported["float32"])
        )
        for name in ("probabilities", "member_probabilities"):
            error = np.abs(outputs[name] - reference[name]).max()
            assert error <= tolerance, (kind, name, error)
        # With every probability within `tolerance`, an image whose top
        # two classes are more than 2 * tolerance apart keeps its class.
        agreement = np.mean(outputs["class_ids"] == reference["class_ids"])
        assert agreement >= np.mean(margin > 2 * tolerance), kind
        assert agreement >= 0.95, kind
    # An existing file is replaced only when asked, and never by a folder
    # (refused before any conversion: any ensemble shows it).
    path = exported["float32"]
    before = {kind: os.path.getsize(p) for kind, p in exported.items()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_ensemble.export(
            path, format="litert", overwrite=False, verbose=False
        )
    assert kb.export.check_overwrite(path, "litert")  # ours: replaced
    with pytest.raises(ValueError, match="is a file; this writes a folder"):
        tiny_ensemble.export(path, overwrite=True, verbose=False)
    assert sorted(os.listdir(os.path.dirname(path))) == [
        "dynamic_range.tflite",
        "float16.tflite",
        "float32.tflite",
    ]
    assert {kind: os.path.getsize(p) for kind, p in exported.items()} == before


def test_bad_quantization_is_refused_before_any_work(tmp_path):
    backbone = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    ens = kb.BridgeEnsemble(backbone)  # no members: refused first anyway
    with pytest.raises(ValueError, match="`quantization` must be None or"):
        ens.export(tmp_path / "m.tflite", format="litert", quantization="int8")
    with pytest.raises(ValueError, match="`quantization` applies only to"):
        ens.export(tmp_path / "m", quantization="float16")
    with pytest.raises(ValueError, match="`format` must be one of"):
        ens.export(tmp_path / "m.tfl", format="lite")
    with pytest.raises(ValueError, match="format='litert'"):
        ens.export(tmp_path / "m.tflite", format="tflite")  # Keras' name
    assert os.listdir(tmp_path) == []


def test_a_users_tflite_file_is_replaced_only_when_told(tmp_path):
    users = tmp_path / "model.tflite"  # not written by keras-bridge
    users.write_bytes(b"the user's model")
    with pytest.raises(FileExistsError, match="not a keras-bridge export"):
        kb.export.check_overwrite(users, "litert")
    assert kb.export.check_overwrite(users, "litert", overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        kb.export.check_overwrite(users, "litert", overwrite=False)
    assert users.read_bytes() == b"the user's model"


@pytest.mark.large
def test_failed_tflite_export_leaves_no_file(
    tiny_ensemble, tmp_path, monkeypatch
):
    ens = tiny_ensemble  # safe writes need no trained members
    path = tmp_path / "out" / "digits.tflite"
    # An earlier file (replaced with overwrite=True, whoever wrote it).
    path.parent.mkdir()
    path.write_bytes(b"an earlier export")
    before = path.read_bytes()
    scratch = tmp_path / "scratch"  # where the SavedModel is staged
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", os.fspath(scratch))
    from_saved_model = tf.lite.TFLiteConverter.from_saved_model

    def failing_converter(*args, **kwargs):
        converter = from_saved_model(*args, **kwargs)

        def convert():
            raise RuntimeError("conversion failed")

        converter.convert = convert
        return converter

    monkeypatch.setattr(
        tf.lite.TFLiteConverter, "from_saved_model", failing_converter
    )
    for target in (path, tmp_path / "out" / "new.tflite"):
        with pytest.raises(RuntimeError, match="conversion failed"):
            ens.export(
                target, format="litert", members=["mode_1"], overwrite=True
            )
    monkeypatch.undo()

    # A crash while the converted file is moved into place.
    def failing_move(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(kb.atomic_files, "_move_into_place", failing_move)
    with pytest.raises(OSError, match="disk full"):
        ens.export(path, format="litert", members=["mode_1"], overwrite=True)
    assert os.listdir(tmp_path / "out") == ["digits.tflite"]
    assert path.read_bytes() == before
    # No staged SavedModel is left. (TensorFlow's AutoGraph writes the
    # code it generates for a function traced for the first time in this
    # process to the temporary folder too, and keeps it: not ours.)
    left = [
        name
        for name in os.listdir(scratch)
        if not name.startswith("__autograph_generated_file")
    ]
    assert left == []
