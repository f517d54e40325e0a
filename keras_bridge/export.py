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
import shutil
import tempfile
import warnings

import keras
import tensorflow as tf

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


def _input_spec(ens) -> tf.TensorSpec:
    tensor = ens.backbone.inputs[0]
    return tf.TensorSpec(
        (None, *tensor.shape[1:]), tensor.dtype, name=INPUT_NAME
    )


def _metadata(ens, members) -> dict:
    from keras_bridge import __version__

    tensor = ens.backbone.inputs[0]
    return {
        "keras_bridge_version": __version__,
        "members": members,
        "serving_names": [serving_name(m) for m in members],
        "temperature": float(ens.temperature),
        "num_classes": ens.num_classes,
        "input_name": INPUT_NAME,
        "input_shape": [None, *tensor.shape[1:]],
        "input_dtype": str(tensor.dtype),
    }


def _check_members(ens, members) -> list:
    if not ens.modes:
        raise ValueError(
            "Nothing to export: the ensemble has no trained modes yet. "
            "Call `fit_modes` (or `set_modes`) first."
        )
    members = list(members or ens.member_names())
    names = [serving_name(m) for m in members]
    if len(set(names)) != len(names):
        raise ValueError(
            f"`members` must have distinct serving names; received "
            f"{members} -> {names}."
        )
    return members


def _check_target(path: str, overwrite: bool) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} exists: a served version is never replaced by "
            "accident. Export to a new version folder, or pass "
            "`overwrite=True`."
        )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def export_saved_model(
    ens, path, members=None, overwrite: bool = False, verbose: bool = True
) -> str:
    """Writes ``ens`` as a TF Serving SavedModel (see the module docs).

    The SavedModel is written to a hidden temporary folder beside
    ``path`` and moved into place at the end, so TF Serving (which watches
    ``<base>/<model_name>/`` for numbered version folders) never sees a
    half-written version, and a crash leaves nothing behind.

    Args:
        ens: a `BridgeEnsemble` with trained modes.
        path: the version folder, e.g. ``"serving/digits/1"``.
        members: member names to serve; default all.
        overwrite: replace an existing ``path``.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> export_saved_model(ens, "serving/digits/1")
    """
    members = _check_members(ens, members)
    path = _check_target(path, overwrite)
    if not os.path.basename(path).isdigit():
        warnings.warn(
            f"TF Serving only loads numbered version folders, "
            f"<base>/<model_name>/<version>; {path!r} does not end in a "
            "version number, so a server pointed at its parent will not "
            "see it.",
            stacklevel=4,  # the caller of `BridgeEnsemble.export`
        )
    model = ens.inference_model(members)
    names = [serving_name(m) for m in members]
    spec = _input_spec(ens)

    def serve(inputs):
        return model(inputs, training=False)

    def per_member(inputs):
        probabilities = model(inputs, training=False)["member_probabilities"]
        return {name: probabilities[:, i] for i, name in enumerate(names)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.add_endpoint(MEMBERS_SIGNATURE, per_member, input_signature=[spec])
    parent = os.path.dirname(path)
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent
    )
    try:
        written = os.path.join(staging, "saved_model")
        archive.write_out(written, verbose=False)
        extra = os.path.join(written, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w") as handle:
            json.dump(_metadata(ens, members), handle, indent=2)
        _move_into_place(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verbose:
        print(
            f"Saved a SavedModel of {len(members)} members to {path} "
            f"(signatures: serving_default, {MEMBERS_SIGNATURE})."
        )
    return path


def _move_into_place(source: str, target: str) -> None:
    """Renames ``source`` to ``target``, replacing it only at the end."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    old = tempfile.mkdtemp(
        prefix=f".{os.path.basename(target)}.",
        suffix=".old",
        dir=os.path.dirname(target),
    )
    old_target = os.path.join(old, "previous")
    os.rename(target, old_target)
    try:
        os.rename(source, target)
    except OSError:
        os.rename(old_target, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def export_onnx(
    ens,
    path,
    members=None,
    overwrite: bool = False,
    opset: int | None = None,
    verbose: bool = True,
) -> str:
    """Writes ``ens`` as an ONNX model with the serving outputs.

    Converted with `tf2onnx.convert.from_function` from the same graph as
    the SavedModel; the input is ``inputs`` and the outputs carry the
    names of the ``serving_default`` signature. The file is written beside
    ``path`` and renamed into place at the end.

    Args:
        ens: a `BridgeEnsemble` with trained modes.
        path: the ``.onnx`` file to write.
        members: member names to serve; default all.
        overwrite: replace an existing file.
        opset: ONNX opset; tf2onnx's default when None.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> export_onnx(ens, "digits.onnx")
    """
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx and onnx: "
            "`pip install keras-bridge[onnx]`."
        ) from error
    members = _check_members(ens, members)
    path = _check_target(path, overwrite)
    model = ens.inference_model(members)
    serve = tf.function(lambda inputs: model(inputs, training=False))
    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=[_input_spec(ens)], opset=opset
    )
    onnx.helper.set_model_props(
        proto, {"keras_bridge": json.dumps(_metadata(ens, members))}
    )
    handle, staging = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.",
        suffix=".tmp",
        dir=os.path.dirname(path),
    )
    os.close(handle)
    try:
        onnx.save(proto, staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    if verbose:
        print(f"Saved an ONNX model of {len(members)} members to {path}.")
    return path


def export(
    ens,
    path,
    format: str = "tf_saved_model",
    members=None,
    overwrite: bool = False,
    verbose: bool = True,
) -> str:
    """Exports ``ens`` as a SavedModel or ONNX (see `BridgeEnsemble.export`).

    Example:

    >>> export(ens, "serving/digits/1")
    >>> export(ens, "digits.onnx", format="onnx")
    """
    if format == "tf_saved_model":
        return export_saved_model(ens, path, members, overwrite, verbose)
    if format == "onnx":
        return export_onnx(ens, path, members, overwrite, verbose=verbose)
    raise ValueError(
        f"`format` must be one of {FORMATS}; received format={format!r}."
    )
