"""``format="litert"``: one ``.tflite`` file for LiteRT (TensorFlow Lite).

The file has the ``serving_default`` signature only, with the input and
output names of the SavedModel's, optionally quantised after training
(``quantization="dynamic_range"`` or ``"float16"``), and carries the
export's metadata as its flatbuffer metadata entry ``keras_bridge``.
"""

import json
import os
import tempfile

import tensorflow as tf

from keras_bridge import compat
from keras_bridge.atomic_files import atomic_write, check_target
from keras_bridge.export.metadata import METADATA_KEY
from keras_bridge.export.signature import serving_archive
from keras_bridge.messages import print_msg

#: Post-training quantisations of a LiteRT export (None keeps float32).
QUANTIZATIONS = ("dynamic_range", "float16")


def _flatbuffer(model, quantization: str | None) -> bytes:
    # Converted from the SavedModel's signature, not from a concrete
    # function: the converter freezes Keras 3 variables only when it
    # restores them from a SavedModel (a concrete function gives a model
    # that reads uninitialised variables), and the signature carries the
    # output names into the TFLite signature.
    with tempfile.TemporaryDirectory(prefix="keras_bridge_tflite_") as tmp:
        serving_archive(model).write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=["serving_default"]
        )
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def _with_metadata(flatbuffer: bytes, info: dict) -> bytes:
    # The file carries its metadata, so nothing can separate the two.
    return compat.add_tflite_metadata(
        flatbuffer, METADATA_KEY, json.dumps(info).encode()
    )


def read_litert_metadata(filepath) -> dict:
    """The metadata that `export_litert` embedded in a ``.tflite`` file.

    Args:
        filepath: a ``.tflite`` file written by `export_litert`.

    Returns:
        The dict of `keras_bridge.export.metadata.describe`: members,
        serving names, temperature, ...

    Example:

    >>> path = ens.export("digits.tflite", format="litert", verbose=False,
    ...     members=["mode_0", "type1_0-1_r0.5"])
    >>> read_litert_metadata(path)["members"]
    ['mode_0', 'type1_0-1_r0.5']
    """
    with open(filepath, "rb") as handle:
        data = compat.read_tflite_metadata(handle.read(), METADATA_KEY)
    if data is not None:
        return json.loads(data)
    raise ValueError(
        f"{os.fspath(filepath)!r} has no {METADATA_KEY!r} metadata; it was "
        "not written by `keras_bridge.export.litert.export_litert`."
    )


def export_litert(
    model,
    filepath,
    info,
    overwrite: bool = False,
    quantization: str | None = None,
    verbose: bool = True,
) -> str:
    """Writes an inference model as a LiteRT (TFLite) model.

    Converted with `tf.lite.TFLiteConverter` from the ``serving_default``
    signature of the SavedModel (see `keras_bridge.export`), so the
    model's signature ``serving_default`` has the input ``inputs`` (any
    batch size) and the same named outputs; run it with the signature
    runner of an interpreter (``ai_edge_litert.interpreter.Interpreter``,
    or ``tf.lite.Interpreter``, which TF 2.21 still ships but
    deprecates). The metadata is embedded in the file as the metadata
    entry ``keras_bridge`` (`read_litert_metadata`), so there is no side
    file. The file is converted in memory and written atomically.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        filepath: the ``.tflite`` file to write.
        info: the metadata of the export
            (`keras_bridge.export.metadata.describe`).
        overwrite: replace an existing file.
        quantization: None (float32), ``"dynamic_range"`` (weights stored
            as int8, matrix products on int8 activations quantised on
            the fly) or ``"float16"`` (weights stored as float16).
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> from keras_bridge.export.metadata import describe
    >>> members = ["mode_0", "type1_0-1_r0.5"]
    >>> model = ens.inference_model(members)
    >>> info = describe(model, members, ens.temperature)
    >>> path = export_litert(model, "digits.tflite", info, verbose=False)
    >>> interpreter = tf.lite.Interpreter(model_path=path)
    >>> runner = interpreter.get_signature_runner("serving_default")
    >>> outputs = runner(inputs=x_test[:1])
    >>> sorted(outputs)
    ['class_ids', 'member_probabilities', 'mutual_information',
     'predictive_entropy', 'probabilities']
    >>> outputs["member_probabilities"].shape
    (1, 2, 10)
    """
    check_quantization("litert", quantization)
    path = check_target(filepath, folder=False, overwrite=overwrite)
    flatbuffer = _with_metadata(_flatbuffer(model, quantization), info)
    with atomic_write(path, overwrite=overwrite) as staging:
        with open(staging, "wb") as handle:
            handle.write(flatbuffer)
    if verbose:
        names = info["serving_names"]
        kind = quantization or "float32"
        print_msg(
            f"Saved a LiteRT model ({kind}) of {len(names)} members to {path}."
        )
    return path


def check_quantization(format: str, quantization) -> None:
    """Checks ``quantization``: None, or one of `QUANTIZATIONS` with
    ``format="litert"``."""
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be None or one of {QUANTIZATIONS}; "
            f"received quantization={quantization!r}."
        )
    if format != "litert":
        raise ValueError(
            f"`quantization` applies only to format='litert'; received "
            f"quantization={quantization!r} with format={format!r}."
        )
