"""`EnsembleOutputs`: the serving outputs of an ensemble."""

import keras
import tensorflow as tf
from keras import ops

from keras_bridge.arguments import positive_float
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
        self.temperature = positive_float(temperature, "temperature")

    def call(self, member_logits):
        members = ops.stack(
            [ops.softmax(logits, axis=-1) for logits in member_logits], axis=1
        )
        mean = ops.mean(members, axis=1)
        log_mean = ops.log(ops.maximum(mean, EPSILON))
        probabilities = ops.softmax(log_mean / self.temperature, axis=-1)
        return {
            "probabilities": probabilities,
            # `keras.ops.argmax` guards against -0.0 with bit operations
            # that ONNX lacks; probabilities are never negative.
            "class_ids": tf.argmax(probabilities, axis=-1, output_type="int32"),
            "member_probabilities": members,
            "predictive_entropy": _entropy(probabilities),
            "mutual_information": mutual_information(members),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}


def mutual_information(member_probabilities):
    """The members' disagreement: entropy of their mean probability minus
    their mean entropy (nats), per input.

    The one implementation of the formula: `EnsembleOutputs` computes its
    ``mutual_information`` output with it, and the report scores OOD
    detection with it. Written with `keras.ops`, so it takes NumPy arrays
    (float64 stays float64) as well as tensors.

    Args:
        member_probabilities: probabilities of shape
            ``(batch, members, classes)``.

    Returns:
        A tensor of shape ``(batch,)``, >= 0; 0 where the members agree.

    Example:

    >>> disagree = [[1.0, 0.0], [0.0, 1.0]]  # two members, two classes
    >>> agree = [[0.5, 0.5], [0.5, 0.5]]
    >>> mi = mutual_information(np.array([disagree, agree]))
    >>> keras.ops.convert_to_numpy(mi).round(4).tolist()
    [0.6931, 0.0]
    """
    member_probabilities = ops.convert_to_tensor(member_probabilities)
    mean = ops.mean(member_probabilities, axis=1)
    return _entropy(mean) - ops.mean(_entropy(member_probabilities), axis=1)


def _entropy(probabilities):
    return -ops.sum(
        probabilities * ops.log(ops.maximum(probabilities, EPSILON)), axis=-1
    )
