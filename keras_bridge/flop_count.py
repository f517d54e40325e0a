"""Counting floating-point operations of a forward pass."""

import keras
import tensorflow as tf

from keras_bridge.graph import architecture_key

#: Counts by architecture (`keras_bridge.graph.architecture_key`) and
#: batch size. A count depends on the graph only, never on the weights,
#: so two models of one architecture (two modes, the same ensemble
#: loaded twice) share it.
_COUNTS: dict = {}


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
    model (``keras.Model(inputs, outputs)``) of Keras' and this package's
    layers is traced once per architecture and batch size in a process
    (the count of another model of the same config is reused: it does
    not depend on the weights); other models at each call.

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
    architecture = architecture_key(model)
    key = (architecture, batch_size)
    if architecture is not None and key in _COUNTS:
        return _COUNTS[key]
    count = sum(_op_flops(_graph(model, batch_size)).values())
    if architecture is not None:
        _COUNTS[key] = count
    return count


def output_flops(model, batch_size: int = 1):
    """FLOPs of the part of ``model``'s graph that some of its outputs
    need, from one trace.

    Args:
        model: a `keras.Model` whose outputs are a list of tensors.
        batch_size: batch size of the traced call.

    Returns:
        A function from a list of output positions to the FLOPs (an int,
        counted as `flops` counts them) of the operations those outputs
        depend on, each once.

    Example:

    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(3)(inputs)
    >>> count = output_flops(
    ...     keras.Model(inputs, [hidden, keras.layers.Dense(2)(hidden)]))
    >>> count([0]), count([1]), count([0, 1])
    (27, 41, 41)
    """
    graph = _graph(model, batch_size)
    per_op = _op_flops(graph)
    needs = [_ancestors(tensor.op) for tensor in graph.outputs]

    def count(positions) -> int:
        ops = set().union(*(needs[i] for i in positions))
        return sum(per_op.get(name, 0) for name in ops)

    return count


def _graph(model, batch_size):
    """The graph of ``model``'s inference pass at ``batch_size``."""
    specs = [
        tf.TensorSpec((batch_size, *x.shape[1:]), x.dtype)
        for x in keras.tree.flatten(model.inputs)
    ]

    @tf.function
    def forward(*inputs):
        flat = inputs[0] if len(inputs) == 1 else list(inputs)
        return model(flat, training=False)

    return forward.get_concrete_function(*specs).graph


def _op_flops(graph) -> dict:
    """Each operation's FLOPs by name, as TensorFlow's profiler counts
    them (operations without registered statistics count none)."""
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
        cmd="scope",
        options=options,
    )
    counts, nodes = {}, [profile]
    while nodes:
        node = nodes.pop()
        if node.float_ops:
            counts[node.name] = node.float_ops
        nodes.extend(node.children)
    return counts


def _ancestors(op) -> set:
    """Names of ``op`` and of every operation whose output it reads."""
    seen, stack = set(), [op]
    while stack:
        op = stack.pop()
        if op.name not in seen:
            seen.add(op.name)
            stack.extend(tensor.op for tensor in op.inputs)
    return seen
