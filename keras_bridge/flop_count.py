"""Counting floating-point operations of a forward pass."""

import functools
import weakref

import keras
import tensorflow as tf

#: Counts of functional models by batch size: a functional model's graph
#: is fixed when it is built, so it is traced and counted once.
_COUNTS = weakref.WeakKeyDictionary()


@functools.cache
def _functional_class() -> type:
    """The class of a model built from inputs and outputs (Keras keeps
    it private)."""
    inputs = keras.Input((1,))
    return type(keras.Model(inputs, inputs))


def flops(model, batch_size: int = 1) -> int:
    """Floating-point operations of one forward pass, as TF counts them.

    Traces ``model`` in inference mode on inputs of batch size
    ``batch_size`` and sums TensorFlow's registered FLOP statistics over
    the graph (`tf.compat.v1.profiler`): a multiply-add counts 2, so a
    dense layer ``n -> m`` with bias costs ``2 n m + m``, a convolution
    ``2 k_h k_w c_in c_out h_out w_out`` plus one per output for the bias;
    batch normalisation, activations and pooling are counted too. A graph
    computes each shared sub-graph once, so an inference model whose
    bridges read trunk features counts each trunk once. A functional
    model (``keras.Model(inputs, outputs)``, whose graph cannot change)
    is counted once per batch size; other models at each call.

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
    fixed = type(model) is _functional_class()
    if fixed and batch_size in _COUNTS.get(model, {}):
        return _COUNTS[model][batch_size]
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
    count = int(profile.total_float_ops)
    if fixed:
        _COUNTS.setdefault(model, {})[batch_size] = count
    return count
