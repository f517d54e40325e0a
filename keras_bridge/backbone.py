"""Checking a backbone and choosing where bridges read its features."""

import keras

from keras_bridge.graph import (
    as_functional,
    classifier_layer,
    is_cut,
    nested_models,
    producer,
    producer_inputs,
    rebuild_tail,
    spatial_layers,
    spatial_size,
)
from keras_bridge.messages import warn

#: Output activations by the name of their function or `keras.ops`
#: operation: a softmax is removed; one that squashes each logit alone
#: cannot be undone into softmax logits, so it is refused.
_SOFTMAX = {"softmax", "softmax_v2"}
_SQUASHING = {"sigmoid", "hard_sigmoid"}


def prepare_backbone(backbone) -> keras.Model:
    """Checks that a backbone is functional and outputs logits.

    A trailing softmax (a ``Softmax`` layer, an ``Activation("softmax")``,
    a final layer built with ``activation="softmax"`` or a
    ``keras.ops.softmax`` call) is removed, with a warning: every part of
    keras-bridge works on logits. A trailing sigmoid (or another
    activation that squashes each output alone) is refused, and so is a
    backbone with fewer than 2 classes: keras-bridge trains multi-class
    classifiers with softmax cross-entropy.

    Args:
        backbone: a functional or Sequential `keras.Model` with one input
            and one output of shape ``(batch, num_classes)``,
            ``num_classes >= 2``.

    Returns:
        The backbone, or a copy of it without the trailing softmax.

    Example:

    >>> inputs = keras.Input((4,))
    >>> logits = keras.layers.Dense(3, name="logits")(inputs)
    >>> outputs = keras.ops.softmax(logits)
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = prepare_backbone(keras.Model(inputs, outputs))
    >>> messages = [str(warning.message) for warning in caught]
    >>> producer(model.outputs[0]).name, any("softmax" in m for m in messages)
    ('logits', True)
    """
    model = as_functional(backbone, "backbone")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            "`backbone` must have one output of shape (batch, num_classes); "
            f"received outputs {[tuple(t.shape) for t in model.outputs]}."
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"`backbone` must have one input; received {len(model.inputs)}."
        )
    _check_clonable(model)
    num_classes = model.outputs[0].shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(
            "`backbone` must output one logit per class for at least 2 "
            f"classes; received an output of shape "
            f"{tuple(model.outputs[0].shape)}. keras-bridge ensembles "
            "classifiers: for a binary task, end in `Dense(2)` (logits) "
            "instead of `Dense(1)`."
        )
    last = producer(model.outputs[0])
    layer_kind, own_kind = _activation_kinds(last)
    if "squashing" in (layer_kind, own_kind):
        raise ValueError(
            f"`backbone` ends in a {_activation_name(last)} activation "
            f"({last.name!r}), which scores each class alone; keras-bridge "
            "ensembles multi-class classifiers trained with softmax "
            "cross-entropy. End the backbone in logits (no activation)."
        )
    if layer_kind == "softmax":
        warn(
            f"`backbone` ends in a softmax ({last.name!r}); it was removed "
            "so that the backbone outputs logits.",
        )
        inbound = producer_inputs(model.outputs[0])
        return keras.Model(model.inputs[0], inbound[0], name=model.name)
    if own_kind == "softmax":
        warn(
            f"`backbone`'s last layer {last.name!r} has a softmax "
            "activation; it was replaced by a linear one so that the "
            "backbone outputs logits.",
        )
        return _without_final_activation(model, last)
    return model


def _check_clonable(model) -> None:
    """Refuses a ``Lambda`` layer that Keras will not rebuild from its
    config (a Python lambda: Keras' safe mode), before any training: each
    mode, curve and saved file rebuilds the backbone from its config."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_clonable(layer)
        elif isinstance(layer, keras.layers.Lambda):
            try:
                type(layer).from_config(layer.get_config())
            except ValueError:
                raise ValueError(
                    f"`backbone` has a `Lambda` layer {layer.name!r} that "
                    "wraps a Python function; Keras will not rebuild it "
                    "from its config (safe mode), and keras-bridge rebuilds "
                    "the backbone for every mode and saved file. Replace "
                    "it with a built-in layer (e.g. `keras.layers."
                    "Rescaling`) or a custom layer registered with "
                    "`@keras.saving.register_keras_serializable()`."
                ) from None


def _activation_name(operation) -> str:
    if isinstance(operation, keras.layers.Layer):
        function = getattr(operation, "activation", None)
        if function is not None:
            return getattr(function, "__name__", str(function))
    return type(operation).__name__.lower()


def _kind(name: str):
    if name in _SOFTMAX:
        return "softmax"
    return "squashing" if name in _SQUASHING else None


def _activation_kinds(operation) -> tuple:
    """``(kind of the operation itself, kind of its built-in activation)``:
    each ``"softmax"``, ``"squashing"`` or None. The operation is an
    activation when it is a ``Softmax`` layer, an ``Activation`` layer or
    a `keras.ops` call (``keras.ops.softmax``, ``keras.ops.sigmoid``);
    a layer such as ``Dense`` has its own ``activation``."""
    if isinstance(operation, keras.layers.Softmax):
        return "softmax", None
    if isinstance(operation, keras.layers.Activation):
        return _kind(_activation_name(operation)), None
    if not isinstance(operation, keras.layers.Layer):  # a keras.ops call
        return _kind(type(operation).__name__.lower()), None
    function = getattr(operation, "activation", None)
    if function is None:
        return None, None
    return None, _kind(getattr(function, "__name__", ""))


def _without_final_activation(model, last):
    def clone_function(layer):
        config = layer.get_config()
        if layer is last:
            config["activation"] = "linear"
        return type(layer).from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_function)
    clone.set_weights(model.get_weights())
    return clone


def resolve_feature_layer(model, feature_layer=None) -> str:
    """Returns the name of the layer whose output the bridges read.

    With ``feature_layer=None`` the default is the end of the stage before
    the last: among layers with a feature-map output through which every
    path from input to output runs, the last one at the second-smallest
    spatial size among such layers (the smallest when there is only one
    size; side branches such as squeeze-and-excite gates do not count). For
    `keras_bridge.models.resnet` and `keras_bridge.models.plain_cnn` this
    is ``"stage2"``.

    Args:
        model: the functional backbone.
        feature_layer: a layer name, or None for the default.

    Returns:
        A layer name of ``model``.
    """
    candidates = spatial_layers(model)
    names = [layer.name for layer in candidates]
    if feature_layer is not None:
        if feature_layer not in names:
            shown = ", ".join(names[-20:]) or "none"
            nested = nested_models(model)
            inside = (
                f" Layers inside the nested model(s) {nested} cannot be "
                "read; build the backbone from their layers."
                if nested
                else ""
            )
            raise ValueError(
                "`feature_layer` must name a top-level layer of the "
                f"backbone with a feature-map output; received "
                f"{feature_layer!r}. Layers with feature-map outputs "
                f"(last 20): {shown}.{inside}"
            )
        return feature_layer
    # The last cut at each size, smallest sizes first; a size with no cut
    # (a side branch, e.g. a squeeze-and-excite gate pooled to 1x1) is not
    # a resolution of the network.
    sized = list(zip(candidates, [spatial_size(c) for c in candidates]))
    ends = []
    for target in sorted({size for _, size in sized}):
        for layer, size in reversed(sized):
            if size == target and is_cut(model, layer):
                ends.append(layer.name)
                break
        if len(ends) == 2:
            return ends[1]
    if ends:
        return ends[0]
    nested = nested_models(model)
    advice = (
        "Pass `feature_layer=` the name of the layer the bridges should read."
    )
    if nested:
        advice = (
            f"Its feature maps are inside the nested model(s) {nested}, "
            "which bridges cannot read: build the backbone from the nested "
            "model's own input and layers (e.g. `keras.Model(inner.input, "
            "head(inner.output))`) so its feature maps are top-level layers."
        )
    raise ValueError(
        "`feature_layer` could not be chosen: the backbone has no top-level "
        "layer with a feature-map output that every path runs through. "
        + advice
    )


def feature_index(model, feature_layer: str) -> int:
    """Position of the layer named ``feature_layer`` in ``model.layers``:
    how the trunks that end at the feature map find it in a mode.

    Example:

    >>> backbone = keras_bridge.models.resnet((8, 8, 1), 10, depth=8)
    >>> backbone.layers[feature_index(backbone, "stage2")].name
    'stage2'
    """
    return [layer.name for layer in model.layers].index(feature_layer)


def slim_tail(
    model,
    feature_layer: str,
    in_channels: int,
    slim: float = 2.0,
    entry: bool = False,
) -> keras.Model:
    """The backbone's layers after ``feature_layer``, at reduced width.

    Every convolution's ``filters`` and every hidden dense layer's
    ``units`` is divided by ``slim``; the classifier keeps its
    ``num_classes`` outputs, and a ``Reshape`` keeps its channels free.
    The new tail takes a feature map with ``in_channels`` channels (twice
    the backbone's for a Type II bridge, one more for a t-conditioned
    one). With ``entry=True`` a 1x1 convolution first brings the feature
    map to the slimmed width, which architectures with depthwise
    convolutions or squeeze-and-excite right after the feature layer need.
    Weights are freshly initialised.

    Args:
        model: the functional backbone.
        feature_layer: the name of a layer every path runs through.
        in_channels: channels of the tail's input.
        slim: width divisor, >= 1.
        entry: start with a 1x1 convolution to the slimmed width.

    Returns:
        A functional `keras.Model` from the feature map to logits.

    Raises:
        ValueError: when the tail cannot be rebuilt (``feature_layer`` is
            not a cut of the graph, or the reduced graph is inconsistent,
            e.g. a skip connection straight from the feature map).

    Example:

    >>> backbone = keras_bridge.models.resnet((8, 8, 1), 10, depth=8)
    >>> tail = slim_tail(backbone, "stage2", 32, slim=2)
    >>> tail.get_layer("stage3_block1_conv1").filters
    32
    """
    if not slim >= 1:
        raise ValueError(f"`slim` must be >= 1; received slim={slim}.")
    classifier = classifier_layer(model)

    def thinner(value):
        return max(1, int(round(value / slim)))

    def clone_function(layer):
        config = layer.get_config()
        if layer is not classifier:
            for key in ("filters", "units"):
                if key in config:
                    config[key] = thinner(config[key])
        if isinstance(layer, keras.layers.Reshape):
            shape = list(config["target_shape"])
            if -1 not in shape:
                config["target_shape"] = (*shape[:-1], -1)
        return type(layer).from_config(config)

    layer = model.get_layer(feature_layer)
    if not is_cut(model, layer):
        raise ValueError(
            f"The tail after `feature_layer` {feature_layer!r} cannot be "
            "rebuilt: some path from the input to the output avoids it."
        )
    channels = int(layer.output.shape[-1])
    try:
        return rebuild_tail(
            model,
            feature_layer,
            in_channels,
            clone_function,
            entry_channels=thinner(channels) if entry else None,
        )
    except ValueError as error:
        raise ValueError(
            f"The tail after `feature_layer` {feature_layer!r} cannot be "
            f"rebuilt at 1/{slim:g} width: {error}"
        ) from error
