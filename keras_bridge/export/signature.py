"""The serving signatures that every export format is built from."""

import keras
import tensorflow as tf

#: Name of the input of every signature (and of the ONNX graph).
INPUT_NAME = "inputs"
#: Signature of the per-member outputs (SavedModel only).
MEMBERS_SIGNATURE = "members"


def input_spec(model) -> tf.TensorSpec:
    """The ``inputs`` of every signature: the model's input, any batch."""
    tensor = model.inputs[0]
    return tf.TensorSpec(
        (None, *tensor.shape[1:]), tensor.dtype, name=INPUT_NAME
    )


def serving_archive(model, names=None) -> keras.export.ExportArchive:
    """The SavedModel's endpoints: ``serving_default`` and, given the
    members' serving ``names``, ``members``."""
    spec = input_spec(model)

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
