"""Counting floating-point operations of a forward pass."""

import keras
import tensorflow as tf


def flops(model, batch_size: int = 1) -> int:
    """Floating-point operations of one forward pass, as TF counts them.

    Traces ``model`` in inference mode on inputs of batch size
    ``batch_size`` and sums TensorFlow's registered FLOP statistics over
    the graph (`tf.compat.v1.profiler`): a multiply-add counts 2, so a
    dense layer ``n -> m`` with bias costs ``2 n m + m``, a convolution
    ``2 k_h k_w c_in c_out h_out w_out`` plus one per output for the bias;
    batch normalisation, activations and pooling are counted too. A graph
    computes each shared sub-graph once, so an inference model whose
    bridges read trunk features counts each trunk once.

    Args:
        model: a `keras.Model` (or layer) with known input shapes.
        batch_size: batch size of the traced call.

    Returns:
        The FLOP count, an int.

    Example:

    >>> inputs = keras.Input((4,))
    >>> flops(keras.Model(inputs, keras.layers.Dense(3)(inputs)))
    27
    """
    specs = [
        tf.TensorSpec((batch_size, *x.shape[1:]), x.dtype)
        for x in keras.tree.flatten(model.inputs)
    ]

    @tf.function
    def forward(*inputs):
        flat = inputs[0] if len(inputs) == 1 else list(inputs)
        return model(flat, training=False)

    graph = forward.get_concrete_function(*specs).graph
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        )
        .with_empty_output()
        .build()
    )
    profile = tf.compat.v1.profiler.profile(
        graph=graph,
        run_meta=tf.compat.v1.RunMetadata(),
        cmd="op",
        options=options,
    )
    return int(profile.total_float_ops)
