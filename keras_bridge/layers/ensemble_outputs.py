"""`EnsembleOutputs`: the serving outputs of an ensemble."""

import keras
import tensorflow as tf
from keras import ops

from keras_bridge.metrics import EPSILON


@keras.saving.register_keras_serializable(package="keras_bridge")
class EnsembleOutputs(keras.layers.Layer):
    """Turns the members' logits into the ensemble's serving outputs.

    The ensemble probability is the mean of the members' probabilities,
    then temperature-scaled: ``softmax(log(mean) / temperature)``. It
    computes in float32 unless given another ``dtype``, under any dtype
    policy: in float16 a confident member's probabilities underflow to
    exact zeros and its entropy to NaN.

    Args:
        temperature: float > 0; 1 leaves the mean unchanged.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        member_logits: a list of ``(batch, num_classes)`` logits, one per
            member, in the members' order.

    Returns:
        A dict: ``probabilities`` (batch, C), ``class_ids`` (batch,),
        ``member_probabilities`` (batch, M, C), ``predictive_entropy``
        (batch,) and ``mutual_information`` (batch,): entropy of the mean
        minus the mean entropy of the members.

    Example:

    >>> outputs = EnsembleOutputs()([keras.ops.zeros((2, 3))] * 2)
    >>> tuple(outputs["probabilities"].shape)
    (2, 3)
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        # Probabilities and entropies in float16 underflow to 0 * log(0)
        # (NaN) for a confident member: Keras' advice for a model's last
        # softmax under mixed precision is float32, whatever the policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(
                f"`temperature` must be > 0; received {temperature}."
            )
        self.temperature = float(temperature)

    def call(self, member_logits):
        members = ops.stack(
            [ops.softmax(logits, axis=-1) for logits in member_logits], axis=1
        )
        mean = ops.mean(members, axis=1)
        log_mean = ops.log(ops.maximum(mean, EPSILON))
        probabilities = ops.softmax(log_mean / self.temperature, axis=-1)
        entropy = _entropy(probabilities)
        mutual_information = _entropy(mean) - ops.mean(
            _entropy(members), axis=1
        )
        return {
            "probabilities": probabilities,
            # `keras.ops.argmax` guards against -0.0 with bit operations
            # that ONNX lacks; probabilities are never negative.
            "class_ids": tf.argmax(probabilities, axis=-1, output_type="int32"),
            "member_probabilities": members,
            "predictive_entropy": entropy,
            "mutual_information": mutual_information,
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}


def _entropy(probabilities):
    return -ops.sum(
        probabilities * ops.log(ops.maximum(probabilities, EPSILON)), axis=-1
    )
