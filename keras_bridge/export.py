"""Exporting an ensemble for serving: TF SavedModel, ONNX and TFLite.

All formats hold one graph from the backbone's input to the outputs of
`keras_bridge.layers.EnsembleOutputs`; every trunk runs once per request
and the bridges read its feature maps.

The SavedModel has two signatures, both with the predict method name that
TF Serving expects and one input, ``inputs`` (the backbone's input shape
with any batch size):

- ``serving_default``: ``probabilities`` [B, C], ``class_ids`` [B]
  (int32), ``member_probabilities`` [B, M, C], ``predictive_entropy`` [B]
  and ``mutual_information`` [B];
- ``members``: one [B, C] output per member, named by `serving_name`
  (``mode_0``, ``type1_0_1_r0_5``, ...).

Members come in the order of ``members`` (default:
`BridgeEnsemble.member_names`, modes first, then bridges in the order they
were fitted). The order, serving names and temperature are also written
to ``assets.extra/keras_bridge.json`` in the SavedModel, to the ONNX
model's metadata (key ``keras_bridge``) and to the TFLite model's metadata
(entry ``keras_bridge``, read with `read_tflite_metadata`).

The TFLite model (LiteRT) has the ``serving_default`` signature only, with
the same input and output names, optionally quantised after training
(``quantization="dynamic_range"`` or ``"float16"``).
"""

import json
import os
import re
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_bridge.files import (
    atomic_write,
    check_target,
    clean_leftovers,
    saved_model_or_empty,
)
from keras_bridge.version import __version__

FORMATS = ("tf_saved_model", "onnx", "tflite")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}
#: Post-training quantisations of a TFLite export (None keeps float32).
QUANTIZATIONS = ("dynamic_range", "float16")
#: Name of the input of every signature (and of the ONNX graph).
INPUT_NAME = "inputs"
#: Signature of the per-member outputs.
MEMBERS_SIGNATURE = "members"
METADATA_FILE = "keras_bridge.json"
#: Name of the metadata entry of a TFLite export that holds `metadata`.
TFLITE_METADATA = "keras_bridge"


def serving_name(member: str) -> str:
    """The output name of a member in the ``members`` signature.

    Every character other than a letter, digit or underscore becomes an
    underscore, so the name is a valid key for TF Serving's REST and gRPC
    APIs and for ONNX.

    Example:

    >>> serving_name("type1_0-1_r0.5")
    'type1_0_1_r0_5'
    """
    return re.sub(r"[^0-9A-Za-z_]", "_", member)


def _input_spec(model) -> tf.TensorSpec:
    tensor = model.inputs[0]
    return tf.TensorSpec(
        (None, *tensor.shape[1:]), tensor.dtype, name=INPUT_NAME
    )


def _serving_archive(model, names=None) -> keras.export.ExportArchive:
    """The SavedModel's endpoints: ``serving_default`` and, given the
    members' serving ``names``, ``members``."""
    spec = _input_spec(model)

    def serve(inputs):
        return model(inputs, training=False)

    def per_member(inputs):
        probabilities = model(inputs, training=False)["member_probabilities"]
        return {name: probabilities[:, i] for i, name in enumerate(names)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    if names is not None:
        archive.add_endpoint(
            MEMBERS_SIGNATURE, per_member, input_signature=[spec]
        )
    return archive


def metadata(model, members, temperature: float) -> dict:
    """What an export records about its members, beside the model.

    Example:

    >>> model = ens.inference_model(["mode_0", "type1_0-1_r0.5"])
    >>> metadata(model, ["mode_0", "type1_0-1_r0.5"], 1.0)["serving_names"]
    ['mode_0', 'type1_0_1_r0_5']
    """
    tensor = model.inputs[0]
    names = [serving_name(m) for m in members]
    if len(set(names)) != len(names):
        raise ValueError(
            f"`members` must have distinct serving names; received "
            f"{members} -> {names}."
        )
    return {
        "keras_bridge_version": __version__,
        "members": list(members),
        "serving_names": names,
        "temperature": float(temperature),
        "num_classes": int(model.output["probabilities"].shape[-1]),
        "input_name": INPUT_NAME,
        "input_shape": [None, *tensor.shape[1:]],
        "input_dtype": str(tensor.dtype),
    }


def export_saved_model(
    model, path, info, overwrite: bool = False, verbose: bool = True
) -> str:
    """Writes an inference model as a TF Serving SavedModel.

    See the module docs for the signatures. The SavedModel is written to a
    hidden staging folder beside ``path`` and renamed into place at the end
    (`keras_bridge.files.atomic_write`), so TF Serving (which watches
    ``<base>/<model_name>/`` for numbered version folders) never sees a
    half-written version.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        path: the version folder, e.g. ``"serving/digits/1"``.
        info: the `metadata` of the export.
        overwrite: replace an existing SavedModel (or empty folder) at
            ``path``; any other folder is refused.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> members = ["mode_0", "type1_0-1_r0.5"]
    >>> model = ens.inference_model(members)
    >>> info = metadata(model, members, ens.temperature)
    >>> path = export_saved_model(model, "serving/digits/1", info,
    ...     verbose=False)
    >>> sorted(os.listdir(path))
    ['assets', 'assets.extra', ..., 'saved_model.pb', 'variables']
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.basename(path).isdigit():
        warnings.warn(
            f"TF Serving only loads numbered version folders, "
            f"<base>/<model_name>/<version>; {path!r} does not end in a "
            "version number, so a server pointed at its parent will not "
            "see it.",
            stacklevel=4,  # the caller of `BridgeEnsemble.export`
        )
    names = info["serving_names"]
    archive = _serving_archive(model, names)
    with atomic_write(
        path, overwrite=overwrite, folder=True, replaces=saved_model_or_empty
    ) as staging:
        archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w") as handle:
            json.dump(info, handle, indent=2)
    if verbose:
        print(
            f"Saved a SavedModel of {len(names)} members to {path} "
            f"(signatures: serving_default, {MEMBERS_SIGNATURE})."
        )
    return path


def export_onnx(
    model,
    path,
    info,
    overwrite: bool = False,
    opset: int | None = None,
    verbose: bool = True,
) -> str:
    """Writes an inference model as an ONNX model with the serving outputs.

    Converted with `tf2onnx.convert.from_function` from the same graph as
    the SavedModel; the input is ``inputs`` and the outputs carry the
    names of the ``serving_default`` signature. Written atomically.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        path: the ``.onnx`` file to write.
        info: the `metadata` of the export.
        overwrite: replace an existing file.
        opset: ONNX opset; tf2onnx's default when None.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> import onnx
    >>> members = ["mode_0", "type1_0-1_r0.5"]
    >>> model = ens.inference_model(members)
    >>> info = metadata(model, members, ens.temperature)
    >>> path = export_onnx(model, "digits.onnx", info, verbose=False)
    >>> sorted(output.name for output in onnx.load(path).graph.output)
    ['class_ids', 'member_probabilities', 'mutual_information',
     'predictive_entropy', 'probabilities']
    """
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx and onnx: "
            "`pip install keras-bridge[onnx]`."
        ) from error
    path = os.path.abspath(os.fspath(path))
    serve = tf.function(lambda inputs: model(inputs, training=False))
    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=[_input_spec(model)], opset=opset
    )
    onnx.helper.set_model_props(proto, {"keras_bridge": json.dumps(info)})
    with atomic_write(path, overwrite=overwrite) as staging:
        onnx.save(proto, staging)
    if verbose:
        names = info["serving_names"]
        print(f"Saved an ONNX model of {len(names)} members to {path}.")
    return path


def _tflite_flatbuffer(model, quantization: str | None) -> bytes:
    # Converted from the SavedModel's signature, not from a concrete
    # function: the converter freezes Keras 3 variables only when it
    # restores them from a SavedModel (a concrete function gives a model
    # that reads uninitialised variables), and the signature carries the
    # output names into the TFLite signature.
    with tempfile.TemporaryDirectory(prefix="keras_bridge_tflite_") as tmp:
        _serving_archive(model).write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=["serving_default"]
        )
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def _with_tflite_metadata(flatbuffer: bytes, info: dict) -> bytes:
    # The TFLite schema keeps named byte buffers in `Model.metadata`, so
    # the file carries its metadata and nothing can separate the two. TF
    # has no public writer for them; these are the helpers its converter
    # uses to add its own conversion metadata (TF is pinned to 2.21).
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    tflite = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    tflite.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = TFLITE_METADATA
    entry.buffer = len(tflite.buffers) - 1
    tflite.metadata = [*(tflite.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tflite))


def read_tflite_metadata(path) -> dict:
    """The `metadata` that `export_tflite` embedded in a ``.tflite`` file.

    Args:
        path: a ``.tflite`` file written by `export_tflite`.

    Returns:
        The dict of `metadata`: members, serving names, temperature, ...

    Example:

    >>> path = ens.export("digits.tflite", format="tflite", verbose=False)
    >>> read_tflite_metadata(path)["members"] == ens.member_names()
    True
    """
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as handle:
        content = handle.read()
    tflite = schema.Model.GetRootAs(content, 0)
    for index in range(tflite.MetadataLength()):
        entry = tflite.Metadata(index)
        if entry.Name().decode() == TFLITE_METADATA:
            data = tflite.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(data.tobytes())
    raise ValueError(
        f"{os.fspath(path)!r} has no {TFLITE_METADATA!r} metadata; it was "
        "not written by `keras_bridge.export.export_tflite`."
    )


def export_tflite(
    model,
    path,
    info,
    overwrite: bool = False,
    quantization: str | None = None,
    verbose: bool = True,
) -> str:
    """Writes an inference model as a TFLite (LiteRT) model.

    Converted with `tf.lite.TFLiteConverter` from the ``serving_default``
    signature of the SavedModel (see the module docs), so the model's
    signature ``serving_default`` has the input ``inputs`` (any batch
    size) and the same named outputs; run it with the signature runner
    of an interpreter (``ai_edge_litert.interpreter.Interpreter``, or
    ``tf.lite.Interpreter``, which TF 2.21 still ships but deprecates).
    `metadata` is embedded in the file as the metadata entry
    ``keras_bridge`` (`read_tflite_metadata`), so there is no side file.
    The file is converted in memory and written atomically.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        path: the ``.tflite`` file to write.
        info: the `metadata` of the export.
        overwrite: replace an existing file.
        quantization: None (float32), ``"dynamic_range"`` (weights stored
            as int8, matrix products on int8 activations quantised on
            the fly) or ``"float16"`` (weights stored as float16).
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> members = ["mode_0", "type1_0-1_r0.5"]
    >>> model = ens.inference_model(members)
    >>> info = metadata(model, members, ens.temperature)
    >>> path = export_tflite(model, "digits.tflite", info, verbose=False)
    >>> interpreter = tf.lite.Interpreter(model_path=path)
    >>> runner = interpreter.get_signature_runner("serving_default")
    >>> outputs = runner(inputs=x_test[:1])
    >>> sorted(outputs)
    ['class_ids', 'member_probabilities', 'mutual_information',
     'predictive_entropy', 'probabilities']
    >>> outputs["member_probabilities"].shape
    (1, 2, 10)
    """
    _check_quantization("tflite", quantization)
    path = check_target(path, folder=False, overwrite=overwrite)
    flatbuffer = _tflite_flatbuffer(model, quantization)
    flatbuffer = _with_tflite_metadata(flatbuffer, info)
    with atomic_write(path, overwrite=overwrite) as staging:
        with open(staging, "wb") as handle:
            handle.write(flatbuffer)
    if verbose:
        names = info["serving_names"]
        kind = quantization or "float32"
        print(
            f"Saved a TFLite model ({kind}) of {len(names)} members to {path}."
        )
    return path


def _check_quantization(format: str, quantization) -> None:
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be None or one of {QUANTIZATIONS}; "
            f"received quantization={quantization!r}."
        )
    if format != "tflite":
        raise ValueError(
            f"`quantization` applies only to format='tflite'; received "
            f"quantization={quantization!r} with format={format!r}."
        )


def check_arguments(format: str, quantization=None) -> None:
    """Checks the ``format`` and ``quantization`` of an export request.

    Example:

    >>> check_arguments("tflite", quantization="int4")
    Traceback (most recent call last):
    ...
    ValueError: `quantization` must be None or one of ('dynamic_range',
    'float16'); received quantization='int4'.
    """
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {FORMATS}; received format={format!r}."
        )
    _check_quantization(format, quantization)


def export(
    model,
    path,
    info,
    format: str = "tf_saved_model",
    overwrite: bool = False,
    verbose: bool = True,
    quantization: str | None = None,
) -> str:
    """Exports an inference model as a SavedModel, ONNX or TFLite (see
    `BridgeEnsemble.export`).

    Example:

    >>> model = ens.inference_model(["mode_0"])
    >>> info = metadata(model, ["mode_0"], ens.temperature)
    >>> saved = export(model, "serving/digits/1", info, verbose=False)
    >>> onnx_file = export(model, "digits.onnx", info, format="onnx",
    ...     verbose=False)
    >>> tflite_file = export(model, "digits.tflite", info, format="tflite",
    ...     quantization="float16", verbose=False)
    >>> os.path.isdir(saved), os.path.isfile(onnx_file)
    (True, True)
    >>> os.path.getsize(tflite_file) < os.path.getsize(onnx_file)
    True
    """
    check_arguments(format, quantization)
    saved_model = format == "tf_saved_model"
    # Checked before the (slow) conversion, and after an interrupted
    # replace's previous version is put back: `overwrite` protects it too.
    clean_leftovers(path)
    check_target(
        path, saved_model, overwrite,
        replaces=saved_model_or_empty if saved_model else None,
    )  # fmt: skip
    suffix = SUFFIXES.get(format)
    if suffix and not os.fspath(path).endswith(suffix):
        raise ValueError(
            f"`path` must end in {suffix!r} for format={format!r}; "
            f"received path={os.fspath(path)!r}."
        )
    if format == "tf_saved_model":
        return export_saved_model(model, path, info, overwrite, verbose)
    if format == "tflite":
        return export_tflite(
            model, path, info, overwrite, quantization, verbose
        )
    return export_onnx(model, path, info, overwrite, verbose=verbose)
