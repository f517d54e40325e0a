"""What an export records about its members, beside the model.

Every format carries the same JSON: the members in serving order, their
serving names, the temperature and the input, written to
``assets.extra/keras_bridge.json`` in a SavedModel, to the ONNX model's
metadata (key ``keras_bridge``) and to the LiteRT file's metadata (entry
``keras_bridge``).
"""

from keras_bridge.export.signature import INPUT_NAME
from keras_bridge.members import serving_name
from keras_bridge.version import __version__

#: File of a SavedModel's ``assets.extra`` folder that holds `describe`.
METADATA_FILE = "keras_bridge.json"
#: Key (ONNX metadata) and entry name (LiteRT metadata) of `describe`.
METADATA_KEY = "keras_bridge"


def describe(model, members, temperature: float) -> dict:
    """The metadata of an export: members, serving names, temperature and
    input, as a JSON-ready dict.

    Args:
        model: the inference model of `BridgeEnsemble.inference_model`.
        members: the member names, in the order of its outputs.
        temperature: the ensemble's temperature.

    Returns:
        A dict with the keys ``keras_bridge_version``, ``members``,
        ``serving_names``, ``temperature``, ``num_classes``,
        ``input_name``, ``input_shape`` and ``input_dtype``.

    Example:

    >>> model = ens.inference_model(["mode_0", "type1_0-1_r0.5"])
    >>> describe(model, ["mode_0", "type1_0-1_r0.5"], 1.0)["serving_names"]
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
