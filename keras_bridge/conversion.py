"""Turning functional models into curve models, and curve points back."""

import keras
import tensorflow as tf
from keras import ops

from keras_bridge import curves as curves_lib
from keras_bridge.layers.curve_layer import CurveLayer


def as_functional(model, argument: str = "model") -> keras.Model:
    """Returns `model` as a functional `keras.Model`, or raises.

    Sequential models with a known input are converted; subclassed models
    are refused, since their computation graph cannot be read.
    """
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"`{argument}` is a Sequential model without a known input "
                "shape; start it with `keras.Input(shape)`."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if isinstance(model, keras.Model) and _is_functional(model):
        return model
    raise ValueError(
        f"`{argument}` must be a functional `keras.Model` (built with "
        "`keras.Model(inputs, outputs)`) or a Sequential model; received "
        f"{type(model).__name__}, a subclassed model whose graph cannot be "
        "read. Rebuild it with the functional API."
    )


def _is_functional(model) -> bool:
    return hasattr(model, "_run_through_graph") and hasattr(
        model, "_nodes_by_depth"
    )


def weighted_layers(model) -> list:
    """Leaf layers that own weights, nested functional models flattened.

    Shared layers appear once, in graph order.

    Example:

    >>> model = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=4)
    >>> [layer.name for layer in weighted_layers(model)][:2]
    ['stem_conv', 'stem_bn']
    """
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.Model) and _is_functional(layer):
            for inner in layer.layers:
                visit(inner)
        elif layer.weights:
            found.append(layer)

    for layer in as_functional(model).layers:
        visit(layer)
    return found


def check_same_architecture(models, argument: str = "models") -> None:
    """Raises a `ValueError` naming the first layer where models differ."""
    reference = weighted_layers(models[0])
    for index, model in enumerate(models[1:], start=1):
        layers = weighted_layers(model)
        for a, b in zip(reference, layers):
            shapes_a = [tuple(v.shape) for v in a.weights]
            shapes_b = [tuple(v.shape) for v in b.weights]
            if type(a) is not type(b) or shapes_a != shapes_b:
                raise ValueError(
                    f"`{argument}` must share one architecture: model "
                    f"{index} differs from model 0 at layer {b.name!r} "
                    f"({type(b).__name__}, weights {shapes_b}); model 0 has "
                    f"{a.name!r} ({type(a).__name__}, weights {shapes_a})."
                )
        if len(layers) != len(reference):
            raise ValueError(
                f"`{argument}` must share one architecture: model {index} "
                f"has {len(layers)} layers with weights, model 0 has "
                f"{len(reference)}."
            )


def to_curve_model(model_a, model_b, curve=None, name=None) -> keras.Model:
    """Joins two models of one architecture by a curve in weight space.

    Every layer with weights becomes a `CurveLayer` whose first control
    point is ``model_a``'s weights and last is ``model_b``'s; the endpoints
    are frozen and the interior control points, started on the straight
    line between them, are the only trainable weights. Nested functional
    sub-models are flattened and shared layers stay shared. The inputs
    models are not modified.

    Args:
        model_a: functional (or Sequential) `keras.Model`, the t = 0 end.
        model_b: a model of the same architecture, the t = 1 end.
        curve: a `keras_bridge.curves.Curve` or its name; defaults to the
            quadratic Bezier curve.
        name: optional name of the returned model.

    Returns:
        A functional `keras.Model` with inputs ``[x, t]``, ``t`` of shape
        ``(batch, 1)`` holding one value per batch; at t = 0 it computes
        ``model_a`` and at t = 1 ``model_b``.

    Example:

    >>> a = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=4)
    >>> b = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=4)
    >>> curve_model = to_curve_model(a, b)
    >>> [tensor.name for tensor in curve_model.inputs][1]
    't'
    """
    model_a = as_functional(model_a, "model_a")
    model_b = as_functional(model_b, "model_b")
    check_same_architecture([model_a, model_b], "model_a and model_b")
    curve = curves_lib.get(curve)
    base = keras.models.clone_model(model_a)
    base.set_weights(model_a.get_weights())
    ends = dict(zip(map(id, weighted_layers(base)), weighted_layers(model_b)))
    wrapped = {}

    def clone_function(layer):
        if id(layer) not in ends:
            return layer
        if id(layer) not in wrapped:
            wrapped[id(layer)] = CurveLayer(
                layer,
                curve=curve,
                end_layer=ends[id(layer)],
                name=f"curve_{layer.name}",
            )
        return wrapped[id(layer)]

    t_in = keras.Input(shape=(1,), name="t")
    outputs = _replay(base, base.inputs, t_in, clone_function)
    return keras.Model(
        [*base.inputs, t_in], outputs, name=name or f"{model_a.name}_curve"
    )


def _replay(model, inputs, t, clone_function):
    """Runs `model`'s graph on `inputs`, swapping layers, threading t.

    `keras.models.clone_model` does the same walk but then wraps the result
    in a new model, which fails for a nested model called on intermediate
    tensors; the walk itself is all that is needed here.
    """

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, CurveLayer):
            return layer(*args, t=t, **kwargs)
        if isinstance(layer, keras.Model) and _is_functional(layer):
            return _replay(layer, keras.tree.flatten(args), t, clone_function)
        return layer(*args, **kwargs)

    return model._run_through_graph(
        inputs, operation_fn=clone_function, call_fn=call_function
    )


def curve_layers(curve_model) -> list:
    """The `CurveLayer`s of a curve model, in graph order."""
    return [
        layer for layer in curve_model.layers if isinstance(layer, CurveLayer)
    ]


def point_model(curve_model, t: float, template, data=None) -> keras.Model:
    """Materialises the curve at t as a plain model.

    Args:
        curve_model: a model made by `to_curve_model`.
        t: float in [0, 1], the curve point.
        template: a model of the endpoints' architecture (e.g. endpoint A);
            it is cloned, not modified.
        data: optional `tf.data.Dataset` (or iterable of batches) used to
            recompute BatchNormalization statistics at t; needed for an
            interior point of a model with BatchNormalization.

    Returns:
        A plain `keras.Model` of the template's architecture with weights
        ``theta(t)``: one ordinary forward pass per call.

    Example:

    >>> point = point_model(curve_model, 0.5, a, data=train_ds)
    >>> probabilities = keras.ops.softmax(point(x))
    """
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"`t` must lie in [0, 1]; received t={t!r}.")
    plain = keras.models.clone_model(as_functional(template, "template"))
    targets = weighted_layers(plain)
    sources = curve_layers(curve_model)
    if len(targets) != len(sources):
        raise ValueError(
            "`template` must have the curve model's architecture: it has "
            f"{len(targets)} layers with weights, the curve has "
            f"{len(sources)}."
        )
    by_name = {source.layer.name: source for source in sources}
    if len(by_name) == len(sources) and all(
        target.name in by_name for target in targets
    ):
        sources = [by_name[target.name] for target in targets]
    for target, source in zip(targets, sources):
        for variable, value in zip(target.weights, source.weights_at(t)):
            variable.assign(value)
    if data is not None:
        recalibrate_batchnorm(plain, data)
    return plain


def batchnorm_layers(model) -> list:
    return [
        layer
        for layer in weighted_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def recalibrate_batchnorm(model, data, steps=None) -> keras.Model:
    """Recomputes BatchNormalization moving statistics from data.

    Runs the data through the model in training mode and sets each
    BatchNormalization layer's moving mean and variance to the mean and
    (biased) variance of its input over all the data seen, weighting each
    batch by its size. The statistics are exact population statistics:
    the same as a running average with momentum ``(n-1)/n``, without the
    bias of an exponential average. Nothing else in the model changes.

    Args:
        model: a `keras.Model`; modified in place.
        data: a `tf.data.Dataset` or iterable of batches; a batch is ``x``
            or a tuple whose first item is ``x``.
        steps: optional number of batches to use; default all.

    Returns:
        ``model``, for chaining.

    Example:

    >>> model = recalibrate_batchnorm(model, train_ds)
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    positions = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    slots = [
        (positions[id(layer.moving_mean)], positions[id(layer.moving_variance)])
        for layer in layers
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        trainable = list(model.trainable_variables)
        state = list(model.non_trainable_variables)

        @tf.function(jit_compile=False, reduce_retracing=True)
        def batch_moments(x):
            _, new_state = model.stateless_call(
                trainable, state, x, training=True
            )
            return [(new_state[m], new_state[v]) for m, v in slots]

        count, sums = 0.0, None
        for step, batch in enumerate(data):
            if steps is not None and step >= steps:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            size = float(ops.shape(x)[0])
            moments = batch_moments(x)
            update = [
                (size * mean, size * (var + mean**2)) for mean, var in moments
            ]
            sums = (
                update
                if sums is None
                else [
                    (s1 + u1, s2 + u2)
                    for (s1, s2), (u1, u2) in zip(sums, update)
                ]
            )
            count += size
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if sums is None:
        raise ValueError("`data` must hold at least one batch; it is empty.")
    for layer, (s1, s2) in zip(layers, sums):
        mean = s1 / count
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(ops.maximum(s2 / count - mean**2, 0.0))
    return model
