"""Curve families in weight space.

A curve is described only by its coefficient functions: the weights at a
point ``t`` in ``[0, 1]`` are ``sum_i c_i(t) * w_i`` over the control points
``w_0 .. w_{n-1}``, where ``w_0`` and ``w_{n-1}`` are the two endpoint
networks. Every family here has ``sum_i c_i(t) = 1`` for all ``t``,
``c(0) = e_0`` and ``c(1) = e_{n-1}`` exactly, and is differentiable in
``t`` (almost everywhere for `PolyChain`).
"""

import math

import keras
from keras import ops

from keras_bridge.arguments import positive_int


class Curve:
    """Base class of curve families.

    Subclasses set `num_points` and implement `__call__(t)`, returning the
    ``num_points`` coefficients at the scalar ``t``.
    """

    num_points: int

    def __call__(self, t):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Curve":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )


@keras.saving.register_keras_serializable(package="keras_bridge")
class Bezier(Curve):
    """Bezier curve of a given degree.

    ``c_i(t) = C(n, i) t^i (1 - t)^(n - i)`` with ``n = degree``: the
    Bernstein basis. ``degree=2`` is the quadratic curve of Garipov et al.
    (2018), with one trainable control point between the two modes;
    ``degree=1`` is the straight line.

    Args:
        degree: int >= 1, the polynomial degree. The curve has
            ``degree + 1`` control points.

    Example:

    >>> curve = Bezier(degree=2)
    >>> [round(float(c), 4) for c in curve(0.5)]
    [0.25, 0.5, 0.25]
    """

    def __init__(self, degree: int = 2):
        self.degree = positive_int(degree, "degree")
        self.num_points = degree + 1
        self._binomials = [math.comb(degree, i) for i in range(degree + 1)]

    def __call__(self, t):
        t = ops.convert_to_tensor(t, dtype="float32")
        n = self.degree
        return ops.stack(
            [
                self._binomials[i] * t**i * (1.0 - t) ** (n - i)
                for i in range(n + 1)
            ]
        )

    def get_config(self) -> dict:
        return {"degree": self.degree}


@keras.saving.register_keras_serializable(package="keras_bridge")
class PolyChain(Curve):
    """Polygonal chain through equally spaced control points.

    The control point ``i`` sits at ``t = i / (num_bends - 1)``; between two
    neighbours the weights move on the straight line joining them, so
    ``c_i(t) = max(0, 1 - |t (num_bends - 1) - i|)``.

    Args:
        num_bends: int >= 2, the number of control points, endpoints
            included. ``num_bends=3`` is a chain with one bend in the
            middle; ``num_bends=2`` is the straight line.

    Example:

    >>> curve = PolyChain(num_bends=3)
    >>> [round(float(c), 4) for c in curve(0.25)]
    [0.5, 0.5, 0.0]
    """

    def __init__(self, num_bends: int = 3):
        self.num_bends = positive_int(num_bends, "num_bends", minimum=2)
        self.num_points = num_bends

    def __call__(self, t):
        t = ops.convert_to_tensor(t, dtype="float32")
        position = t * (self.num_bends - 1)
        return ops.stack(
            [
                ops.maximum(0.0, 1.0 - ops.abs(position - i))
                for i in range(self.num_bends)
            ]
        )

    def get_config(self) -> dict:
        return {"num_bends": self.num_bends}


def get(identifier) -> Curve:
    """Returns a `Curve` from an instance, a name or a config dict.

    Args:
        identifier: a `Curve`, ``"bezier"`` (quadratic), ``"polychain"``
            (three bends), ``"line"``, or a serialized curve.

    Example:

    >>> get("bezier")
    Bezier(degree=2)
    """
    if isinstance(identifier, Curve):
        return identifier
    if identifier is None or identifier == "bezier":
        return Bezier(2)
    if identifier == "polychain":
        return PolyChain(3)
    if identifier == "line":
        return Bezier(1)
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    raise ValueError(
        "`curve` must be a `keras_bridge.curves.Curve`, 'bezier', "
        f"'polychain' or 'line'; received curve={identifier!r}."
    )
