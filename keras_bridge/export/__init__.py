"""Exporting an ensemble for serving: TF SavedModel, ONNX and LiteRT.

All formats hold one graph from the backbone's input to the outputs of
`keras_bridge.layers.EnsembleOutputs`; every trunk runs once per request
and the bridges read its feature maps. One module per format
(`saved_model`, `onnx`, `litert`); `signature` builds the graph they
share and `metadata` what they record about the members.

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
model's metadata (key ``keras_bridge``) and to the LiteRT model's metadata
(entry ``keras_bridge``); `read_saved_model_metadata`,
`read_onnx_metadata` and `read_litert_metadata` read them back.

The LiteRT (TFLite) model has the ``serving_default`` signature only, with
the same input and output names, optionally quantised after training
(``quantization="dynamic_range"`` or ``"float16"``).
"""

import os

from keras_bridge.atomic_files import (
    check_target,
    clean_leftovers,
    saved_model_or_empty,
)
from keras_bridge.export import litert, metadata, onnx, saved_model, signature
from keras_bridge.export.litert import QUANTIZATIONS, read_litert_metadata
from keras_bridge.export.metadata import serving_name
from keras_bridge.export.onnx import read_onnx_metadata
from keras_bridge.export.saved_model import read_saved_model_metadata
from keras_bridge.export.signature import INPUT_NAME, MEMBERS_SIGNATURE

#: Export formats, by Keras' names (`keras.Model.export`).
FORMATS = ("tf_saved_model", "onnx", "litert")
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}
_READERS = {
    "tf_saved_model": read_saved_model_metadata,
    "onnx": read_onnx_metadata,
    "litert": read_litert_metadata,
}

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "MEMBERS_SIGNATURE",
    "QUANTIZATIONS",
    "check_arguments",
    "check_destination",
    "check_overwrite",
    "export",
    "litert",
    "metadata",
    "onnx",
    "read_litert_metadata",
    "read_onnx_metadata",
    "read_saved_model_metadata",
    "saved_model",
    "serving_name",
    "signature",
]


def check_arguments(format: str, quantization=None, opset_version=None) -> None:
    """Checks the options of an export request, before any work.

    Example:

    >>> check_arguments("litert", quantization="int4")
    Traceback (most recent call last):
    ...
    ValueError: `quantization` must be None or one of ('dynamic_range',
    'float16'); received quantization='int4'.
    >>> check_arguments("tflite")
    Traceback (most recent call last):
    ...
    ValueError: format='tflite' is now format='litert' (Keras' name for
    TFLite); the file still ends in '.tflite'.
    """
    if format == "tflite":
        raise ValueError(
            "format='tflite' is now format='litert' (Keras' name for "
            "TFLite); the file still ends in '.tflite'."
        )
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {FORMATS}; received format={format!r}."
        )
    litert.check_quantization(format, quantization)
    if opset_version is None:
        return
    if isinstance(opset_version, bool) or not isinstance(opset_version, int):
        raise ValueError(
            f"`opset_version` must be None or a positive int; received "
            f"opset_version={opset_version!r}."
        )
    if opset_version < 1:
        raise ValueError(
            f"`opset_version` must be None or a positive int; received "
            f"opset_version={opset_version!r}."
        )
    if format != "onnx":
        raise ValueError(
            f"`opset_version` applies only to format='onnx'; received "
            f"opset_version={opset_version!r} with format={format!r}."
        )


def _written_by_an_export(path: str, format: str) -> bool:
    try:
        _READERS[format](path)
    except Exception:  # unreadable, or not ours: either way not ours
        return False
    return True


def check_overwrite(filepath, format: str, overwrite=None) -> bool:
    """Checks that an export may write ``filepath``; returns the
    ``overwrite`` flag for the write.

    ``overwrite=None`` (the default of `BridgeEnsemble.export` and
    `BridgeEnsemble.save`) replaces only an earlier keras-bridge export
    of the same format; ``True`` also any SavedModel, empty folder or
    file of the format; ``False`` nothing. A folder that is not a
    SavedModel is never replaced.

    Example:

    >>> path = ens.export("serving/digits/1", members=["mode_0"],
    ...     verbose=False)
    >>> check_overwrite("serving/digits/1", "tf_saved_model")
    True
    >>> os.makedirs("serving/digits/2")
    >>> check_overwrite("serving/digits/2", "tf_saved_model")
    Traceback (most recent call last):
    ...
    FileExistsError: '.../serving/digits/2' exists and is not a keras-bridge
    export; pass `overwrite=True` to replace it.
    """
    folder = format == "tf_saved_model"
    replaces = saved_model_or_empty if folder else None
    if overwrite is not None:
        check_target(filepath, folder, overwrite, "filepath", replaces)
        return overwrite
    path = check_target(filepath, folder, True, "filepath", replaces)
    if os.path.exists(path) and not _written_by_an_export(path, format):
        raise FileExistsError(
            f"{path!r} exists and is not a keras-bridge export; pass "
            "`overwrite=True` to replace it."
        )
    return True


def check_destination(filepath, format: str, overwrite=None) -> bool:
    """Checks where an export writes, before any work; returns the
    ``overwrite`` flag for the write (see `check_overwrite`).

    Puts back the previous version an interrupted replace left aside
    first, so ``overwrite`` protects it too, then checks the target and
    the file suffix of the format.

    Example:

    >>> check_destination("digits.onnx", "onnx")
    True
    >>> check_destination("digits.tflite", "onnx")
    Traceback (most recent call last):
    ...
    ValueError: `filepath` must end in '.onnx' for format='onnx'; received
    filepath='digits.tflite'.
    """
    clean_leftovers(filepath)
    overwrite = check_overwrite(filepath, format, overwrite)
    suffix = SUFFIXES.get(format)
    if suffix and not os.fspath(filepath).endswith(suffix):
        raise ValueError(
            f"`filepath` must end in {suffix!r} for format={format!r}; "
            f"received filepath={os.fspath(filepath)!r}."
        )
    return overwrite


def export(
    model,
    filepath,
    info,
    format: str = "tf_saved_model",
    *,
    overwrite: bool | None = None,
    verbose: bool = True,
    quantization: str | None = None,
    opset_version: int | None = None,
) -> str:
    """Exports an inference model as a SavedModel, ONNX or LiteRT file
    (see `BridgeEnsemble.export`).

    Example:

    >>> from keras_bridge.export.metadata import describe
    >>> model = ens.inference_model(["mode_0"])
    >>> info = describe(model, ["mode_0"], ens.temperature)
    >>> saved = export(model, "serving/digits/1", info, verbose=False)
    >>> onnx_file = export(model, "digits.onnx", info, format="onnx",
    ...     verbose=False)
    >>> litert_file = export(model, "digits.tflite", info, format="litert",
    ...     quantization="float16", verbose=False)
    >>> os.path.isdir(saved), os.path.isfile(onnx_file), os.path.isfile(
    ...     litert_file)
    (True, True, True)
    """
    check_arguments(format, quantization, opset_version)
    if format == "onnx":
        onnx.check_available()
    overwrite = check_destination(filepath, format, overwrite)
    if format == "tf_saved_model":
        return saved_model.export_saved_model(
            model, filepath, info, overwrite, verbose
        )
    if format == "litert":
        return litert.export_litert(
            model, filepath, info, overwrite, quantization, verbose
        )
    return onnx.export_onnx(
        model, filepath, info, overwrite, opset_version, verbose
    )
