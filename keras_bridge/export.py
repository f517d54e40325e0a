"""Exporting an ensemble for serving: TF SavedModel and ONNX.

Both formats hold one graph from the backbone's input to the outputs of
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
to ``assets.extra/keras_bridge.json`` in the SavedModel, and to the ONNX
model's metadata (key ``keras_bridge``).
"""

import json
import os
import re
import warnings

import keras
import tensorflow as tf

from keras_bridge.files import atomic_write, check_target
from keras_bridge.version import __version__

FORMATS = ("tf_saved_model", "onnx")
#: Name of the input of every signature (and of the ONNX graph).
INPUT_NAME = "inputs"
#: Signature of the per-member outputs.
MEMBERS_SIGNATURE = "members"
METADATA_FILE = "keras_bridge.json"


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


def metadata(model, members, temperature: float) -> dict:
    """What an export records about its members, beside the model.

    Example:

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
        overwrite: replace an existing ``path``.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> export_saved_model(model, "serving/digits/1", info)
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
    spec = _input_spec(model)

    def serve(inputs):
        return model(inputs, training=False)

    def per_member(inputs):
        probabilities = model(inputs, training=False)["member_probabilities"]
        return {name: probabilities[:, i] for i, name in enumerate(names)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.add_endpoint(MEMBERS_SIGNATURE, per_member, input_signature=[spec])
    with atomic_write(path, overwrite=overwrite, folder=True) as staging:
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

    >>> export_onnx(model, "digits.onnx", info)
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


def export(
    model,
    path,
    info,
    format: str = "tf_saved_model",
    overwrite: bool = False,
    verbose: bool = True,
) -> str:
    """Exports an inference model as a SavedModel or ONNX (see
    `BridgeEnsemble.export`).

    Example:

    >>> export(model, "serving/digits/1", info)
    >>> export(model, "digits.onnx", info, format="onnx")
    """
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {FORMATS}; received format={format!r}."
        )
    check_target(path, format == "tf_saved_model", overwrite)
    if format == "tf_saved_model":
        return export_saved_model(model, path, info, overwrite, verbose)
    return export_onnx(model, path, info, overwrite, verbose=verbose)
