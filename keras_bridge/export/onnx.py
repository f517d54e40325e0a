"""``format="onnx"``: one ``.onnx`` file with the serving outputs."""

import json
import os

import tensorflow as tf

from keras_bridge.atomic_files import atomic_write
from keras_bridge.export.metadata import METADATA_KEY
from keras_bridge.export.signature import input_spec
from keras_bridge.messages import print_msg


def _onnx_modules():
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx and onnx: "
            "`pip install keras-bridge[onnx]`."
        ) from error
    return onnx, tf2onnx


def check_available() -> None:
    """Raises `ImportError` with the install line when tf2onnx or onnx is
    missing, before any (slow) work."""
    _onnx_modules()


def export_onnx(
    model,
    filepath,
    info,
    overwrite: bool = False,
    opset_version: int | None = None,
    verbose: bool = True,
) -> str:
    """Writes an inference model as an ONNX model with the serving outputs.

    Converted with `tf2onnx.convert.from_function` from the same graph as
    the SavedModel; the input is ``inputs`` and the outputs carry the
    names of the ``serving_default`` signature. The metadata is in the
    model's ``metadata_props`` (key ``keras_bridge``,
    `read_onnx_metadata`). Written atomically.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        filepath: the ``.onnx`` file to write.
        info: the metadata of the export
            (`keras_bridge.export.metadata.describe`).
        overwrite: replace an existing file.
        opset_version: ONNX opset (Keras' name); tf2onnx's default when
            None.
        verbose: print where the model was written.

    Returns:
        The absolute path written.

    Example:

    >>> import onnx
    >>> from keras_bridge.export.metadata import describe
    >>> members = ["mode_0", "type1_0-1_r0.5"]
    >>> model = ens.inference_model(members)
    >>> info = describe(model, members, ens.temperature)
    >>> path = export_onnx(model, "digits.onnx", info, opset_version=17,
    ...     verbose=False)
    >>> sorted(output.name for output in onnx.load(path).graph.output)
    ['class_ids', 'member_probabilities', 'mutual_information',
     'predictive_entropy', 'probabilities']
    >>> [o.version for o in onnx.load(path).opset_import if not o.domain]
    [17]
    """
    onnx, tf2onnx = _onnx_modules()
    path = os.path.abspath(os.fspath(filepath))
    serve = tf.function(lambda inputs: model(inputs, training=False))
    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=[input_spec(model)], opset=opset_version
    )
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
    with atomic_write(path, overwrite=overwrite) as staging:
        onnx.save(proto, staging)
    if verbose:
        names = info["serving_names"]
        print_msg(f"Saved an ONNX model of {len(names)} members to {path}.")
    return path


def read_onnx_metadata(filepath) -> dict:
    """The metadata that `export_onnx` embedded in a ``.onnx`` file.

    Example:

    >>> path = ens.export("digits.onnx", format="onnx", verbose=False,
    ...     members=["mode_0", "type1_0-1_r0.5"])
    >>> read_onnx_metadata(path)["members"]
    ['mode_0', 'type1_0-1_r0.5']
    """
    onnx, _ = _onnx_modules()
    proto = onnx.load(os.fspath(filepath), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError(
        f"{os.fspath(filepath)!r} has no {METADATA_KEY!r} metadata; it was "
        "not written by `keras_bridge.export.onnx.export_onnx`."
    )
