"""Functional-graph surgery: reading and rebuilding Keras functional models.

Reads Keras' graph through the shims of `keras_bridge.compat` (the one
module that touches private Keras APIs); the rest of keras-bridge goes
through the functions here.
"""

import functools
import hashlib
import json

import keras
import numpy as np

from keras_bridge import compat


@functools.cache
def _functional_class() -> type:
    """The class of a model built from inputs and outputs (Keras keeps
    it private)."""
    inputs = keras.Input((1,))
    return type(keras.Model(inputs, inputs))


def architecture_key(model) -> str | None:
    """A key that only models of one graph share: the hash of the config
    of a functional model (whose graph is fixed when it is built) made of
    Keras' and this package's layers, whose configs describe them whole,
    with its layers' names numbered in order (names change no count, and
    a new head's layers get new ones). None for any other model (a
    subclassed or Sequential model can change its graph; a custom or
    `Lambda` layer's config may leave out what its ``call`` computes).
    What is computed once per architecture (`keras_bridge.flops`' counts,
    BatchNormalization recalibration's traced function) is keyed by it.

    Example:

    >>> def dense(units, name):
    ...     inputs = keras.Input((4,))
    ...     return keras.Model(inputs, keras.layers.Dense(units)(inputs),
    ...                        name=name)
    >>> architecture_key(dense(3, "a")) == architecture_key(dense(3, "b"))
    True
    >>> architecture_key(dense(3, "a")) == architecture_key(dense(2, "a"))
    False
    """
    if type(model) is not _functional_class():
        return None
    try:
        config = keras.saving.serialize_keras_object(model)
    except (NotImplementedError, TypeError, ValueError):
        return None  # a layer without a config: no key
    if _has_opaque_objects(config):
        return None
    names = {}
    _collect_names(config, names)
    text = json.dumps(_renamed(config, names), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _collect_names(config, names: dict) -> None:
    """Numbers the names of functional models and their layers in
    ``config`` in the order they come (dict keys sorted)."""
    if isinstance(config, (list, tuple)):
        for item in config:
            _collect_names(item, names)
    elif isinstance(config, dict):
        if isinstance(config.get("layers"), list) and "output_layers" in config:
            for layer in [config, *config["layers"]]:
                names.setdefault(layer["name"], f"<{len(names)}>")
        for key in sorted(config):
            _collect_names(config[key], names)


def _renamed(config, names: dict, key=None):
    """``config`` with the ``names`` replaced where a config names a
    layer: ``name`` values, ``keras_history`` and the input and output
    layer lists (or dicts)."""
    refs = key in ("input_layers", "output_layers")
    if isinstance(config, dict):
        return {
            k: _renamed(value, names, key if refs else k)
            for k, value in config.items()
        }
    if isinstance(config, (list, tuple)):
        if key == "keras_history":
            return [names.get(config[0], config[0]), *config[1:]]
        return [_renamed(item, names, key if refs else None) for item in config]
    if isinstance(config, str) and (refs or key == "name"):
        return names.get(config, config)
    return config


def _has_opaque_objects(config) -> bool:
    """Whether a serialised config holds an object other than Keras' and
    this package's own (whose configs are complete), or a `Lambda`."""
    if isinstance(config, (list, tuple)):
        return any(_has_opaque_objects(item) for item in config)
    if not isinstance(config, dict):
        return False
    if "class_name" in config:
        module = config.get("module") or "keras"
        if config["class_name"] == "Lambda" or not (
            module == "keras" or module.startswith(("keras.", "keras_bridge."))
        ):
            return True
    return any(_has_opaque_objects(item) for item in config.values())


def is_functional(model) -> bool:
    """Whether ``model`` is a functional `keras.Model` (graph readable)."""
    return isinstance(model, keras.Model) and compat.has_graph(model)


def as_functional(model, argument: str = "model") -> keras.Model:
    """Returns `model` as a functional `keras.Model`, or raises.

    Sequential models with a known input are converted; subclassed models
    are refused, since their computation graph cannot be read.

    Example:

    >>> seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> type(as_functional(seq)).__name__
    'Functional'
    """
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"`{argument}` is a Sequential model without a known input "
                "shape; start it with `keras.Input(shape)`."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if is_functional(model):
        return model
    raise ValueError(
        f"`{argument}` must be a functional `keras.Model` (built with "
        "`keras.Model(inputs, outputs)`) or a Sequential model; received "
        f"{type(model).__name__}"
        + (
            ", a subclassed model whose graph cannot be read. Rebuild it "
            "with the functional API."
            if isinstance(model, keras.Model)
            else "."
        )
    )


def producer(tensor):
    """The layer (operation) that computed a symbolic ``tensor``."""
    return compat.keras_history(tensor).operation


def producer_inputs(tensor) -> list:
    """The input tensors of the call that computed a symbolic ``tensor``
    (of a layer called more than once, the call that made ``tensor``)."""
    history = compat.keras_history(tensor)
    return compat.inbound_tensors(history.operation, history.node_index)


def takes_training(layer) -> bool:
    """Whether ``layer.call`` takes a ``training`` argument."""
    return compat.call_has_training_arg(layer)


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
        if is_functional(layer):
            for inner in layer.layers:
                visit(inner)
        elif layer.weights:
            found.append(layer)

    for layer in as_functional(model).layers:
        visit(layer)
    return found


def replay(model, inputs, clone_function, call_function=None):
    """Runs ``model``'s graph on ``inputs`` with layers swapped.

    ``clone_function(layer)`` returns the layer to use in place of each
    layer; ``call_function(layer, *args, **kwargs)``, when given, calls it
    (e.g. to pass extra arguments). Nested functional models are replayed
    too, so their layers are swapped as well. Returns the outputs.
    """

    def call(layer, *args, **kwargs):
        if call_function is None:
            return layer(*args, **kwargs)
        return call_function(layer, *args, **kwargs)

    def nested_call(layer, *args, **kwargs):
        if is_functional(layer):
            return replay(
                layer, keras.tree.flatten(args), clone_function, call_function
            )
        return call(layer, *args, **kwargs)

    return compat.run_through_graph(model, inputs, clone_function, nested_call)


def spatial_layers(model) -> list:
    """Top-level layers whose output is a feature map (rank 3 or more)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):
            continue
        if isinstance(output, keras.KerasTensor) and len(output.shape) >= 3:
            found.append(layer)
    return found


def nested_models(model) -> list:
    """Names of the functional sub-models called by ``model``."""
    return [layer.name for layer in model.layers if is_functional(layer)]


def is_cut(model, layer) -> bool:
    """Whether every path from the model's input to its output runs
    through ``layer``'s output, so the tail after it is a model of it."""
    try:
        keras.Model(layer.output, model.outputs)
    except ValueError:
        return False
    return True


def spatial_size(layer) -> int:
    """Number of positions of a feature-map layer's output."""
    return int(np.prod(layer.output.shape[1:-1]))


def feature_model(
    model, feature_index: int, with_logits: bool = False, name=None
) -> keras.Model:
    """A model from ``model``'s input to the output of its layer number
    ``feature_index`` (and to its logits with ``with_logits``).

    It shares ``model``'s layers: nothing is copied and nothing in
    ``model`` changes. ``name`` must differ between the trunks of one
    graph (models may share a name).
    """
    features = model.layers[feature_index].output
    outputs = [features, model.outputs[0]] if with_logits else features
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=name or f"trunk_{model.name}")


def classifier_layer(model):
    """The layer that computes the logits: the last layer with ``filters``
    or ``units`` before the output, behind weightless layers (Flatten,
    Activation, Dropout, Reshape)."""
    layer = producer(model.outputs[0])
    while True:
        config = layer.get_config()
        if "filters" in config or "units" in config:
            return layer
        inbound = compat.inbound_tensors(layer)
        if len(inbound) != 1:
            return None
        layer = producer(inbound[0])


def rebuild_tail(
    model,
    feature_layer: str,
    in_channels: int,
    clone_function,
    entry_channels=None,
):
    """The layers of ``model`` after ``feature_layer`` as a new model.

    The new model takes a feature map with ``in_channels`` channels;
    ``clone_function(layer)`` returns the (fresh) layer used in place of
    each layer of the tail. With ``entry_channels``, a 1x1 convolution to
    that many channels comes first, so that layers which keep their input's
    channels (depthwise convolutions, squeeze-and-excite products, identity
    skips) see the rebuilt width.

    Raises:
        ValueError: when some path from the input avoids
            ``feature_layer``, or the rebuilt graph is inconsistent.
    """
    features = model.get_layer(feature_layer).output
    try:
        tail = keras.Model(features, model.outputs[0])
    except ValueError as error:
        raise ValueError(
            f"The tail after `feature_layer` {feature_layer!r} cannot be "
            "rebuilt: some path from the input to the output avoids it."
        ) from error
    inputs = keras.Input(
        shape=(*features.shape[1:-1], int(in_channels)), name="features"
    )
    x = inputs
    if entry_channels is not None:
        conv = keras.layers.Conv2D if len(x.shape) == 4 else keras.layers.Conv1D
        x = conv(int(entry_channels), 1, name="entry")(x)
    outputs = compat.run_through_graph(tail, [x], clone_function)
    return keras.Model(inputs, outputs, name=f"tail_{feature_layer}")
