"""`CurveLayer`: any Keras layer whose weights live on a curve."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_bridge import curves as curves_lib
from keras_bridge.graph import takes_training


def _is_float(variable) -> bool:
    return "float" in str(variable.dtype)


def _scalar_t(t):
    """One t per call: a batch of t values must hold a single value."""
    t = ops.convert_to_tensor(t, dtype="float32")
    if len(t.shape) == 0:
        return t
    t = ops.reshape(t, (-1,))
    check = tf.debugging.assert_equal(
        t,
        tf.broadcast_to(t[0], tf.shape(t)),
        message="`t`: a batch given to a curve model must hold one t value",
    )
    with tf.control_dependencies([check]):
        return tf.identity(t[0])


@keras.saving.register_keras_serializable(package="keras_bridge")
class CurveLayer(keras.layers.Wrapper):
    """Makes the weights of any Keras layer a function of a curve position t.

    Every floating-point weight ``w`` of the wrapped layer gets
    ``curve.num_points`` control points and is computed, at each call, as
    ``w(t) = sum_i c_i(t) w_i``. The wrapped layer then runs with those
    values through `Layer.stateless_call`, so any layer that creates its
    weights in `build()` works, custom layers included, with no code for
    particular layer types.

    The first control point is the wrapped layer's own weights (endpoint
    A), the last is endpoint B (``end_layer``'s weights). Both endpoints
    are frozen; the interior points are trainable where the wrapped weight
    is trainable and start on the straight line between the endpoints.
    Non-float state (random seeds) is shared along the curve, and state
    updates of the wrapped layer during training (BatchNormalization's
    moving statistics) are dropped: statistics along a curve are recomputed
    at a fixed t instead (see `keras_bridge.recalibrate_batchnorm`).

    Args:
        layer: a Keras layer, endpoint A. Its weights become the first
            control point; the layer is owned by the wrapper from then on.
        curve: a `keras_bridge.curves.Curve` or its name; defaults to a
            quadratic Bezier curve.
        end_layer: optional layer of the same type and weight shapes,
            endpoint B. When omitted, B starts equal to A (as after
            loading, when the saved weights then replace it).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: the wrapped layer's inputs.
        t: the position on the curve, a float in [0, 1] or a tensor. A
            tensor of shape ``(batch, 1)`` must hold one value for the
            whole batch; the first row is used.
        training: forwarded to the wrapped layer when it takes it.

    Returns:
        The wrapped layer's output at weights ``w(t)``.

    Example:

    >>> a = keras.layers.Dense(3)
    >>> b = keras.layers.Dense(3)
    >>> x = keras.ops.ones((2, 4))
    >>> _ = a(x), b(x)
    >>> layer = CurveLayer(a, curve="bezier", end_layer=b)
    >>> bool(keras.ops.all(keras.ops.isclose(layer(x, t=1.0), b(x))))
    True
    """

    def __init__(self, layer, curve=None, end_layer=None, **kwargs):
        if isinstance(layer, keras.layers.InputLayer):
            raise ValueError(
                "`layer` must be a Keras layer that computes something; "
                f"received the input layer {layer.name!r}."
            )
        super().__init__(layer, **kwargs)
        self.curve = curves_lib.get(curve)
        self._end_values = None
        self._points = []
        for variable in layer.weights:
            if not _is_float(variable) and variable.trainable:
                raise ValueError(
                    f"`layer` {layer.name!r} ({type(layer).__name__}) cannot "
                    "be made a curve: its trainable weight "
                    f"{variable.path!r} has dtype {variable.dtype}; only "
                    "floating-point weights can be interpolated."
                )
        if end_layer is not None:
            check_same_weights(
                layer,
                end_layer,
                f"`end_layer` must match `layer` {layer.name!r}",
            )
            self._end_values = [
                ops.convert_to_numpy(v) for v in end_layer.weights
            ]
        if layer.built:
            self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        if not self.layer.built:
            self.layer.build(input_shape)
        end = self._end_values
        start = self.layer.weights
        for index, variable in enumerate(start):
            was_trainable = variable.trainable
            variable.trainable = False
            if not _is_float(variable):
                self._points.append(None)
                continue
            a = ops.convert_to_numpy(variable)
            b = a if end is None else end[index]
            points = [variable]
            last = self.curve.num_points - 1
            for i in range(1, last + 1):
                frac = i / last
                points.append(
                    self.add_weight(
                        shape=variable.shape,
                        dtype=variable.dtype,
                        initializer=keras.initializers.Constant(
                            (1.0 - frac) * a + frac * b
                        ),
                        trainable=i < last and was_trainable,
                        name=f"{variable.name}_point{i}",
                    )
                )
            self._points.append(points)
        self._end_values = None
        self.built = True

    def weights_at(self, t) -> list:
        """Returns the wrapped layer's weight values at t.

        Args:
            t: the position on the curve: a float in [0, 1], or a tensor
                (as in `call`).

        Returns:
            A list in the order of ``self.layer.weights``: NumPy arrays
            for a Python or NumPy number ``t`` (computed without a
            TensorFlow op each: materialising a curve point, say), else
            tensors.

        Example:

        >>> a, b = keras.layers.Dense(2), keras.layers.Dense(2)
        >>> _ = a(keras.ops.ones((1, 3))), b(keras.ops.ones((1, 3)))
        >>> layer = CurveLayer(a, curve="bezier", end_layer=b)
        >>> kernel, bias = layer.weights_at(1.0)
        >>> bool((kernel == b.kernel.numpy()).all()), kernel.dtype
        (True, dtype('float32'))
        """
        if isinstance(t, (int, float, np.number)):
            return self._numpy_weights_at(float(t))
        coefficients = self.curve(_scalar_t(t))
        values = []
        for variable, points in zip(self.layer.weights, self._points):
            if points is None:
                values.append(ops.convert_to_tensor(variable))
                continue
            value = coefficients[0] * points[0]
            for i in range(1, len(points)):
                value = value + coefficients[i] * points[i]
            values.append(ops.cast(value, variable.dtype))
        return values

    def _numpy_weights_at(self, t) -> list:
        """`weights_at` for a number: the same float32 sums, in NumPy."""
        coefficients = ops.convert_to_numpy(self.curve(t))
        values = []
        for variable, points in zip(self.layer.weights, self._points):
            if points is None:
                values.append(ops.convert_to_numpy(variable))
                continue
            arrays = [ops.convert_to_numpy(point) for point in points]
            value = coefficients[0] * arrays[0]
            for coefficient, array in zip(coefficients[1:], arrays[1:]):
                value = value + coefficient * array
            values.append(value.astype(arrays[0].dtype))
        return values

    def call(self, inputs, t, training=None, **kwargs):
        by_variable = dict(zip(map(id, self.layer.weights), self.weights_at(t)))
        trainable = [by_variable[id(v)] for v in self.layer.trainable_variables]
        state = [by_variable[id(v)] for v in self.layer.non_trainable_variables]
        if takes_training(self.layer):
            kwargs["training"] = training
        outputs, new_state = self.layer.stateless_call(
            trainable, state, inputs, **kwargs
        )
        for variable, value in zip(
            self.layer.non_trainable_variables, new_state
        ):
            if not _is_float(variable):
                variable.assign(value)
        return outputs

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, t=None, training=None, **kwargs):
        return self.layer.compute_output_spec(inputs, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config["curve"] = keras.saving.serialize_keras_object(self.curve)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["curve"] = keras.saving.deserialize_keras_object(
            config["curve"], custom_objects=custom_objects
        )
        return super().from_config(config, custom_objects=custom_objects)


def check_same_weights(layer, other, problem: str) -> None:
    """Raises a `ValueError` unless ``other`` is a layer of ``layer``'s
    class with weights of the same shapes, so that a curve can join them.

    The one architecture check of keras-bridge: `CurveLayer` runs it on its
    two ends, `keras_bridge.curve_model.check_same_architecture` on every
    pair of layers of two models.

    Args:
        layer: the reference layer.
        other: the layer to compare with it.
        problem: the start of the error message, naming the argument.

    Example:

    >>> dense, wider = keras.layers.Dense(3), keras.layers.Dense(5)
    >>> dense.build((None, 4)); wider.build((None, 4))
    >>> check_same_weights(dense, wider, "`end_layer` must match `layer`")
    Traceback (most recent call last):
    ...
    ValueError: `end_layer` must match `layer`: received Dense ...
    """
    shapes = [tuple(v.shape) for v in layer.weights]
    other_shapes = [tuple(v.shape) for v in other.weights]
    if type(layer) is not type(other) or shapes != other_shapes:
        raise ValueError(
            f"{problem}: received {type(other).__name__} {other.name!r} "
            f"with weight shapes {other_shapes}, expected "
            f"{type(layer).__name__} {layer.name!r} with {shapes}."
        )
