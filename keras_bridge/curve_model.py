"""Turning functional models into curve models, and curve points back."""

import collections
import json

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_bridge import curves as curves_lib
from keras_bridge.graph import (
    architecture_key,
    as_functional,
    replay,
    weighted_layers,
)
from keras_bridge.layers.curve_layer import CurveLayer, check_same_weights


def check_same_architecture(models, argument: str = "models") -> None:
    """Raises a `ValueError` naming the first layer where models differ."""
    reference = weighted_layers(models[0])
    shapes = [
        [tuple(t.shape[1:]) for t in model.inputs + model.outputs]
        for model in models
    ]
    for index, model in enumerate(models[1:], start=1):
        if shapes[index] != shapes[0]:
            raise ValueError(
                f"`{argument}` must share one architecture: model {index} "
                f"has input and output shapes {shapes[index]}, model 0 has "
                f"{shapes[0]}."
            )
        layers = weighted_layers(model)
        for a, b in zip(reference, layers):
            check_same_weights(
                a,
                b,
                f"`{argument}` must share one architecture: model {index} "
                "differs from model 0",
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

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, CurveLayer):
            return layer(*args, t=t_in, **kwargs)
        return layer(*args, **kwargs)

    outputs = replay(base, base.inputs, clone_function, call_function)
    return keras.Model(
        [*base.inputs, t_in], outputs, name=name or f"{model_a.name}_curve"
    )


def curve_layers(curve_model) -> list:
    """The `CurveLayer`s of a curve model, in graph order."""
    return [
        layer for layer in curve_model.layers if isinstance(layer, CurveLayer)
    ]


def point_model(curve_model, t: float, template, *, data=None) -> keras.Model:
    """Materialises the curve at position t as a plain model.

    Args:
        curve_model: a model made by `to_curve_model`.
        t: the position on the curve, a float in [0, 1].
        template: a model of the endpoints' architecture (e.g. endpoint A);
            it is cloned, not modified.
        data: optional `tf.data.Dataset` (or iterable of batches) used to
            recompute BatchNormalization statistics at t; needed for an
            interior point of a model with BatchNormalization.

    Returns:
        A plain `keras.Model` of the template's architecture with weights
        ``theta(t)``: one ordinary forward pass per call.

    Example:

    >>> data = keras_bridge.data.load_digits()
    >>> a = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> b = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> curve_model = to_curve_model(a, b)
    >>> point = point_model(curve_model, 0.5, a, data=data.train)
    >>> x, _ = next(iter(data.test))
    >>> tuple(keras.ops.softmax(point(x)).shape)
    (64, 10)
    """
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"`t` must lie in [0, 1]; received t={t!r}.")
    plain = keras.models.clone_model(as_functional(template, "template"))
    pairs = _matched_layers(plain, curve_model)
    if pairs is None:
        raise ValueError(
            "`template` must have the curve model's architecture: it has "
            f"{len(weighted_layers(plain))} layers with weights, the curve "
            f"has {len(curve_layers(curve_model))}."
        )
    for target, source in pairs:
        for variable, value in zip(target.weights, source.weights_at(t)):
            variable.assign(value)
    if data is not None:
        recalibrate_batchnorm(plain, data)
    return plain


def _matched_layers(model, curve_model):
    """``(layer, curve layer)`` for each layer with weights of ``model``
    (by name where all names match, else in graph order), or None when
    their numbers differ."""
    targets = weighted_layers(model)
    sources = curve_layers(curve_model)
    if len(targets) != len(sources):
        return None
    by_name = {source.layer.name: source for source in sources}
    if len(by_name) == len(sources) and all(
        target.name in by_name for target in targets
    ):
        sources = [by_name[target.name] for target in targets]
    return list(zip(targets, sources))


def point_statistics(model, curve_model, t: float, template) -> dict | None:
    """What sets a curve point apart from the curve's weights at ``t``.

    A point `point_model` made has the curve's trainable weights at ``t``
    exactly; only its non-trainable weights (BatchNormalization's
    statistics, recomputed on data) need storing: `point_from_statistics`
    rebuilds the point from them, weight for weight.

    Args:
        model: a curve network (a point of ``curve_model``).
        curve_model: the curve model it was made from.
        t: its position on the curve.
        template: a model of the curve's architecture (as `point_model`
            takes it).

    Returns:
        ``{position: array}``: ``model``'s non-trainable weights (NumPy
        arrays), by their position among the weights `point_model` sets
        (so that they go back where they were, whatever is frozen when
        the point is rebuilt); or None when ``model`` is not a point of
        the curve at ``t``: a trainable weight differs from the curve's
        (a model trained since), or its graph is not ``template``'s.

    Example:

    >>> a = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> b = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> curve_model = to_curve_model(a, b)
    >>> point = point_model(curve_model, 0.5, a)
    >>> statistics = point_statistics(point, curve_model, 0.5, a)
    >>> len(statistics) == len(point.non_trainable_weights)
    True
    >>> point_statistics(a, curve_model, 0.5, a) is None  # an end
    True
    """
    try:
        key = architecture_key(model)
        same = key is not None and key == architecture_key(
            as_functional(template, "template")
        )
    except ValueError:  # not a functional model
        return None
    pairs = _matched_layers(model, curve_model) if same else None
    if pairs is None:
        return None
    statistics, position = {}, 0
    for target, source in pairs:
        values = source.weights_at(float(t))
        if len(values) != len(target.weights):
            return None
        for variable, value in zip(target.weights, values):
            current = variable.numpy()
            if current.shape != value.shape:
                return None
            if not variable.trainable:
                statistics[position] = current
            elif not np.array_equal(current, value):
                return None
            position += 1
    return statistics


def point_from_statistics(
    curve_model, t: float, template, statistics: dict
) -> keras.Model:
    """The curve point that `point_statistics` described: `point_model`
    at ``t`` with those weights put back in their positions, equal to
    the point it was read from weight for weight.

    Example:

    >>> a = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> b = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> curve_model = to_curve_model(a, b)
    >>> data = keras_bridge.data.load_digits()
    >>> point = point_model(curve_model, 0.5, a, data=data.train.take(2))
    >>> statistics = point_statistics(point, curve_model, 0.5, a)
    >>> again = point_from_statistics(curve_model, 0.5, a, statistics)
    >>> all(np.array_equal(u, v)
    ...     for u, v in zip(point.get_weights(), again.get_weights()))
    True
    """
    plain = point_model(curve_model, t, template)
    weights = [
        variable
        for target, _ in _matched_layers(plain, curve_model)
        for variable in target.weights
    ]
    for position, value in statistics.items():
        if not 0 <= position < len(weights):
            raise ValueError(
                f"`statistics` names the weight {position}; the point has "
                f"{len(weights)}."
            )
        if tuple(weights[position].shape) != tuple(np.shape(value)):
            raise ValueError(
                f"`statistics` holds an array of shape {np.shape(value)} "
                f"for the weight {position}, of shape "
                f"{tuple(weights[position].shape)}."
            )
        weights[position].assign(value)
    return plain


def batchnorm_layers(model) -> list:
    return [
        layer
        for layer in weighted_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


#: The batch-moment functions traced so far, by architecture, newest last:
#: recalibrating another model of an architecture seen before (the points
#: of a curve, a curve profile, a t-conditioned bridge's teachers) traces
#: nothing new. Each holds the private copy of a model it runs.
_MOMENT_FUNCTIONS = collections.OrderedDict()
_MOMENT_FUNCTIONS_KEPT = 2


def _architecture(model, slots):
    """A key equal for models that differ in their weights' values only
    (`keras_bridge.graph.architecture_key`, the weights' shapes and the
    slots) under the current distribution strategy (the private copy's
    variables are created under it), or None where the config may not
    describe the model whole (then nothing is shared)."""
    graph_key = architecture_key(model)
    if graph_key is None:
        return None
    variables = [
        (tuple(v.shape), str(v.dtype), bool(v.trainable))
        for v in (*model.trainable_variables, *model.non_trainable_variables)
    ]
    described = json.dumps([graph_key, variables, slots])
    return described, tf.distribute.get_strategy()


def _moments_function(model, slots):
    """``(runner, function)``: ``function(x)`` runs ``runner`` on ``x`` in
    training mode, statelessly, and returns in one float64 vector ``n *
    mean`` and ``n * (variance + mean**2)`` (``n`` the batch size) at each
    BatchNormalization slot in turn. ``runner`` is a private copy of
    ``model``'s architecture whose BatchNormalization momenta are 0 (so
    its new moving statistics are the batch's), or ``model`` itself when
    it cannot be copied (then its momenta must be 0 during the calls):
    load the weights to measure into it first. (The weights are read as
    variables, not passed in: a call with one argument costs a quarter of
    one with every weight. One vector: summing it over the batches is one
    operation per batch, whatever the number of layers.)"""
    key = _architecture(model, slots)
    if key is not None and key in _MOMENT_FUNCTIONS:
        _MOMENT_FUNCTIONS.move_to_end(key)
        return _MOMENT_FUNCTIONS[key]
    runner = model
    if key is not None:
        try:
            runner = keras.models.clone_model(model)
        except (NotImplementedError, TypeError, ValueError):
            key = None
        else:
            for layer in batchnorm_layers(runner):
                layer.momentum = 0.0

    @tf.function(jit_compile=False, reduce_retracing=True)
    def batch_sums(x):
        _, new_state = runner.stateless_call(
            [v.value for v in runner.trainable_variables],
            [v.value for v in runner.non_trainable_variables],
            x,
            training=True,
        )
        size = ops.cast(ops.shape(x)[0], "float64")
        sums = []
        for m, v in slots:
            # In float64: E[x^2] - E[x]^2 loses digits in float32.
            mean = ops.cast(new_state[m], "float64")
            variance = ops.cast(new_state[v], "float64")
            sums += [size * mean, size * (variance + mean**2)]
        return ops.concatenate([ops.reshape(s, (-1,)) for s in sums], axis=0)

    if key is not None:
        _MOMENT_FUNCTIONS[key] = (runner, batch_sums)
        while len(_MOMENT_FUNCTIONS) > _MOMENT_FUNCTIONS_KEPT:
            _MOMENT_FUNCTIONS.popitem(last=False)
    return runner, batch_sums


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

    >>> data = keras_bridge.data.load_digits()
    >>> model = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> model = recalibrate_batchnorm(model, data.train)
    >>> stem_bn = model.get_layer("stem_bn")
    >>> bool(keras.ops.all(stem_bn.moving_mean == 0.0))  # no longer the init
    False
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    positions = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    slots = tuple(
        (positions[id(layer.moving_mean)], positions[id(layer.moving_variance)])
        for layer in layers
    )
    runner, batch_sums = _moments_function(model, slots)
    zeroed = layers if runner is model else []
    momenta = [layer.momentum for layer in zeroed]
    for layer in zeroed:
        layer.momentum = 0.0
    if runner is not model:
        pairs = [
            *zip(runner.trainable_variables, model.trainable_variables),
            *zip(runner.non_trainable_variables, model.non_trainable_variables),
        ]
        for target, source in pairs:
            target.assign(source.value)
    try:
        count, sums = 0, None
        for step, batch in enumerate(data):
            if steps is not None and step >= steps:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            update = batch_sums(x)
            sums = update if sums is None else sums + update
            count += int(ops.shape(x)[0])
    finally:
        for layer, momentum in zip(zeroed, momenta):
            layer.momentum = momentum
    if sums is None:
        raise ValueError("`data` must hold at least one batch; it is empty.")
    sums, statistics, start = ops.convert_to_numpy(sums), [], 0
    for layer in layers:
        size = int(np.prod(layer.moving_mean.shape))
        s1 = sums[start : start + size]
        s2 = sums[start + size : start + 2 * size]
        start += 2 * size
        mean = (s1 / count).reshape(layer.moving_mean.shape)
        variance = np.maximum(s2.reshape(mean.shape) / count - mean**2, 0.0)
        statistics.append((mean, variance))
    finite = all(
        np.isfinite(value).all() for pair in statistics for value in pair
    )
    if not finite:
        raise FloatingPointError(
            "BatchNorm recalibration: the recomputed statistics are not "
            "finite (NaN or inf), so `data` holds non-finite inputs or the "
            "model overflows on it. Nothing was changed."
        )
    for layer, (mean, variance) in zip(layers, statistics):
        layer.moving_mean.assign(ops.cast(mean, layer.moving_mean.dtype))
        layer.moving_variance.assign(
            ops.cast(variance, layer.moving_variance.dtype)
        )
    return model
